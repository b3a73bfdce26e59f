"""The workflow DAG a run walks: which workflows and jobs run for a pipeline
(:func:`select_workflows`), a job's transitive upstream (:func:`upstream_of`),
and the scheduler's bookkeeping per workflow and job (:class:`ScheduledWorkflow`,
:class:`ScheduledJob`), resumed from the records when a run continues.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace

from circlet.engine import events as ev
from circlet.engine.filters import job_runs
from circlet.engine.results import JobOutcome
from circlet.engine.resume import ResumedJob, ResumedWorkflow
from circlet.engine.state import JobState
from circlet.plan import JobNode, Pipeline, Workflow


class ScheduledJob:
    """The scheduler's bookkeeping for one workflow job."""

    def __init__(self, wf: ScheduledWorkflow, node: JobNode) -> None:
        self.wf = wf
        self.node = node
        self.state = JobState(what=node.name)
        self.outcome = JobOutcome(
            node.name, wf.workflow.name, str(uuid.uuid4()), "queued", type=node.type
        )
        self.pending = 0
        self.t0 = 0.0
        self.resumed: ResumedJob | None = None

    @property
    def requires(self) -> list[str]:
        return [r.job for r in self.node.requires]

    def resume(self, prior: ResumedJob) -> None:
        """Take the recorded state (no event: the records have it already)."""
        self.resumed = prior
        self.outcome.job_id = prior.job_id
        self.outcome.build_num = prior.build_num
        # A job that had started is launched again (its copies are waited for).
        status: ev.JobStatus = "queued" if prior.copies else prior.status
        if status == "running":
            status = "queued"
        self.state = JobState(status, what=self.node.name)
        self.outcome.status = status


class ScheduledWorkflow:
    def __init__(
        self,
        workflow: Workflow,
        nodes: list[JobNode],
        *,
        keep_requires: bool,
        resumed: ResumedWorkflow | None = None,
    ) -> None:
        self.workflow = workflow
        self.workflow_id = resumed.workflow_id if resumed else str(uuid.uuid4())
        self.resumed = resumed
        self.cancel = threading.Event()  # set by the run's cancel or a workflow cancel
        self.jobs: dict[str, ScheduledJob] = {}
        for node in nodes:
            kept = node if keep_requires else _without_requires(node)
            self.jobs[node.name] = ScheduledJob(self, kept)
        self.status: ev.WorkflowStatus = "running"
        for name, prior in (resumed.jobs if resumed else {}).items():
            if name in self.jobs:
                self.jobs[name].resume(prior)

    def upstream(self, name: str) -> tuple[str, ...]:
        """All jobs ``name`` requires, transitively, in workflow order."""
        return upstream_of(self.workflow, name)


def upstream_of(workflow: Workflow, name: str) -> tuple[str, ...]:
    """All jobs ``name`` requires in ``workflow``, transitively, in workflow order."""
    nodes = {n.name: n for n in workflow.jobs}
    seen: set[str] = set()
    stack = [r.job for r in nodes[name].requires] if name in nodes else []
    while stack:
        dep = stack.pop()
        if dep in seen:
            continue
        seen.add(dep)
        if dep in nodes:
            stack.extend(r.job for r in nodes[dep].requires)
    return tuple(n.name for n in workflow.jobs if n.name in seen)


def _without_requires(node: JobNode) -> JobNode:
    return replace(node, requires=())


def select_workflows(
    pipeline: Pipeline,
    *,
    branch: str | None,
    tag: str | None,
    workflow: str | None = None,
    job: str | None = None,
    trigger: str = "local",
) -> list[tuple[Workflow, list[JobNode]]]:
    """The workflows to run and, for each, the jobs that pass their filters.

    A workflow with ``triggers`` (a schedule) runs only on a ``schedule``
    pipeline, and a schedule pipeline runs only such workflows, as on
    CircleCI; ``workflow`` naming one runs it whatever the trigger.
    With ``job``, only that job (by workflow name, else by job definition
    name: all matrix copies) in the first workflow that has it, filters and
    ``requires`` ignored: the user asked for it by name.
    """
    chosen: list[tuple[Workflow, list[JobNode]]] = []
    for wf in pipeline.workflows:
        if workflow is not None and wf.name != workflow:
            continue
        if workflow is None and job is None and bool(wf.triggers) != (trigger == "schedule"):
            continue
        if job is not None:
            nodes = [n for n in wf.jobs if n.name == job] or [
                n for n in wf.jobs if n.job.name == job
            ]
            if nodes:
                return [(wf, nodes)]
            continue
        if not wf.enabled:
            continue
        nodes = [n for n in wf.jobs if job_runs(n.filters, branch=branch, tag=tag)]
        if nodes:
            chosen.append((wf, nodes))
    return chosen
