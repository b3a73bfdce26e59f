"""How each engine event becomes rows: the write half of the records store.

Every function here runs inside a transaction the caller opened and holds the
store's write lock for, so the portable UPDATE-then-INSERT upserts cannot race
within a process (and row ids are unique per run across processes).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, case, insert, select, update

from circlet.engine.events import (
    ArtifactStored,
    Event,
    JobFinished,
    JobStarted,
    JobStatusChanged,
    Output,
    PipelineFinished,
    PipelineStarted,
    StepFinished,
    StepStarted,
    TestsRecorded,
    WorkflowFinished,
    WorkflowStarted,
)
from circlet.store.models import (
    Artifact,
    Job,
    Pipeline,
    Project,
    Step,
    StepOutput,
    TestCaseRow,
    Workflow,
)

OutputBuffer = dict[tuple[str, int], list[Output]]


def _now() -> float:
    return time.time()


def write_output(conn: Connection, pending: OutputBuffer) -> None:
    """Append buffered output: one row per step per flush, chunks joined in order."""
    rows = [
        {
            "job_id": job_id,
            "step_index": index,
            "text": "".join(c.text for c in chunks),
            "at": chunks[0].at,
        }
        for (job_id, index), chunks in pending.items()
        if chunks
    ]
    if rows:
        conn.execute(insert(StepOutput), rows)


class EventWriter:
    """Applies events to rows; remembers which project each workflow belongs to."""

    def __init__(self) -> None:
        self._projects: dict[str, str] = {}

    def apply(self, conn: Connection, ev: Event) -> None:
        """Write one (non-output) event inside the caller's transaction."""
        if isinstance(ev, PipelineStarted):
            touch_project(conn, ev.project, pipeline=ev.number)
            _upsert(
                conn,
                Pipeline,
                {"id": ev.pipeline_id},
                {"created_at": ev.at},
                {
                    "project": ev.project,
                    "number": ev.number,
                    "branch": ev.branch,
                    "revision": ev.revision,
                    "trigger": ev.trigger,
                    "status": "running",
                    "started_at": ev.at,
                    "stopped_at": None,
                    "config_source": ev.config_source,
                },
            )
        elif isinstance(ev, PipelineFinished):
            conn.execute(
                update(Pipeline)
                .where(Pipeline.id == ev.pipeline_id)
                .values(status=ev.status, stopped_at=ev.at)
            )
        elif isinstance(ev, WorkflowStarted):
            _upsert(
                conn,
                Workflow,
                {"id": ev.workflow_id},
                {"created_at": ev.at},
                {
                    "pipeline_id": ev.pipeline_id,
                    "name": ev.name,
                    "status": "running",
                    "started_at": ev.at,
                    "stopped_at": None,
                    "jobs": [dict(j) for j in ev.jobs],
                },
            )
        elif isinstance(ev, WorkflowFinished):
            conn.execute(
                update(Workflow)
                .where(Workflow.id == ev.workflow_id)
                .values(status=ev.status, stopped_at=ev.at)
            )
        elif isinstance(ev, JobStatusChanged):
            _upsert(
                conn,
                Job,
                {"id": ev.job_id},
                {
                    "created_at": ev.at,
                    "node_index": 0,
                    "node_total": 1,
                    "executor": "",
                    "project": self.project_of(conn, ev.workflow_id),
                },
                {
                    "workflow_id": ev.workflow_id,
                    "name": ev.name,
                    "status": ev.status,
                    "reason": ev.reason,
                },
            )
        elif isinstance(ev, JobStarted):
            project = self.project_of(conn, ev.workflow_id)
            if project is not None:
                touch_project(conn, project, build=ev.build_num)
            _upsert(
                conn,
                Job,
                {"id": ev.job_id},
                {"created_at": ev.at},
                {
                    "workflow_id": ev.workflow_id,
                    "project": project,
                    "name": ev.name,
                    "build_num": ev.build_num,
                    "status": "running",
                    "node_index": ev.node_index,
                    "node_total": ev.node_total,
                    "executor": ev.executor,
                    "started_at": ev.at,
                    "stopped_at": None,
                    "reason": None,
                },
            )
        elif isinstance(ev, JobFinished):
            conn.execute(
                update(Job)
                .where(Job.id == ev.job_id)
                .values(status=ev.status, reason=ev.reason, stopped_at=ev.at)
            )
        elif isinstance(ev, StepStarted):
            _upsert(
                conn,
                Step,
                {"job_id": ev.job_id, "step_index": ev.index},
                {},
                {
                    "name": ev.name,
                    "step_type": ev.step_type,
                    "status": "running",
                    "exit_code": None,
                    "started_at": ev.at,
                    "stopped_at": None,
                    "reason": None,
                },
            )
        elif isinstance(ev, StepFinished):
            conn.execute(
                update(Step)
                .where(Step.job_id == ev.job_id, Step.step_index == ev.index)
                .values(
                    status=ev.status, exit_code=ev.exit_code, reason=ev.reason, stopped_at=ev.at
                )
            )
        elif isinstance(ev, TestsRecorded):
            rows = [_case_row(ev.job_id, c) for c in ev.cases]
            if rows:
                conn.execute(insert(TestCaseRow), rows)
        elif isinstance(ev, ArtifactStored):
            conn.execute(
                insert(Artifact).values(
                    job_id=ev.job_id,
                    path=ev.path,
                    digest=ev.digest,
                    size=ev.size,
                    node_index=ev.node_index,
                    created_at=ev.at,
                )
            )

    def project_of(self, conn: Connection, workflow_id: str) -> str | None:
        """The project of a workflow's pipeline (cached once known)."""
        if workflow_id in self._projects:
            return self._projects[workflow_id]
        project = conn.execute(
            select(Pipeline.project)
            .join(Workflow, Workflow.pipeline_id == Pipeline.id)
            .where(Workflow.id == workflow_id)
        ).scalar_one_or_none()
        if project is not None:  # a miss may be an event that came early: ask again later
            self._projects[workflow_id] = project
        return project


def touch_project(
    conn: Connection, project: str, *, pipeline: int = 0, build: int | None = None
) -> None:
    """Make sure the project exists and its counters are at least the numbers
    seen (events from a run that did not draw its numbers here)."""
    build = build or 0
    done = conn.execute(
        update(Project)
        .where(Project.slug == project)
        .values(
            pipeline_counter=case(
                (Project.pipeline_counter < pipeline, pipeline),
                else_=Project.pipeline_counter,
            ),
            build_counter=case((Project.build_counter < build, build), else_=Project.build_counter),
        )
    )
    if done.rowcount == 0:
        conn.execute(
            insert(Project).values(
                slug=project, pipeline_counter=pipeline, build_counter=build, created_at=_now()
            )
        )


def _upsert(
    conn: Connection,
    model: type[Any],
    key: dict[str, Any],
    on_insert: dict[str, Any],
    values: dict[str, Any],
) -> None:
    """UPDATE by key; INSERT if nothing matched (portable; callers hold the write lock)."""
    where = [getattr(model, k) == v for k, v in key.items()]
    if conn.execute(update(model).where(*where).values(values)).rowcount == 0:
        conn.execute(insert(model).values({**key, **on_insert, **values}))


def _case_row(job_id: str, case_: dict[str, Any]) -> dict[str, Any]:
    result = str(case_.get("result") or "success")
    return {
        "job_id": job_id,
        "classname": str(case_.get("classname") or ""),
        "name": str(case_.get("name") or ""),
        "file": str(case_.get("file") or ""),
        "result": result,
        "time": float(case_.get("time") or 0.0),
        "message": str(case_.get("message") or ""),
    }
