"""The JobRunner: one copy of one job, step by step, as CircleCI's job page shows it.

Steps, in display order: 0 *Spin up environment* (``Executor.start``, then
the job's host staging directory: inside the environment's shared one when
it has one, see :mod:`circlet.engine.jobstaging`), 1 *Preparing environment
variables* (the built-ins, the redacted secrets, and the per-job files:
``$BASH_ENV``, the agent's task-data directory, the test timings), then the
plan's steps through ``steps.HANDLERS``.

``when`` decides which steps run: after a failed step only ``always`` and
``on_fail`` steps run. ``circleci-agent step halt`` (it creates the halt
file) ends the job successfully after the current step. A background ``run``
step runs in a thread and is stopped when the job ends; like on CircleCI its
failure does not fail the job. The environment is always stopped. Any error
of our own (not the job's) ends the job as ``infrastructure_fail`` with a
one-line reason.

Everything the job prints or records passes through one :class:`Masker`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circlet.engine import events as ev
from circlet.engine.environ import (
    HALT_FILE_VAR,
    RERUN_TESTS_FILE_VAR,
    BuildIdentity,
    builtin_environment,
    describe,
    job_environment,
    step_environment,
)
from circlet.engine.jobfiles import RERUN_TESTS, RERUN_TESTS_NAME, init_argv, task_data_bundle
from circlet.engine.jobstaging import JobStaging
from circlet.engine.masking import Masker, masking_sink, secret_values
from circlet.engine.state import JobState, StepState
from circlet.engine.steps import HANDLERS, StepContext, StepOutcome
from circlet.engine.steps import run as run_step_module
from circlet.executors.base import Environment, ExecResult, Executor, ExecutorError
from circlet.plan import DEFAULT_SHELL, JobSpec, RunStep, Step
from circlet.store.api import BlobStore, RecordsReader

BACKGROUND_JOIN = 15.0  # seconds to wait for a stopped background step (kill escalation ≈ 10 s)

# The built-in step modules; each registers its handlers in HANDLERS on import.
STEP_MODULES = (
    "run",
    "checkout",
    "cache",
    "workspace",
    "artifacts",
    "test_results",
    "ssh",
    "remote_docker",
)


def load_step_handlers() -> dict[str, Any]:
    """Import every built-in step module (once) and return HANDLERS."""
    for name in STEP_MODULES:
        module = f"circlet.engine.steps.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency: not ours to hide
                raise
    return HANDLERS


def new_task_id() -> str:
    """24 hex digits, like the ids in CircleCI's BASH_ENV file names."""
    return uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class JobRequest:
    """Everything a JobRunner needs to know about the job copy it runs."""

    spec: JobSpec
    identity: BuildIdentity
    job_id: str  # event id of this copy (== workflow job id unless parallelism > 1)
    secrets: Mapping[str, str] = field(default_factory=dict)  # project + context variables
    repo: Path | None = None
    commit: str | None = None
    upstream: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class StepRecord:
    index: int
    name: str
    status: str
    reason: str | None = None
    seconds: float = 0.0


@dataclass
class JobResult:
    """What happened, for the scheduler and tests (the events say the same)."""

    status: ev.JobStatus
    reason: str | None = None
    steps: list[StepRecord] = field(default_factory=list)
    seconds: float = 0.0
    job_id: str = ""
    node_index: int = 0

    def step_statuses(self) -> dict[str, str]:
        """Step name → status (a repeated name keeps its last status)."""
        return {s.name: s.status for s in self.steps}


