"""Executors: ``docker``/``machine``/``macos`` blocks and named ``executors``."""

from __future__ import annotations

from typing import Any

from circlet import plan
from circlet.config.context import Context, environment, string_list, text, without
from circlet.config.load import YList, YMap
from circlet.config.namespace import MissingOrb, Namespace, missing_orb_message
from circlet.config.params import bind
from circlet.plan import Location

EXECUTOR_TYPES = ("docker", "machine", "macos")
_EXECUTOR_DEF_KEYS = frozenset(
    {"docker", "machine", "macos", "windows", "resource_class", "shell", "working_directory",
     "environment", "parameters", "description"}
)  # fmt: skip
_IMAGE_KEYS = frozenset(
    {"image", "name", "entrypoint", "command", "user", "environment", "auth", "aws_auth"}
)
_MACHINE_KEYS = frozenset({"image", "docker_layer_caching", "resource_class", "shell"})
_MACOS_KEYS = frozenset({"xcode"})


class ExecutorCompiler:
    """Builds :class:`plan.ExecutorSpec` values."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def from_body(
        self, body: YMap, path: str, what: str, *, in_job: bool = False
    ) -> plan.ExecutorSpec | None:
        """The executor written directly in a job or an executor definition.

        In a job (``in_job``), ``environment``, ``shell`` and
        ``working_directory`` are the job's, not the executor's.
        """
        ctx = self.ctx
        present = [k for k in (*EXECUTOR_TYPES, "windows") if k in body]
        if len(present) > 1:
            ctx.error(
                f"{what} has more than one executor type: {', '.join(present)}",
                body.key_loc(present[1]),
                path,
            )
        if not present:
            return None
        kind = present[0]
        value = body[kind]
        where = body.key_loc(kind)
        kpath = f"{path}.{kind}"
        resource_class = text(
            ctx, body.get("resource_class"), "resource_class", body.key_loc("resource_class"),
            f"{path}.resource_class", allow_none=True,
        )  # fmt: skip
        shell = workdir = None
        env: dict[str, str] = {}
        if not in_job:
            shell = text(
                ctx,
                body.get("shell"),
                "shell",
                body.key_loc("shell"),
                f"{path}.shell",
                allow_none=True,
            )
            workdir = text(
                ctx, body.get("working_directory"), "working_directory",
                body.key_loc("working_directory"), f"{path}.working_directory", allow_none=True,
            )  # fmt: skip
            env = environment(
                ctx, body.get("environment"), body.key_loc("environment"), f"{path}.environment"
            )
        if kind == "docker":
            images = self.images(value, where, kpath)
            return plan.ExecutorSpec(
                kind="docker", images=images, resource_class=resource_class, shell=shell,
                working_directory=workdir, environment=env,
            )  # fmt: skip
        machine_image: str | None = None
        spec_kind: str = "macos" if kind == "macos" else "machine"
        if kind == "macos":
            if not isinstance(value, YMap) or "xcode" not in value:
                ctx.error("macos takes a mapping with 'xcode'", where, kpath)
            else:
                ctx.check_keys(value, _MACOS_KEYS, "macos", kpath)
                machine_image = text(ctx, value["xcode"], "xcode", value.key_loc("xcode"), kpath)
        elif isinstance(value, YMap):
            ctx.check_keys(value, _MACHINE_KEYS, kind, kpath)
            machine_image = text(
                ctx,
                value.get("image"),
                "image",
                value.key_loc("image"),
                f"{kpath}.image",
                allow_none=True,
            )
            if resource_class is None and "resource_class" in value:
                resource_class = text(ctx, value["resource_class"], "resource_class", where, kpath)
            if shell is None and "shell" in value:
                shell = text(ctx, value["shell"], "shell", where, kpath)
        elif value is not True and not (kind == "windows" and value is None):
            ctx.error(f"{kind} takes true or a mapping with 'image'", where, kpath)
        if kind == "windows" or _is_windows(machine_image, resource_class):
            spec_kind = "windows"
        return plan.ExecutorSpec(
            kind=spec_kind,  # type: ignore[arg-type]
            machine_image=machine_image,
            resource_class=resource_class,
            shell=shell,
            working_directory=workdir,
            environment=env,
        )

    def images(self, value: Any, where: Location | None, path: str) -> tuple[plan.DockerImage, ...]:
        """The containers of a ``docker`` executor (the first is the primary)."""
        ctx = self.ctx
        if not isinstance(value, YList) or not value:
            ctx.error("docker takes a non-empty list of images", where, path)
            return ()
        images = []
        for i, item in enumerate(value):
            loc, ipath = value.item_loc(i), f"{path}[{i}]"
            if not isinstance(item, YMap) or "image" not in item:
                ctx.error("each docker entry needs an 'image'", loc, ipath)
                continue
            ctx.check_keys(item, _IMAGE_KEYS, "docker image", ipath)
            image = text(ctx, item["image"], "image", item.key_loc("image"), f"{ipath}.image")
            if image is None:
                continue

            def opt_list(key: str, item: YMap = item, ipath: str = ipath) -> tuple[str, ...] | None:
                if item.get(key) is None:
                    return None
                return string_list(ctx, item[key], key, item.key_loc(key), f"{ipath}.{key}")

            images.append(
                plan.DockerImage(
                    image=image,
                    name=text(
                        ctx, item.get("name"), "name", item.key_loc("name"), ipath, allow_none=True
                    ),
                    entrypoint=opt_list("entrypoint"),
                    command=opt_list("command"),
                    user=text(
                        ctx, item.get("user"), "user", item.key_loc("user"), ipath, allow_none=True
                    ),
                    environment=environment(
                        ctx,
                        item.get("environment"),
                        item.key_loc("environment"),
                        f"{ipath}.environment",
                    ),
                )
            )
        return tuple(images)

    def named(
        self, ref: Any, ns: Namespace, where: Location | None, path: str
    ) -> plan.ExecutorSpec | None:
        """``executor: name`` or ``executor: {name: …, param: …}`` (or an inline body)."""
        ctx = self.ctx
        ns = getattr(ref, "namespace", ns)  # an executor given as an argument
        if isinstance(ref, str):
            name, args = ref, YMap()
        elif isinstance(ref, YMap) and "name" in ref:
            name = ref["name"]
            args = ref.derive()
            for k, v in ref.items():
                if k != "name":
                    args[k] = v
            if not isinstance(name, str):
                ctx.error("executor name must be a string", ref.key_loc("name"), path)
                return None
        elif isinstance(ref, YMap) and any(k in ref for k in (*EXECUTOR_TYPES, "windows")):
            # An executor parameter may be given a whole executor body.
            ctx.check_keys(ref, _EXECUTOR_DEF_KEYS - {"parameters"}, "executor", path)
            return self.from_body(ref, path, "executor")
        else:
            ctx.error("executor must be a name or a mapping with 'name'", where, path)
            return None
        found = ns.find("executors", name)
        if isinstance(found, MissingOrb):
            ctx.error(missing_orb_message(found), where, path)
            return None
        if found is None:
            ctx.error(f"unknown executor {name!r}", where, path)
            return None
        body = found.body
        ctx.check_keys(body, _EXECUTOR_DEF_KEYS, found.label, found.path)
        specs = found.params(ctx.problems)
        bound = bind(
            specs, args, owner=found.label, problems=ctx.problems, where=where, path=path,
            arg_locs=args if args.line else None,
        )  # fmt: skip
        for pname, value in bound.items():
            if pname not in args:
                bound[pname] = ctx.subst.value(value, ctx.base, specs[pname].location, found.path)
        b = ctx.base.with_params(bound, found.label)
        body = ctx.subst.value(
            without(body, "parameters", "description"), b, found.location, found.path
        )
        spec = self.from_body(body, found.path, found.label)
        if spec is None:
            ctx.error(f"{found.label} has no docker, machine or macos", found.location, found.path)
        return spec


def _is_windows(image: str | None, resource_class: str | None) -> bool:
    return bool(
        (image and image.startswith("windows-"))
        or (resource_class and resource_class.startswith("windows."))
    )
