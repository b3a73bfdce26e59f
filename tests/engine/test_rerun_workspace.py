"""Scheduler features a server rerun/cancel needs: a rerun workflow attaching the
original workflow's workspace layers, and cancelling one workflow of several."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from circlet.engine import events as ev
from circlet.engine.results import PipelineResult
from circlet.engine.run_options import InheritedWorkspace, RunOptions, WorkflowCancels
from circlet.engine.scheduler import run_pipeline
from circlet.executors.host import HostExecutor
from circlet.plan import (
    AttachWorkspaceStep,
    DockerImage,
    ExecutorSpec,
    JobNode,
    JobSpec,
    PersistToWorkspaceStep,
    Pipeline,
    Requirement,
    RunStep,
    Step,
    Workflow,
)

IMAGE = ExecutorSpec(kind="docker", images=(DockerImage("cimg/python:3.11"),))


def node(name: str, *steps: Step, requires: tuple[str, ...] = ()) -> JobNode:
    spec = JobSpec(name, IMAGE, steps)
    return JobNode(name=name, job=spec, requires=tuple(Requirement(r) for r in requires))


def run(
    plan: Pipeline, host: HostExecutor, blobs: Any, tmp_path: Path, **kw: Any
) -> tuple[PipelineResult, list[ev.Event]]:
    events: list[ev.Event] = []
    options = RunOptions(
        project="local/demo",
        branch="main",
        staging_root=tmp_path,
        inherited_workspace=kw.pop("inherited", None),
    )
    result = run_pipeline(
        plan,
        options=options,
        executor_factory=lambda _spec: host,
        blobs=blobs,
        sink=events.append,
        **kw,
    )
    return result, events


def output(events: list[ev.Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, ev.Output))


def test_rerun_from_failed_attaches_the_original_workflows_layers(
    host_executor: HostExecutor, blobs: Any, tmp_path: Path
) -> None:
    flag = tmp_path / "fail-once"
    flag.write_text("1")
    a = node(
        "a",
        RunStep(name="make", command="mkdir -p out && echo from-a > out/a.txt"),
        PersistToWorkspaceStep(root="out", paths=("a.txt",)),
    )
    b_steps: tuple[Step, ...] = (
        AttachWorkspaceStep(at="~/ws"),
        RunStep(name="use", command=f'cat ~/ws/a.txt && test ! -e "{flag}"'),
    )
    first, _ = run(
        Pipeline("2.1", (Workflow("main", (a, node("b", *b_steps, requires=("a",)))),)),
        host_executor,
        blobs,
        tmp_path,
    )
    assert {j.name: j.status for j in first.jobs()} == {"a": "success", "b": "failed"}
    flag.unlink()
    original = first.workflows[0].workflow_id
    # The rerun runs only b, its requirement on a dropped (as server.actions._subset does).
    only_b = Pipeline("2.1", (Workflow("main", (node("b", *b_steps),)),))

    bare, _ = run(only_b, host_executor, blobs, tmp_path)
    assert bare.job("b").status == "failed"  # without the inherited layers: nothing to cat

    inherited = InheritedWorkspace(upstream={"b": ("a",)}, sources={"a": original})
    rerun, events = run(only_b, host_executor, blobs, tmp_path, inherited=inherited)

    assert [j.name for j in rerun.jobs()] == ["b"]
    assert rerun.job("b").status == "success"
    text = output(events)
    assert "from-a" in text
    assert re.search(rf"workflows/workspaces/{original}/0/a/0/\d+ \(", text)
    assert "Applying workspace layer for job: a (node 0)" in text


def test_cancel_one_workflow_of_two(
    host_executor: HostExecutor, blobs: Any, tmp_path: Path
) -> None:
    plan = Pipeline(
        "2.1",
        (
            Workflow("one", (node("slow-one", RunStep(name="s", command="sleep 30")),)),
            Workflow("two", (node("slow-two", RunStep(name="s", command="sleep 2")),)),
        ),
    )
    cancels = WorkflowCancels()
    timer = threading.Timer(0.8, cancels.cancel_workflow, args=("one",))
    timer.start()
    try:
        result, _ = run(plan, host_executor, blobs, tmp_path, workflow_cancels=cancels)
    finally:
        timer.cancel()
    by_name = {w.name: w for w in result.workflows}
    assert by_name["one"].status == "canceled"
    assert by_name["one"].jobs["slow-one"].status == "canceled"
    assert by_name["two"].status == "success"
    assert by_name["two"].jobs["slow-two"].status == "success"
    assert not result.canceled  # the run itself was not canceled


def test_cancel_by_workflow_id_before_it_runs_its_next_job(
    host_executor: HostExecutor, blobs: Any, tmp_path: Path
) -> None:
    plan = Pipeline(
        "2.1",
        (
            Workflow(
                "one",
                (
                    node("first", RunStep(name="s", command="sleep 30")),
                    node("then", RunStep(name="t", command="true"), requires=("first",)),
                ),
            ),
            Workflow("two", (node("quick", RunStep(name="q", command="true")),)),
        ),
    )
    cancels = WorkflowCancels()
    seen: list[ev.Event] = []

    def sink_then_cancel(event: ev.Event) -> None:
        seen.append(event)
        if isinstance(event, ev.JobStarted) and event.name == "first":
            cancels.cancel_workflow(
                next(
                    e.workflow_id
                    for e in seen
                    if isinstance(e, ev.WorkflowStarted) and e.name == "one"
                )
            )

    result = run_pipeline(
        plan,
        options=RunOptions(project="local/demo", branch="main", staging_root=tmp_path),
        executor_factory=lambda _spec: host_executor,
        blobs=blobs,
        sink=sink_then_cancel,
        workflow_cancels=cancels,
    )
    by_name = {w.name: w for w in result.workflows}
    assert {n: j.status for n, j in by_name["one"].jobs.items()} == {
        "first": "canceled",
        "then": "canceled",
    }
    assert by_name["one"].jobs["then"].reason == "the workflow was canceled"
    assert by_name["two"].status == "success"