class _Step:
    """One step's run: its state, its masked output stream and its events."""

    def __init__(
        self, runner: JobRunner, index: int, name: str, step_type: str, **started: Any
    ) -> None:
        self.runner = runner
        self.index = index
        self.name = name
        self.step_type = step_type
        self.state = StepState(what=name)
        self.stream = runner.masker.stream()
        self.started_kw = started
        self.t0 = 0.0

    def start(self) -> None:
        self.state.to("running")
        self.t0 = time.monotonic()
        if not self.started_kw.get("background"):
            self.runner.current = self
        self.runner.emit(
            ev.StepStarted(
                self.runner.job_id, self.index, self.name, self.step_type, **self.started_kw
            )
        )

    def write(self, data: str | bytes) -> None:
        text = self.stream.feed(data)
        if text:
            self.runner.emit(ev.Output(self.runner.job_id, self.index, text))

    def finish(self, outcome: StepOutcome) -> None:
        tail = self.stream.flush()
        if tail:
            self.runner.emit(ev.Output(self.runner.job_id, self.index, tail))
        status = outcome.status
        if status == "skipped":  # a handler deciding not to do anything ran, and succeeded
            status = "success"
        self.state.to(status)
        self.runner.emit(
            ev.StepFinished(
                self.runner.job_id, self.index, status, outcome.exit_code, outcome.reason
            )
        )
        self.runner.record(self, status, outcome.reason)

    def skip(self, reason: str) -> None:
        self.state.to("skipped")
        self.runner.emit(
            ev.StepStarted(
                self.runner.job_id, self.index, self.name, self.step_type, **self.started_kw
            )
        )
        self.runner.emit(ev.StepFinished(self.runner.job_id, self.index, "skipped", None, reason))
        self.runner.record(self, "skipped", reason)


