"""Resuming the workflows a server left running when it was killed.

A server runs its pipelines' schedulers in its own process. Killed (a crash, the
OOM killer, ``kill -9``), it leaves its runners working: they deliver their
results once it is back and the reaper writes them to the records, but nobody
starts the jobs that required them. At start, before the reaper runs, the
server reads what the records and the fleet's rows say about each pipeline
still ``running`` (:func:`resume_state`) and runs the scheduler on it again
(``run_pipeline(resume=…)``):

- a job that ended keeps its status;
- a copy sent to a runner and not handed back yet (its ``cluster_jobs`` row) is
  waited for by the new dispatcher, which forwards what the runner still reports;
- a copy that ran in the server's own pool died with it: it ends
  ``infrastructure_fail`` (:data:`INTERRUPTED`), its open steps closed;
- the jobs that had not started are scheduled as usual.

The workflow then ends with its jobs' status and :func:`settle_pipeline` gives
the pipeline its status from its workflows. One server process per database
(as for schedules): a pipeline ``running`` in the records is one whose server
is gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from circlet.cluster.store import ClusterStore
from circlet.cluster.store_dispatch import Dispatched
from circlet.engine import events as ev
from circlet.engine.resume import DISPATCHED, Resume, ResumedCopy, ResumedJob, ResumedWorkflow
from circlet.engine.state import JOB_TERMINAL
from circlet.plan import Pipeline
from circlet.store.models import JobRecord, PipelineRecord, WorkflowRecord

INTERRUPTED = "interrupted: the server restarted while the job ran"
MAX_PIPELINES = 10_000


@dataclass(frozen=True)
class Unfinished:
    """A pipeline to continue: the scheduler's :class:`Resume` and the fleet jobs
    (ids) the new dispatcher takes over."""

    pipeline: PipelineRecord
    resume: Resume
    dispatched: list[str] = field(default_factory=list)


def running_pipelines(records: Any) -> list[PipelineRecord]:
    """The pipelines the records say are running, oldest first."""
    found: list[PipelineRecord] = records.list_pipelines(status="running", limit=MAX_PIPELINES)
    return list(reversed(found))


def resume_state(
    records: Any, store: ClusterStore | None, sink: ev.EventSink, pipeline: PipelineRecord
) -> Unfinished:
    """How to continue ``pipeline``'s running workflows. Copies that ran in the old
    server's pool are ended now (through ``sink``): nothing can resume them."""
    flows: list[WorkflowRecord] = [
        w for w in records.workflows(pipeline.id) if w.status == "running"
    ]
    rows = store.dispatched([w.id for w in flows]) if store is not None else []
    workflows: list[ResumedWorkflow] = []
    for wf in flows:
        recorded: list[JobRecord] = records.jobs(wf.id)
        jobs: dict[str, ResumedJob] = {}
        requires: dict[str, list[str]] = {}
        for entry in wf.jobs:
            name = str(entry["name"])
            requires[name] = [str(r) for r in entry.get("requires") or ()]
            jobs[name] = _job(
                records,
                sink,
                [r for r in recorded if r.name == name],
                [r for r in rows if r.workflow_id == wf.id and r.name == name],
            )
        started = wf.started_at or wf.created_at
        workflows.append(ResumedWorkflow(wf.id, wf.name, started, jobs, requires))
    waiting = [r.job_id for r in rows if not r.handed_on]
    return Unfinished(pipeline, Resume(workflows), waiting)


def _job(
    records: Any, sink: ev.EventSink, recorded: Sequence[JobRecord], rows: Sequence[Dispatched]
) -> ResumedJob:
    """One workflow job from its records (one per copy that started, node 0 also
    for its waiting states) and the fleet's rows of its copies."""
    head = next((r for r in recorded if r.node_index == 0), None)
    copies: dict[int, ResumedCopy] = {}
    for row in rows:
        if row.handed_on:
            copies[row.node_index] = ResumedCopy(row.status or "infrastructure_fail", row.reason)
        else:
            copies[row.node_index] = ResumedCopy(DISPATCHED)
    for rec in recorded:
        if rec.node_index in copies or rec.started_at is None:
            continue  # on a runner, or never started (a waiting or settled status)
        if rec.status in JOB_TERMINAL:
            copies[rec.node_index] = ResumedCopy(rec.status, rec.reason)
        else:  # it ran in the old server's own pool: gone with it
            _interrupt(records, sink, rec)
            copies[rec.node_index] = ResumedCopy("infrastructure_fail", INTERRUPTED)
    if head is not None:
        job_id = head.id
    elif rows:
        job_id = rows[0].workflow_job_id
    else:
        job_id = str(uuid.uuid4())  # never recorded: it had not started
    numbers = [r.build_num for r in recorded if r.build_num] + [
        r.build_num for r in rows if r.build_num
    ]
    status = cast(ev.JobStatus, head.status if head is not None else "queued")
    return ResumedJob(job_id, status, numbers[0] if numbers else None, copies)


def _interrupt(records: Any, sink: ev.EventSink, job: JobRecord) -> None:
    """End a copy that died with the server: its open steps, then the job."""
    for step in records.steps(job.id):
        if step.status == "running":
            sink(ev.Output(job.id, step.index, f"\ncirclet: {INTERRUPTED}\n"))
            sink(ev.StepFinished(job.id, step.index, "canceled", None, INTERRUPTED))
    sink(ev.JobFinished(job.id, "infrastructure_fail", INTERRUPTED))


def check_plan(plan: Pipeline, unfinished: Unfinished) -> None:
    """KeyError unless every workflow to resume is still in the (recompiled) config."""
    names = {w.name for w in plan.workflows}
    for flow in unfinished.resume.workflows:
        if flow.name not in names:
            raise KeyError(f"workflow {flow.name} is no longer in the config")


def settle_pipeline(records: Any, sink: ev.EventSink, pipeline_id: str) -> str | None:
    """End the pipeline with the status of the newest workflow of each name, unless
    one still runs or waits for an approval; the status given, or None."""
    newest: dict[str, str] = {}
    for wf in records.workflows(pipeline_id):
        newest[wf.name] = wf.status
    statuses = list(newest.values())
    if any(s in ("running", "on_hold") for s in statuses):
        return None
    status: ev.WorkflowStatus = "success" if statuses else "not_run"
    for word in ("canceled", "failed", "error"):
        if word in statuses:
            status = cast(ev.WorkflowStatus, word)
            break
    else:
        if statuses and all(s == "not_run" for s in statuses):
            status = "not_run"
    sink(ev.PipelineFinished(pipeline_id, status))
    return status


def give_up(records: Any, sink: ev.EventSink, unfinished: Unfinished, why: str) -> None:
    """A pipeline that cannot be resumed (its project or config is gone): cancel
    what waits; jobs still on runners end in the records as the reaper forwards them."""
    reason = f"the server restarted and could not resume the workflow: {why}"
    for flow in unfinished.resume.workflows:
        for name, job in flow.jobs.items():
            if not job.copies and job.status in ("queued", "blocked", "on_hold"):
                sink(ev.JobStatusChanged(flow.workflow_id, job.job_id, name, "canceled", reason))
        sink(ev.WorkflowFinished(flow.workflow_id, "canceled"))
    settle_pipeline(records, sink, unfinished.pipeline.id)
