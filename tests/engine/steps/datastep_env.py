"""A real job environment (host or docker) and a real blob store for data-step tests.

``start_job(...)`` gives a :class:`Job`: a started environment, a StepContext
built as the JobRunner builds it, and what the steps wrote and emitted.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from circlet.engine import events as ev
from circlet.engine.jobstaging import JobStaging
from circlet.engine.steps import HANDLERS, StepContext, StepOutcome
from circlet.executors.base import Environment, ExecResult, Executor
from circlet.executors.host import HostExecutor
from circlet.plan import DockerImage, ExecutorSpec, JobSpec, Step
from circlet.store.api import BlobStore

PRIMARY = "cimg/python:3.11"
LOCAL_PRIMARY = "circlet/cimg-python:3.11"

# Importing registers the handlers under test.
STEP_MODULES = (
    "checkout",
    "cache",
    "workspace",
    "artifacts",
    "test_results",
    "ssh",
    "remote_docker",
)


def load_handlers() -> None:
    import importlib

    for name in STEP_MODULES:
        importlib.import_module(f"circlet.engine.steps.{name}")


def make_store(root: Path) -> BlobStore:
    """The real blob store, in ``root``."""
    from circlet.store.blobs import LocalBlobStore

    return LocalBlobStore(root)


@dataclass
class Job:
    """One started job copy: run steps, inspect output and events."""

    env: Environment
    ctx: StepContext
    events: list[ev.Event] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    def run(self, step: Step, index: int = 2) -> tuple[StepOutcome, str]:
        """Run ``step`` through its registered handler; (outcome, what it printed)."""
        start = len(self.output)
        ctx = replace(self.ctx, index=index)
        outcome = HANDLERS[step.type](step, ctx)
        return outcome, "".join(self.output[start:])

    def sh(self, command: str, *, check: bool = True, cwd: str | None = "") -> str:
        """Run a shell command in the job (cwd: the working directory); its output."""
        chunks: list[bytes] = []
        result = self.env.exec(
            ["/bin/sh", "-c", command],
            env=self.ctx.environ,
            cwd=self.ctx.working_directory if cwd == "" else cwd,
            on_output=chunks.append,
        )
        text = b"".join(chunks).decode(errors="replace")
        if check:
            assert result.exit_code == 0, f"{command!r} → {result.exit_code}: {text}"
        return text

    def path(self, inside: str) -> str:
        return self.env.expand(inside)


def _context(
    job: JobSpec, env: Environment, blobs: BlobStore, staging: Path, out: Job, **overrides: Any
) -> StepContext:
    environ: dict[str, str] = dict(overrides.pop("environ", {}))

    def write(text: str | bytes) -> None:
        out.output.append(text.decode(errors="replace") if isinstance(text, bytes) else text)

    def shell(command: str, **kwargs: Any) -> ExecResult:
        return env.exec(
            ["/bin/sh", "-c", command],
            env=environ,
            cwd=kwargs.get("cwd") or working_directory,
            on_output=write,
        )

    def capture(command: str, **kwargs: Any) -> tuple[ExecResult, str]:
        chunks: list[bytes] = []
        result = env.exec(
            ["/bin/sh", "-c", command],
            env=environ,
            cwd=kwargs.get("cwd") or working_directory,
            on_output=chunks.append,
        )
        return result, b"".join(chunks).decode(errors="replace")

    working_directory = env.expand(job.working_directory)
    values: dict[str, Any] = {
        "job": job,
        "job_id": uuid.uuid4().hex,
        "job_name": job.name,
        "project": "local/datasteps",
        "workflow_id": "wf-1",
        "pipeline_id": "p-1",
        "build_num": 75,
        "node_index": 0,
        "node_total": 1,
        "branch": "master",
        "tag": None,
        "revision": "b5565da",
        "environment": env,
        "environ": environ,
        "working_directory": working_directory,
        "blobs": blobs,
        "staging": staging,
        "sink": out.events.append,
        "write": write,
        "shell": shell,
        "capture": capture,
        "cancel": threading.Event(),
    }
    values.update(overrides)
    return StepContext(**values)


StartJob = Callable[..., Job]


def job_factory(tmp_path: Path, blobs: BlobStore, executor: Executor) -> Iterator[StartJob]:
    """Yields ``start_job(steps=(), **context overrides)``; stops every environment after."""
    started: list[Environment] = []
    load_handlers()

    def start_job(
        steps: tuple[Step, ...] = (),
        name: str = "build",
        working_directory: str = "~/project",
        **overrides: Any,
    ) -> Job:
        spec = JobSpec(
            name=name,
            executor=ExecutorSpec(kind="docker", images=(DockerImage(PRIMARY),)),
            steps=steps,
            working_directory=working_directory,
        )
        key = f"circlet-test-ds-{uuid.uuid4().hex[:10]}"
        env = executor.start(spec, job_key=key, extra_env={})
        started.append(env)
        # As the JobRunner does: inside the environment's shared staging directory
        # when it has one (copies are then local `cp -a`), else under the root.
        staging = JobStaging(env, root=tmp_path / "staging", halt_inside="/tmp/halt")
        holder = Job(env=env, ctx=None)  # type: ignore[arg-type]
        overrides.setdefault("job_name", name)
        holder.ctx = _context(spec, env, blobs, staging.path, holder, **overrides)
        holder.sh(f"mkdir -p {holder.ctx.working_directory}", cwd=None)
        return holder

    yield start_job
    for env in started:
        env.stop()


def host_executor(tmp_path: Path) -> HostExecutor:
    return HostExecutor(tmp_path / "work", ca_bundle="")


def docker_executor() -> Executor:
    from circlet.executors.docker import DockerExecutor

    return DockerExecutor(image_map={PRIMARY: LOCAL_PRIMARY}, ca_bundle="")


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Create ``files`` (relative path → text) under ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
