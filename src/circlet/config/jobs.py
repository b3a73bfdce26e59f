"""Jobs: a job definition plus its arguments → a fully expanded :class:`plan.JobSpec`."""

from __future__ import annotations

from typing import Any, Literal

from circlet import plan
from circlet.config.context import Context, environment, text, without
from circlet.config.executors import EXECUTOR_TYPES, ExecutorCompiler
from circlet.config.load import YList, YMap
from circlet.config.namespace import Definition, Namespace
from circlet.config.steps import StepCompiler
from circlet.plan import Location

JOB_KEYS = frozenset(
    {
        "docker", "machine", "macos", "executor", "shell", "parameters", "steps",
        "working_directory", "parallelism", "environment", "resource_class", "description",
        # tolerated and ignored (see docs/config-compat.md)
        "circleci_ip_ranges", "branches", "type", "retention",
    }
)  # fmt: skip
JobType = Literal["build", "no-op"]
JOB_TYPES: tuple[JobType, ...] = ("build", "no-op")


class JobCompiler:
    """Compiles job invocations; identical invocations are compiled once."""

    def __init__(self, ctx: Context, config_ns: Namespace) -> None:
        self.ctx = ctx
        self.config_ns = config_ns
        self.steps = StepCompiler(ctx)
        self.executors = ExecutorCompiler(ctx)
        self._cache: dict[tuple[int, str], tuple[plan.JobSpec, JobType] | None] = {}

    def compile(
        self,
        defn: Definition,
        args: YMap,
        *,
        pre_steps: Any = None,
        post_steps: Any = None,
        where: Location | None,
        path: str,
    ) -> tuple[plan.JobSpec, JobType] | None:
        """(JobSpec, job type) for ``defn`` called with ``args``.

        ``args`` and ``pre_steps``/``post_steps`` come from a workflow and are
        already substituted there (pipeline values, matrix).
        """
        key = (id(defn), repr((args, pre_steps, post_steps)))
        if key in self._cache:
            return self._cache[key]
        result = self._compile(defn, args, pre_steps, post_steps, where=where, path=path)
        self._cache[key] = result
        return result

    def _compile(
        self,
        defn: Definition,
        args: YMap,
        pre_steps: Any,
        post_steps: Any,
        *,
        where: Location | None,
        path: str,
    ) -> tuple[plan.JobSpec, JobType] | None:
        ctx = self.ctx
        raw = defn.body
        ctx.check_keys(raw, JOB_KEYS, defn.label, defn.path)
        if ctx.v21:
            b = self.steps.bindings_for(defn, args, where, path, caller=self.config_ns)
            body = ctx.subst.value(
                without(raw, "parameters", "description"), b, defn.location, defn.path
            )
        else:
            b = ctx.base
            body = raw
            for name in args:
                ctx.error(
                    f"unexpected argument {name!r} for {defn.label} "
                    "(job parameters need version 2.1)",
                    args.key_loc(name),
                    f"{path}.{name}",
                )
        job_type = body.get("type", "build")
        if job_type not in JOB_TYPES:
            ctx.error(
                f"job type must be one of {', '.join(JOB_TYPES)} (approval is set in the workflow)",
                body.key_loc("type"),
                f"{defn.path}.type",
            )
            job_type = "build"
        if job_type == "no-op":
            return plan.JobSpec(name=defn.qualified, executor=None, location=defn.location), "no-op"
        executor = self._executor(defn, body)
        steps: list[plan.Step] = []
        if pre_steps is not None:
            steps.extend(
                self.steps.steps(pre_steps, self.config_ns, ctx.base, f"{path}.pre-steps", where)
            )
        if "steps" not in body:
            ctx.error(f"{defn.label} has no steps", defn.location, defn.path)
        else:
            steps.extend(
                self.steps.steps(
                    body["steps"], defn.namespace, b, f"{defn.path}.steps", body.key_loc("steps")
                )
            )
        if post_steps is not None:
            steps.extend(
                self.steps.steps(post_steps, self.config_ns, ctx.base, f"{path}.post-steps", where)
            )
        if executor is None:
            return None
        workdir = text(
            ctx, body.get("working_directory"), "working_directory",
            body.key_loc("working_directory"), f"{defn.path}.working_directory", allow_none=True,
        )  # fmt: skip
        shell = text(
            ctx, body.get("shell"), "shell", body.key_loc("shell"), defn.path, allow_none=True
        )
        resource_class = text(
            ctx, body.get("resource_class"), "resource_class", body.key_loc("resource_class"),
            defn.path, allow_none=True,
        )  # fmt: skip
        spec = plan.JobSpec(
            name=defn.qualified,
            executor=executor,
            steps=tuple(steps),
            environment=environment(
                ctx,
                body.get("environment"),
                body.key_loc("environment"),
                f"{defn.path}.environment",
            ),
            parallelism=self._parallelism(body, defn.path),
            working_directory=workdir
            or executor.working_directory
            or plan.DEFAULT_WORKING_DIRECTORY,
            shell=shell or executor.shell,
            resource_class=resource_class or executor.resource_class,
            location=defn.location,
        )
        return spec, "build"

    def _executor(self, defn: Definition, body: YMap) -> plan.ExecutorSpec | None:
        ctx = self.ctx
        inline = [k for k in EXECUTOR_TYPES if k in body]
        if "executor" in body:
            if inline:
                ctx.error(
                    f"{defn.label} has both 'executor' and '{inline[0]}'",
                    body.key_loc(inline[0]),
                    defn.path,
                )
            if not ctx.v21:
                ctx.error("executor: needs version 2.1", body.key_loc("executor"), defn.path)
                return None
            return self.executors.named(
                body["executor"], defn.namespace, body.key_loc("executor"), f"{defn.path}.executor"
            )
        spec = self.executors.from_body(body, defn.path, defn.label, in_job=True)
        if spec is None:
            ctx.error(
                f"{defn.label} has no executor (docker, machine, macos or executor)",
                defn.location,
                defn.path,
            )
        return spec

    def _parallelism(self, body: YMap, path: str) -> int:
        value = body.get("parallelism", 1)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            self.ctx.error(
                f"parallelism must be a whole number of at least 1, got {value!r}",
                body.key_loc("parallelism"),
                f"{path}.parallelism",
            )
            return 1
        return value


def is_steps_list(value: Any) -> bool:
    """True for a list (pre-steps/post-steps values)."""
    return isinstance(value, YList)
