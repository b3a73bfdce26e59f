"""What :func:`~circlet.engine.scheduler.run_pipeline` continues when another
scheduler left workflows unfinished (a server that was killed): the recorded
workflows, their jobs and the copies already sent to runners.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from circlet.engine import events as ev

DISPATCHED = "dispatched"  # a ResumedCopy sent to a runner and not handed back yet


@dataclass(frozen=True)
class ResumedCopy:
    """One job copy of a resumed workflow: ``status`` is how it ended, or
    :data:`DISPATCHED` (it is on a runner: the dispatcher waits for it)."""

    status: str
    reason: str | None = None


@dataclass(frozen=True)
class ResumedJob:
    """A workflow job as the records had it when its scheduler stopped.

    With ``copies`` (node index → copy) the job had started: the copies named are
    waited for or counted as ended, the others start now. Without, ``status`` is
    where it waits (queued, blocked, on_hold) or how it ended without running."""

    job_id: str
    status: ev.JobStatus
    build_num: int | None = None
    copies: Mapping[int, ResumedCopy] = field(default_factory=dict)


@dataclass(frozen=True)
class ResumedWorkflow:
    """A recorded workflow to continue: its id, its jobs (by name) and their
    ``requires`` as recorded (a rerun workflow holds only some of the config's jobs)."""

    workflow_id: str
    name: str
    started_at: float
    jobs: Mapping[str, ResumedJob]
    requires: Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class Resume:
    """What :func:`~circlet.engine.scheduler.run_pipeline` continues instead of
    starting a pipeline. It emits no pipeline events: the caller settles the
    pipeline (it may hold other workflows)."""

    workflows: Sequence[ResumedWorkflow]
