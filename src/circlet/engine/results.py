"""What :func:`~circlet.engine.scheduler.run_pipeline` returns: each workflow job's
outcome (all its parallel copies), each workflow's, the pipeline's, and the
CircleCI rules that make a workflow's and a pipeline's status of their parts'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from circlet.engine import events as ev
from circlet.engine.runner import JobResult


@dataclass
class JobOutcome:
    """One workflow job (all its parallel copies)."""

    name: str
    workflow: str
    job_id: str  # the workflow job id (CIRCLE_WORKFLOW_JOB_ID; node 0's event id)
    status: ev.JobStatus
    build_num: int | None = None
    reason: str | None = None
    seconds: float = 0.0
    node_ids: list[str] = field(default_factory=list)
    nodes: list[JobResult] = field(default_factory=list)
    type: str = "build"

    @property
    def ran(self) -> bool:
        return bool(self.nodes)


@dataclass
class WorkflowResult:
    name: str
    workflow_id: str
    status: ev.WorkflowStatus
    jobs: dict[str, JobOutcome] = field(default_factory=dict)
    requires: dict[str, list[str]] = field(default_factory=dict)  # for the graph


@dataclass
class PipelineResult:
    pipeline_id: str
    number: int
    status: ev.WorkflowStatus
    workflows: list[WorkflowResult] = field(default_factory=list)
    canceled: bool = False

    def jobs(self) -> list[JobOutcome]:
        """Every job of every workflow, in workflow order."""
        return [j for wf in self.workflows for j in wf.jobs.values()]

    @property
    def ok(self) -> bool:
        """True when every job that ran succeeded (and nothing was canceled)."""
        ran = [j for j in self.jobs() if j.ran]
        return not self.canceled and all(j.status == "success" for j in ran)

    def job(self, name: str, workflow: str | None = None) -> JobOutcome:
        """The outcome of job ``name`` (KeyError if it is not part of the result)."""
        for wf in self.workflows:
            if (workflow is None or wf.name == workflow) and name in wf.jobs:
                return wf.jobs[name]
        raise KeyError(name)


def workflow_status(statuses: Sequence[str], *, canceled: bool) -> ev.WorkflowStatus:
    """CircleCI's workflow status from its jobs' statuses."""
    if canceled or "canceled" in statuses:
        return "canceled"
    if "failed" in statuses or "infrastructure_fail" in statuses:
        return "failed"
    if "on_hold" in statuses:
        return "on_hold"
    if statuses and all(s == "not_run" for s in statuses):
        return "not_run"
    return "success"


def pipeline_status(statuses: list[ev.WorkflowStatus], *, canceled: bool) -> ev.WorkflowStatus:
    if not statuses:
        return "not_run"
    for word in ("canceled", "failed", "error", "on_hold"):
        if word in statuses:
            return word
    if canceled:
        return "canceled"
    if all(s == "not_run" for s in statuses):
        return "not_run"
    return "success"
