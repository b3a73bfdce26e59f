"""Workflows through the real scheduler, JobRunner and host executor: the DAG,
statuses, approval, filters, parallelism, cancel, build numbers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import NoSharedStaging, StopFails

from circlet.engine import events as ev
from circlet.engine.results import PipelineResult
from circlet.engine.run_options import RunOptions
from circlet.engine.scheduler import run_pipeline
from circlet.engine.workflow_dag import select_workflows
from circlet.executors.host import HostExecutor
from circlet.plan import (
    BranchTagFilter,
    DockerImage,
    ExecutorSpec,
    Filters,
    JobNode,
    JobSpec,
    Pipeline,
    Requirement,
    RunStep,
    ScheduleTrigger,
    Workflow,
)
from circlet.store.records import RecordStore

IMAGE = ExecutorSpec(kind="docker", images=(DockerImage("cimg/python:3.11"),))


def job(name: str, command: str = "true", *, parallelism: int = 1) -> JobSpec:
    return JobSpec(
        name, IMAGE, (RunStep(name=f"{name} step", command=command),), parallelism=parallelism
    )


def node(name: str, command: str = "true", *requires: str | Requirement, **kw: Any) -> JobNode:
    reqs = tuple(r if isinstance(r, Requirement) else Requirement(r) for r in requires)
    parallelism = kw.pop("parallelism", 1)
    return JobNode(name=name, job=job(name, command, parallelism=parallelism), requires=reqs, **kw)


def pipeline(*nodes: JobNode, name: str = "main") -> Pipeline:
    return Pipeline(version="2.1", workflows=(Workflow(name, tuple(nodes)),))


class Sink:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        with self.lock:
            self.events.append(event)

    def index(self, kind: type[Any], name: str) -> int:
        """Position of the first event of ``kind`` for job ``name``."""
        ids = {e.job_id: e.name for e in self.events if isinstance(e, ev.JobStarted)}
        for i, e in enumerate(self.events):
            if isinstance(e, kind) and (getattr(e, "name", None) or ids.get(e.job_id)) == name:
                return i
        raise KeyError(name)


@pytest.fixture
def records(tmp_path: Path) -> Iterator[RecordStore]:
    store = RecordStore(f"sqlite:///{tmp_path / 'records.db'}")
    yield store
    store.close()


@pytest.fixture
def go(host_executor: HostExecutor, blobs: Any, records: RecordStore, tmp_path: Path) -> Any:
    def run(p: Pipeline, *, sink: Sink | None = None, **kw: Any) -> PipelineResult:
        options = kw.pop("options", None) or RunOptions(
            project="local/demo",
            branch=kw.pop("branch", "main"),
            tag=kw.pop("tag", None),
            staging_root=tmp_path,
        )
        out = sink if sink is not None else Sink()
        return run_pipeline(
            p,
            options=options,
            executor_factory=kw.pop("factory", lambda _spec: host_executor),
            blobs=blobs,
            sink=fan(out, records.sink),
            records=records,
            max_parallel=kw.pop("max_parallel", 2),
            **kw,
        )

    return run


def fan(*sinks: Any) -> Any:
    return ev.fan_out(*sinks)


def statuses(result: PipelineResult) -> dict[str, str]:
    return {j.name: j.status for j in result.jobs()}


def test_chain_and_fan_out(go: Any) -> None:
    sink = Sink()
    result = go(
        pipeline(
            node("a"),
            node("b", "true", "a"),
            node("c", "true", "a"),
            node("d", "true", "b", "c"),
        ),
        sink=sink,
    )
    assert statuses(result) == dict.fromkeys("abcd", "success")
    assert result.status == "success"
    assert result.ok
    for before, after in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")):
        assert sink.index(ev.JobFinished, before) < sink.index(ev.JobStarted, after)
    blocked = [
        e.name for e in sink.events if isinstance(e, ev.JobStatusChanged) and e.status == "blocked"
    ]
    assert sorted(blocked) == ["b", "c", "d"]
    kinds = [e.kind for e in sink.events]
    assert kinds[0] == "pipeline_started"
    assert kinds[1] == "workflow_started"
    assert kinds[-2:] == ["workflow_finished", "pipeline_finished"]


def test_failure_blocks_dependents(go: Any) -> None:
    result = go(
        pipeline(node("a", "exit 1"), node("b", "true", "a"), node("c", "true", "b"), node("x"))
    )
    assert statuses(result) == {"a": "failed", "b": "not_run", "c": "not_run", "x": "success"}
    assert result.status == "failed"
    assert not result.ok
    assert result.job("b").reason == "requires a (success), which is failed"
    assert not result.job("b").ran


def test_requires_with_statuses(go: Any) -> None:
    result = go(
        pipeline(
            node("a", "exit 1"),
            node("on-failure", "true", Requirement("a", ("failed",))),
            node("either", "true", Requirement("a", ("success", "failed"))),
            node("on-success", "true", "a"),
        )
    )
    assert statuses(result) == {
        "a": "failed",
        "on-failure": "success",
        "either": "success",
        "on-success": "not_run",
    }


def test_approval_holds_unless_approved(go: Any) -> None:
    p = pipeline(
        node("build"),
        JobNode("hold", JobSpec("hold", None), (Requirement("build"),), type="approval"),
        node("deploy", "true", "hold"),
    )
    held = go(p)
    assert statuses(held) == {"build": "success", "hold": "on_hold", "deploy": "not_run"}
    assert held.status == "on_hold"
    assert held.ok  # nothing that ran failed
    approved = go(p, approve=True)
    assert statuses(approved) == {"build": "success", "hold": "success", "deploy": "success"}


def test_filters_and_tags(go: Any) -> None:
    only_main = Filters(branches=BranchTagFilter(only=("main",)))
    tags = Filters(
        tags=BranchTagFilter(only=("/v.*/",)), branches=BranchTagFilter(ignore=("/.*/",))
    )
    p = pipeline(
        node("test"),
        node("deploy", "true", "test", filters=only_main),
        node("release", "true", filters=tags),
    )
    on_main = go(p, branch="main")
    assert statuses(on_main) == {"test": "success", "deploy": "success"}
    on_feature = go(p, branch="feature")
    assert statuses(on_feature) == {"test": "success"}
    on_tag = go(p, branch=None, tag="v1.0")
    assert statuses(on_tag) == {"release": "success"}


def test_dependent_of_filtered_job_does_not_run(go: Any) -> None:
    only_main = Filters(branches=BranchTagFilter(only=("main",)))
    p = pipeline(node("a", filters=only_main), node("b", "true", "a"))
    result = go(p, branch="dev")
    assert statuses(result) == {"b": "not_run"}
    assert "does not run for this pipeline" in (result.job("b").reason or "")


def test_single_job_ignores_upstream_and_filters(go: Any) -> None:
    p = pipeline(
        node("a", "exit 1"), node("b", "echo b", "a", filters=Filters(tags=BranchTagFilter()))
    )
    result = go(p, job="b")
    assert statuses(result) == {"b": "success"}


def test_disabled_workflow_does_not_run() -> None:
    p = Pipeline(
        "2.1",
        (Workflow("off", (node("a"),), enabled=False), Workflow("on", (node("b"),))),
    )
    chosen = select_workflows(p, branch="main", tag=None)
    assert [wf.name for wf, _ in chosen] == ["on"]


def test_parallelism(go: Any) -> None:
    sink = Sink()
    result = go(
        pipeline(
            node("split", "echo node $CIRCLE_NODE_INDEX of $CIRCLE_NODE_TOTAL", parallelism=3)
        ),
        sink=sink,
        max_parallel=3,
    )
    started = [e for e in sink.events if isinstance(e, ev.JobStarted)]
    assert sorted(e.node_index for e in started) == [0, 1, 2]
    assert {e.build_num for e in started} == {result.job("split").build_num}
    assert len({e.job_id for e in started}) == 3
    outputs = "".join(e.text for e in sink.events if isinstance(e, ev.Output))
    for i in range(3):
        assert f"node {i} of 3" in outputs
    assert result.job("split").status == "success"
    assert len(result.job("split").nodes) == 3


def test_parallel_copy_failure_fails_the_job(go: Any) -> None:
    result = go(pipeline(node("split", '[ "$CIRCLE_NODE_INDEX" != 1 ]', parallelism=2)))
    assert result.job("split").status == "failed"


def _overlap(sink: Sink, a: str, b: str) -> bool:
    return sink.index(ev.JobStarted, b) < sink.index(ev.JobFinished, a) and sink.index(
        ev.JobStarted, a
    ) < sink.index(ev.JobFinished, b)


def test_max_parallel_bounds_concurrency(go: Any) -> None:
    p = pipeline(node("a", "sleep 0.6"), node("b", "sleep 0.6"))
    one, two = Sink(), Sink()
    go(p, sink=one, max_parallel=1)
    go(p, sink=two, max_parallel=2)
    assert not _overlap(one, "a", "b")
    assert _overlap(two, "a", "b")


def test_serial_group_never_overlaps(go: Any) -> None:
    sink = Sink()
    p = pipeline(
        node("a", "sleep 0.4", serial_group="deploy"), node("b", "sleep 0.4", serial_group="deploy")
    )
    result = go(p, sink=sink, max_parallel=2)
    assert statuses(result) == {"a": "success", "b": "success"}
    assert not _overlap(sink, "a", "b")


def test_workflows_run_side_by_side(go: Any) -> None:
    sink = Sink()
    p = Pipeline(
        "2.1",
        (Workflow("one", (node("a", "sleep 0.6"),)), Workflow("two", (node("b", "sleep 0.6"),))),
    )
    result = go(p, sink=sink)
    assert [wf.status for wf in result.workflows] == ["success", "success"]
    assert _overlap(sink, "a", "b")


def test_cancel(go: Any) -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.8, cancel.set)
    timer.start()
    try:
        result = go(pipeline(node("long", "sleep 60"), node("next", "true", "long")), cancel=cancel)
    finally:
        timer.cancel()
    assert result.canceled
    assert statuses(result) == {"long": "canceled", "next": "canceled"}
    assert result.status == "canceled"
    assert not result.ok


def test_executor_that_cannot_start_jobs(go: Any) -> None:
    def no_engine(_spec: JobSpec) -> Any:
        raise RuntimeError("cannot reach the Docker engine")

    result = go(pipeline(node("a"), node("b", "true", "a")), factory=no_engine)
    assert statuses(result) == {"a": "infrastructure_fail", "b": "not_run"}
    assert result.job("a").reason == "cannot reach the Docker engine"
    assert result.status == "failed"


def test_build_numbers_and_records(go: Any, records: RecordStore) -> None:
    p = pipeline(node("a"), node("b", "true", "a"))
    first = go(p)
    second = go(p)
    assert (first.number, second.number) == (1, 2)
    assert [first.job("a").build_num, first.job("b").build_num] == [1, 2]
    assert [second.job("a").build_num, second.job("b").build_num] == [3, 4]
    records.flush()
    recorded = records.get_pipeline(second.pipeline_id)
    assert recorded is not None
    assert recorded.status == "success"
    steps = records.steps(second.job("b").job_id)
    assert [s.name for s in steps] == [
        "Spin up environment",
        "Preparing environment variables",
        "b step",
    ]


@pytest.mark.docker
def test_cancel_removes_containers(
    agent_bin: Path, blobs: Any, records: RecordStore, tmp_path: Path
) -> None:
    import docker

    from circlet.executors.common import LABEL_JOB
    from circlet.executors.docker import DockerExecutor

    keys: list[str] = []

    class Remembering(DockerExecutor):  # the real executor; it only notes the job keys
        def start(self, job: JobSpec, *, job_key: str, extra_env: Any) -> Any:
            keys.append(job_key)
            return super().start(job, job_key=job_key, extra_env=extra_env)

    executor = Remembering(
        image_map={"cimg/python:3.11": "circlet/cimg-python:3.11"},
        agent_bin=agent_bin,
        ca_bundle="",
    )
    cancel = threading.Event()
    sink = Sink()
    client = docker.APIClient()
    seen_running: list[int] = []

    def watch(event: ev.Event) -> None:
        sink(event)
        if isinstance(event, ev.Output) and "sleeping" in event.text:
            found = client.containers(filters={"label": f"{LABEL_JOB}={keys[0]}"})
            seen_running.append(len(found))
            cancel.set()

    result = run_pipeline(
        pipeline(node("long", "echo sleeping; sleep 120")),
        options=RunOptions(project="local/demo", branch="main", staging_root=tmp_path),
        executor_factory=lambda _spec: executor,
        blobs=blobs,
        sink=ev.fan_out(watch, records.sink),
        records=records,
        cancel=cancel,
    )
    assert result.canceled
    assert statuses(result) == {"long": "canceled"}
    try:
        assert seen_running == [1]  # the container existed while the step ran
        for key in keys:
            assert client.containers(all=True, filters={"label": f"{LABEL_JOB}={key}"}) == []
    finally:
        client.close()


def test_no_op_job_succeeds_without_an_environment(
    go: Any, host_executor: HostExecutor, records: RecordStore
) -> None:
    started: list[str] = []

    def factory(spec: JobSpec) -> Any:
        started.append(spec.name)
        return host_executor

    sink = Sink()
    p = pipeline(
        node("build"),
        JobNode("gate", JobSpec("gate", None), (Requirement("build"),), type="no-op"),
        node("deploy", "true", "gate"),
    )
    result = go(p, sink=sink, factory=factory)
    assert statuses(result) == {"build": "success", "gate": "success", "deploy": "success"}
    assert started == ["build", "deploy"]  # nothing was started for the no-op job
    assert not result.job("gate").ran
    assert "gate" not in {e.name for e in sink.events if isinstance(e, ev.JobStarted)}
    assert sink.index(ev.JobStatusChanged, "gate") < sink.index(ev.JobStarted, "deploy")
    records.flush()
    row = records.job(result.job("gate").job_id)
    assert row is not None
    assert row.status == "success"


def test_scheduled_workflows_run_only_on_their_schedule(go: Any) -> None:
    nightly = Workflow("nightly", (node("slow"),), triggers=(ScheduleTrigger("0 3 * * *"),))
    p = Pipeline("2.1", (Workflow("main", (node("fast"),)), nightly))
    pushed = go(p)
    assert [wf.name for wf in pushed.workflows] == ["main"]
    assert statuses(pushed) == {"fast": "success"}
    scheduled = go(p, trigger="schedule")
    assert [wf.name for wf in scheduled.workflows] == ["nightly"]
    assert statuses(scheduled) == {"slow": "success"}
    named = go(p, workflow="nightly")  # asked for by name: it runs on any trigger
    assert statuses(named) == {"slow": "success"}
    assert [wf.name for wf, _ in select_workflows(p, branch="main", tag=None, job="slow")] == [
        "nightly"
    ]


def test_a_failing_teardown_is_recorded_as_finished(
    go: Any, agent_bin: Path, tmp_path: Path, records: RecordStore
) -> None:
    executor = StopFails(tmp_path / "work", agent_bin=agent_bin, ca_bundle="")
    result = go(pipeline(node("a"), node("b", "true", "a")), factory=lambda _spec: executor)
    assert statuses(result) == {"a": "infrastructure_fail", "b": "not_run"}
    records.flush()
    row = records.job(result.job("a").job_id)
    assert row is not None
    assert row.status == "infrastructure_fail"  # not left "running"
    assert row.reason == "RuntimeError: the engine went away while removing the job"
    assert row.stopped_at is not None


def test_missing_staging_root_is_created(
    go: Any, host_executor: HostExecutor, tmp_path: Path, records: RecordStore
) -> None:
    root = tmp_path / "server" / "staging"
    options = RunOptions(project="local/demo", branch="main", staging_root=root)
    result = go(
        pipeline(node("a", "echo hi")),
        options=options,
        factory=lambda _spec: NoSharedStaging(host_executor),
    )
    assert statuses(result) == {"a": "success"}
    assert root.is_dir()
    records.flush()
    row = records.job(result.job("a").job_id)
    assert row is not None
    assert row.status == "success"
