"""Events: what the engine tells the world. One sink function receives them all.

Sinks: the records store, the CLI renderer, the server's live stream. Every
event is a frozen dataclass with plain, JSON-ready fields, so the same event
can cross a process boundary (a Celery runner → the server).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

# Statuses use CircleCI's API words.
JobStatus = Literal[
    "queued",
    "running",
    "success",
    "failed",
    "canceled",
    "blocked",  # waiting on upstream jobs
    "not_run",  # upstream failed or filtered out
    "on_hold",  # approval job waiting
    "infrastructure_fail",
]
StepStatus = Literal["running", "success", "failed", "canceled", "skipped", "timedout"]
WorkflowStatus = Literal["running", "success", "failed", "canceled", "on_hold", "not_run", "error"]


def now() -> float:
    return time.time()


@dataclass(frozen=True)
class PipelineStarted:
    pipeline_id: str
    number: int
    project: str
    branch: str | None
    revision: str | None
    trigger: str  # "local" | "api" | "webhook" | "schedule"
    config_source: str | None = None
    at: float = field(default_factory=now)
    kind: Literal["pipeline_started"] = "pipeline_started"


@dataclass(frozen=True)
class PipelineFinished:
    pipeline_id: str
    status: WorkflowStatus
    at: float = field(default_factory=now)
    kind: Literal["pipeline_finished"] = "pipeline_finished"


@dataclass(frozen=True)
class WorkflowStarted:
    pipeline_id: str
    workflow_id: str
    name: str
    jobs: tuple[dict[str, Any], ...]  # [{"name", "requires": [...], "type"}] for graphs
    at: float = field(default_factory=now)
    kind: Literal["workflow_started"] = "workflow_started"


@dataclass(frozen=True)
class WorkflowFinished:
    workflow_id: str
    status: WorkflowStatus
    at: float = field(default_factory=now)
    kind: Literal["workflow_finished"] = "workflow_finished"


@dataclass(frozen=True)
class JobStatusChanged:
    """Any job status change that is not start/finish (blocked, not_run, on_hold, queued)."""

    workflow_id: str
    job_id: str
    name: str
    status: JobStatus
    reason: str | None = None
    at: float = field(default_factory=now)
    kind: Literal["job_status"] = "job_status"


@dataclass(frozen=True)
class JobStarted:
    workflow_id: str
    job_id: str
    name: str
    build_num: int
    node_index: int = 0
    node_total: int = 1
    executor: str = ""
    at: float = field(default_factory=now)
    kind: Literal["job_started"] = "job_started"


@dataclass(frozen=True)
class JobFinished:
    job_id: str
    status: JobStatus
    reason: str | None = None
    at: float = field(default_factory=now)
    kind: Literal["job_finished"] = "job_finished"


@dataclass(frozen=True)
class StepStarted:
    job_id: str
    index: int  # 0-based, in display order (Spin up environment is 0)
    name: str
    step_type: str  # "spin_up" | "env" | "run" | "checkout" | …
    # run steps: the shebang line and the command, shown above the output as
    # CircleCI does ("#!/bin/bash -eo pipefail\npipenv install")
    command: str | None = None
    background: bool = False
    at: float = field(default_factory=now)
    kind: Literal["step_started"] = "step_started"


@dataclass(frozen=True)
class Output:
    """A chunk of a step's output, already masked."""

    job_id: str
    index: int
    text: str
    at: float = field(default_factory=now)
    kind: Literal["output"] = "output"


@dataclass(frozen=True)
class StepFinished:
    job_id: str
    index: int
    status: StepStatus
    exit_code: int | None = None
    reason: str | None = None
    at: float = field(default_factory=now)
    kind: Literal["step_finished"] = "step_finished"


@dataclass(frozen=True)
class TestsRecorded:
    job_id: str
    cases: tuple[dict[str, Any], ...]  # testing.junit.TestCase as dicts
    at: float = field(default_factory=now)
    kind: Literal["tests_recorded"] = "tests_recorded"


@dataclass(frozen=True)
class ArtifactStored:
    job_id: str
    path: str  # destination path as shown/downloaded
    digest: str  # blob digest in the blob store
    size: int
    node_index: int = 0
    at: float = field(default_factory=now)
    kind: Literal["artifact_stored"] = "artifact_stored"


Event: TypeAlias = (
    PipelineStarted
    | PipelineFinished
    | WorkflowStarted
    | WorkflowFinished
    | JobStatusChanged
    | JobStarted
    | JobFinished
    | StepStarted
    | Output
    | StepFinished
    | TestsRecorded
    | ArtifactStored
)

EventSink = Callable[[Event], None]


def fan_out(*sinks: EventSink) -> EventSink:
    """One sink that calls each of ``sinks`` in order."""

    def sink(event: Event) -> None:
        for s in sinks:
            s(event)

    return sink