class JobRunner:
    """Runs one job copy on an Executor; ``run()`` returns its final status."""

    def __init__(
        self,
        request: JobRequest,
        *,
        executor: Executor,
        blobs: BlobStore,
        sink: ev.EventSink,
        records: RecordsReader | None = None,
        cancel: threading.Event | None = None,
        staging_root: Path | None = None,
    ) -> None:
        self.request = request
        self.spec = request.spec
        self.who = request.identity
        self.job_id = request.job_id
        self.executor = executor
        self.blobs = blobs
        self.records = records
        self.cancel = cancel or threading.Event()
        self.staging_root = staging_root
        self.masker = Masker(secret_values(request.secrets))
        self._lock = threading.Lock()
        self._sink = masking_sink(sink, self.masker)
        self.state = JobState(what=self.who.job_name)
        self.result = JobResult(
            status="queued", job_id=request.job_id, node_index=request.identity.node_index
        )
        self._background: list[tuple[threading.Thread, threading.Event]] = []
        self._env: Environment | None = None
        self._staging: JobStaging | None = None
        self._announced = False  # JobStarted was sent
        self._finished = False  # JobFinished was sent
        self._handlers = load_step_handlers()
        self.current: _Step | None = None  # the foreground step running now

    # ------------------------------------------------------------------ events

    def emit(self, event: ev.Event) -> None:
        """Send one event (masked) to the sink; serialized across this job's threads."""
        with self._lock:
            self._sink(event)

    def record(self, step: _Step, status: str, reason: str | None) -> None:
        seconds = time.monotonic() - step.t0 if step.t0 else 0.0
        name, reason = self.masker.mask(step.name), self.masker.mask_value(reason)
        with self._lock:
            self.result.steps.append(StepRecord(step.index, name, status, reason, seconds))

    # --------------------------------------------------------------------- run

    def run(self) -> ev.JobStatus:
        """Run the job to the end (success, failed, canceled or infrastructure_fail).

        Whatever happens, JobStarted and JobFinished are sent (records never
        keep a job "running") and the environment is stopped."""
        t0 = time.monotonic()
        status: ev.JobStatus
        reason: str | None = None
        try:
            status, reason = self._run_job()
        except Exception as exc:  # even the teardown failed (a broken executor)
            status, reason = "infrastructure_fail", _one_line(exc)
        self.result.seconds = time.monotonic() - t0
        self.finish(status, reason)
        return self.result.status

    def finish(self, status: ev.JobStatus, reason: str | None) -> None:
        """End the job with ``status``: the result, and the events not sent yet.

        Only the first call counts; the scheduler calls it as a last resort
        when :meth:`run` itself raised (a failing event sink)."""
        if self._finished:
            return
        self._finished = True
        reason = self.masker.mask_value(reason)
        if self.state.can(status):
            self.state.to(status)
        self.result.status = status
        self.result.reason = reason
        if not self._announced:
            self._announce()
        self.emit(ev.JobFinished(self.job_id, status, reason))

    def _announce(self) -> None:
        self._announced = True
        self.emit(
            ev.JobStarted(
                self.who.workflow_id,
                self.job_id,
                self.who.job_name,
                self.who.build_num,
                self.who.node_index,
                self.who.node_total,
                self.executor.name,
            )
        )

    def _run_job(self) -> tuple[ev.JobStatus, str | None]:
        status: ev.JobStatus
        reason: str | None = None
        try:
            builtins = builtin_environment(self.who)
            environ = job_environment(builtins, self.request.secrets, self.spec)
            if self._failed_tests() is not None:
                environ[RERUN_TESTS_FILE_VAR] = f"{self.who.task_data}/{RERUN_TESTS_NAME}"
            self.state.to("running")
            self._announce()
            status, reason = self._run_steps(builtins, environ)
        except Exception as exc:  # our bug or a broken store: never a traceback for the user
            status, reason = "infrastructure_fail", _one_line(exc)
            step = self.current
            if step is not None and step.state.status == "running":
                step.write(f"circlet: {reason}\n")
                step.finish(StepOutcome("failed", reason=reason))
        finally:
            self._stop_background()
            if self._staging is not None:
                self._staging.remove()
            if self._env is not None:
                self._cleanup(self._env)
                self._env.stop()
        return status, reason

    def _run_steps(
        self, builtins: dict[str, str], environ: dict[str, str]
    ) -> tuple[ev.JobStatus, str | None]:
        # 0: Spin up environment
        spin = _Step(self, 0, "Spin up environment", "spin_up")
        spin.start()
        if self.cancel.is_set():
            spin.finish(StepOutcome("canceled", reason="Job was canceled"))
            return "canceled", None
        try:
            env = self.executor.start(
                self.spec, job_key=f"{self.who.task_id}-{self.who.node_index}", extra_env=environ
            )
        except ExecutorError as exc:
            spin.write(f"{exc}\n")
            spin.finish(StepOutcome("failed", reason=_one_line(exc)))
            return "infrastructure_fail", _one_line(exc)
        self._env = env
        spin.write("".join(f"{line}\n" for line in env.info.lines))
        try:
            # Only now: the environment may share a staging directory with us.
            staging = self._staging = JobStaging(
                env, root=self.staging_root, halt_inside=self.who.halt_file
            )
        except OSError as exc:
            why = f"cannot create the job's staging directory: {exc}"
            spin.write(f"{why}\n")
            spin.finish(StepOutcome("failed", reason=why))
            return "infrastructure_fail", why
        spin.finish(StepOutcome("success"))

        # 1: Preparing environment variables (and the per-job files)
        prep = _Step(self, 1, "Preparing environment variables", "env")
        prep.start()
        prep.write(describe(builtins, self.request.secrets))
        working_directory = env.expand(self.spec.working_directory)
        timings = self._timings()
        failed = self._failed_tests()
        if failed is not None:
            prep.write(f"Rerunning failed tests only ({len(failed)} names of failed tests)\n")
        bundle, scripts = task_data_bundle(self.spec.steps, self.who.task_data, timings, failed)
        init = env.exec(
            init_argv(working_directory, self.who.bash_env, self.who.task_data, staging.probe),
            env=environ,
            cwd="/",
            on_output=prep.write,
            stdin=bundle,
            cancel=self.cancel,
        )
        if init.exit_code != 0:
            why = "could not create the job's working directory, BASH_ENV and task data"
            prep.finish(StepOutcome("failed", init.exit_code, why))
            return ("canceled", None) if init.cancelled else ("infrastructure_fail", why)
        environ[HALT_FILE_VAR] = staging.settle_halt()
        prep.finish(StepOutcome("success"))

        base = StepContext(
            job=self.spec,
            job_id=self.job_id,
            job_name=self.who.job_name,
            project=self.who.project,
            workflow_id=self.who.workflow_id,
            pipeline_id=self.who.pipeline_id,
            build_num=self.who.build_num,
            node_index=self.who.node_index,
            node_total=self.who.node_total,
            branch=self.who.branch,
            tag=self.who.tag,
            revision=self.who.revision,
            environment=env,
            environ=environ,
            working_directory=working_directory,
            blobs=self.blobs,
            staging=staging.path,
            sink=self.emit,
            write=_no_write,
            shell=_no_shell,
            capture=_no_capture,
            cancel=self.cancel,
            repo=self.request.repo,
            commit=self.request.commit,
            upstream=self.request.upstream,
            secrets=self.request.secrets,
            extra={**self.request.extra, run_step_module.SCRIPTS: scripts},
            task_data=self.who.task_data,
        )
        return self._plan_steps(base, staging)

    def _plan_steps(
        self, base: StepContext, staging: JobStaging
    ) -> tuple[ev.JobStatus, str | None]:
        failed = halted = canceled = False
        first_failure: str | None = None
        steps = self.spec.steps
        for offset, step in enumerate(steps):
            index = offset + 2
            run = self._new_step(index, step)
            if canceled or self.cancel.is_set():
                canceled = True
                run.skip("job canceled")
                continue
            if halted:
                run.skip("job halted by circleci-agent step halt")
                continue
            when = step.when
            if (failed and when == "on_success") or (not failed and when == "on_fail"):
                run.skip("a previous step failed" if failed else "no previous step failed")
                continue
            handler = self._handlers.get(step.type)
            ctx = self._context(base, run)
            run.start()
            if isinstance(step, RunStep) and step.background:
                self._start_background(step, ctx, run)
                continue
            if handler is None:
                outcome = StepOutcome("failed", reason=f"circlet cannot run {step.type!r} steps")
                run.write(outcome.reason + "\n" if outcome.reason else "")
            else:
                try:
                    outcome = handler(step, ctx)
                except ExecutorError as exc:
                    run.write(f"{exc}\n")
                    outcome = StepOutcome("failed", reason=_one_line(exc))
                except Exception as exc:
                    reason = _one_line(exc)
                    run.write(f"circlet: {reason}\n")
                    run.finish(StepOutcome("failed", reason=reason))
                    return "infrastructure_fail", reason
            run.finish(outcome)
            if outcome.status == "canceled" or self.cancel.is_set():
                canceled = True
            elif outcome.status in ("failed", "timedout"):
                if not failed:
                    first_failure = f"{step.name}: {outcome.reason or outcome.status}"
                failed = True
            if isinstance(step, RunStep) and not canceled and staging.halted():
                halted = True
        if canceled:
            return "canceled", None
        if failed:
            return "failed", first_failure
        return "success", None

    def _new_step(self, index: int, step: Step) -> _Step:
        started: dict[str, Any] = {}
        if isinstance(step, RunStep):
            shell = step.shell or self.spec.shell
            if shell is None and self.spec.executor is not None:
                shell = self.spec.executor.shell
            started["command"] = run_step_module.header(shell or DEFAULT_SHELL, step.command)
            started["background"] = step.background
        return _Step(self, index, step.name, step.type, **started)

    def _context(
        self, base: StepContext, run: _Step, cancel: threading.Event | None = None
    ) -> StepContext:
        environ = base.environ
        cancel_event = cancel or self.cancel

        def shell(
            command: str,
            *,
            cwd: str | None = None,
            env: Mapping[str, str] | None = None,
            stdin: bytes | None = None,
            timeout: float | None = None,
            no_output_timeout: float | None = None,
            quiet: bool = False,
        ) -> ExecResult:
            return _exec_shell(
                base.environment,
                command,
                environ=step_environment(environ, env or {}),
                cwd=cwd or base.working_directory,
                on_output=_discard if quiet else run.write,
                stdin=stdin,
                timeout=timeout,
                no_output_timeout=no_output_timeout,
                cancel=cancel_event,
            )

        def capture(
            command: str,
            *,
            cwd: str | None = None,
            env: Mapping[str, str] | None = None,
            stdin: bytes | None = None,
            timeout: float | None = None,
        ) -> tuple[ExecResult, str]:
            chunks: list[bytes] = []
            result = _exec_shell(
                base.environment,
                command,
                environ=step_environment(environ, env or {}),
                cwd=cwd or base.working_directory,
                on_output=chunks.append,
                stdin=stdin,
                timeout=timeout,
                no_output_timeout=None,
                cancel=cancel_event,
            )
            text = b"".join(chunks).decode(errors="replace")
            return result, self.masker.mask(text)

        return dataclasses.replace(
            base,
            write=run.write,
            shell=shell,
            capture=capture,
            cancel=cancel_event,
            index=run.index,
        )

    # ------------------------------------------------------------- background

    def _start_background(self, step: RunStep, base: StepContext, run: _Step) -> None:
        stop = threading.Event()
        ctx = self._context(base, run, cancel=stop)

        def work() -> None:
            try:
                outcome = run_step_module.run_step(step, ctx)
            except Exception as exc:
                outcome = StepOutcome("failed", reason=_one_line(exc))
            if outcome.status == "canceled" and stop.is_set():
                # Stopped by us at the end of the job: CircleCI counts that as success.
                outcome = StepOutcome("success", reason="stopped at the end of the job")
            run.finish(outcome)

        thread = threading.Thread(target=work, name=f"bg-{self.job_id}-{run.index}", daemon=True)
        self._background.append((thread, stop))
        thread.start()

    def _stop_background(self) -> None:
        for _, stop in self._background:
            stop.set()
        for thread, _ in self._background:
            thread.join(BACKGROUND_JOIN)

    def _failed_tests(self) -> list[str] | None:
        """The failed tests' files/classnames if this is a "rerun failed tests" copy."""
        names = self.request.extra.get(RERUN_TESTS)
        return None if names is None else [str(n) for n in names]

    def _timings(self) -> dict[str, dict[str, float]]:
        """Earlier runs' test timings in the agent's format (``tests split --split-by=timings``)."""
        if self.records is None:
            return {}
        table = getattr(self.records, "test_timing_table", None)
        if table is not None:
            return dict(table(self.who.project, self.who.job_name))
        return {"filename": dict(self.records.test_timings(self.who.project, self.who.job_name))}

    def _cleanup(self, env: Environment) -> None:
        """Remove the per-job files outside the job's directory (host /tmp is shared)."""
        if self.executor.name != "host":
            return  # containers take their /tmp with them
        with contextlib.suppress(ExecutorError):
            env.exec(
                ["rm", "-rf", self.who.task_data, self.who.bash_env],
                env={},
                cwd="/",
                on_output=_discard,
                timeout=30,
            )


def _exec_shell(
    environment: Environment,
    command: str,
    *,
    environ: Mapping[str, str],
    cwd: str,
    on_output: Any,
    stdin: bytes | None,
    timeout: float | None,
    no_output_timeout: float | None,
    cancel: threading.Event,
) -> ExecResult:
    return environment.exec(
        ["/bin/sh", "-c", command],
        env=environ,
        cwd=cwd,
        on_output=on_output,
        stdin=stdin,
        timeout=timeout,
        no_output_timeout=no_output_timeout,
        cancel=cancel,
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, ExecutorError) and first:
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _discard(_: bytes) -> None:
    return None


def _no_write(_: str | bytes) -> None:
    raise RuntimeError("StepContext.write used outside a step")


def _no_shell(*_: Any, **__: Any) -> ExecResult:
    raise RuntimeError("StepContext.shell used outside a step")


def _no_capture(*_: Any, **__: Any) -> tuple[ExecResult, str]:
    raise RuntimeError("StepContext.capture used outside a step")
