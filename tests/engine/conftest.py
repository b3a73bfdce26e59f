"""Fixtures for engine tests: a real host executor, the real agent scripts, a sink
that remembers every event, and a way to run one job through a real JobRunner.

Shared with the data-step tests under tests/engine/steps/ (owned by the engine core).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from circlet.engine import events as ev
from circlet.engine.environ import BuildIdentity
from circlet.engine.runner import JobRequest, JobRunner, new_task_id
from circlet.executors.host import HostExecutor
from circlet.plan import DockerImage, ExecutorSpec, JobSpec, Step
from circlet.testing.agent import install_agent

PY_IMAGE = ExecutorSpec(kind="docker", images=(DockerImage("cimg/python:3.11"),))


class Collector:
    """An EventSink that keeps every event, with questions tests ask."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def step_index(self, name: str, job_id: str | None = None) -> int:
        for e in self.of(ev.StepStarted):
            if e.name == name and (job_id is None or e.job_id == job_id):
                return int(e.index)
        raise KeyError(name)

    def output(self, name: str | None = None, job_id: str | None = None) -> str:
        """The output of step ``name`` (all steps when None)."""
        index = self.step_index(name, job_id) if name is not None else None
        return "".join(
            e.text
            for e in self.of(ev.Output)
            if (index is None or e.index == index) and (job_id is None or e.job_id == job_id)
        )

    def steps(self, job_id: str | None = None) -> dict[str, str]:
        """Step name → final status."""
        names = {
            (e.job_id, e.index): e.name
            for e in self.of(ev.StepStarted)
            if job_id is None or e.job_id == job_id
        }
        return {
            names[(e.job_id, e.index)]: e.status
            for e in self.of(ev.StepFinished)
            if (e.job_id, e.index) in names
        }

    def job_status(self, job_id: str) -> str:
        return str(next(e.status for e in self.of(ev.JobFinished) if e.job_id == job_id))


@pytest.fixture(scope="session")
def agent_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agent") / "bin"
    install_agent(path)
    return path


@pytest.fixture
def host_executor(tmp_path: Path, agent_bin: Path) -> HostExecutor:
    return HostExecutor(tmp_path / "work", agent_bin=agent_bin, ca_bundle="")


@pytest.fixture
def blobs(tmp_path: Path) -> Any:
    try:
        from circlet.store.blobs import LocalBlobStore  # type: ignore[attr-defined]
    except ImportError:  # the blob store lands in parallel; run steps never touch it
        return None
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def collector() -> Collector:
    return Collector()


RunJob = Callable[..., tuple[JobRunner, Collector]]


@pytest.fixture
def run_job(host_executor: HostExecutor, blobs: Any, tmp_path: Path) -> RunJob:
    """Run ``steps`` (or a whole JobSpec) as one job copy on the host executor."""

    def run(
        steps: tuple[Step, ...] | JobSpec,
        *,
        secrets: Mapping[str, str] | None = None,
        node_index: int = 0,
        node_total: int = 1,
        cancel: threading.Event | None = None,
        executor: Any = None,
        branch: str | None = "main",
        records: Any = None,
        staging_root: Path | None = None,
    ) -> tuple[JobRunner, Collector]:
        spec = steps if isinstance(steps, JobSpec) else JobSpec("build", PY_IMAGE, steps)
        sink = Collector()
        who = BuildIdentity(
            job_name=spec.name,
            build_num=7,
            project="local/demo",
            pipeline_id="p-1",
            workflow_id="w-1",
            workflow_job_id="j-1",
            working_directory=spec.working_directory,
            task_id=new_task_id(),
            node_index=node_index,
            node_total=node_total,
            branch=branch,
            revision="abc123",
        )
        runner = JobRunner(
            JobRequest(spec, who, job_id=f"job-{node_index}", secrets=dict(secrets or {})),
            executor=executor or host_executor,
            blobs=blobs,
            sink=sink,
            records=records,
            cancel=cancel,
            staging_root=staging_root or tmp_path,
        )
        runner.run()
        return runner, sink

    return run
