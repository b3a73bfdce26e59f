"""SQLAlchemy models of the records, and the plain read-only records queries return.

Portable SQL only (SQLite and PostgreSQL): no JSON operators, no dialect upserts.
Rows reference each other by id without foreign-key constraints on purpose:
events from remote runners may arrive slightly out of order, and the records
sink must never fail a job because a parent row is a moment late.
The schema is created by the Alembic revisions in ``store/migrations/versions``;
a test checks that they and these models agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for big tables.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"

    slug: Mapped[str] = mapped_column(String(255), primary_key=True)
    pipeline_counter: Mapped[int] = mapped_column(Integer, default=0)
    build_counter: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)


class Pipeline(Base):
    __tablename__ = "pipelines"
    __table_args__ = (
        Index("ix_pipelines_project_number", "project", "number"),
        Index("ix_pipelines_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(255))
    number: Mapped[int] = mapped_column(Integer)
    branch: Mapped[str | None] = mapped_column(String(255))
    revision: Mapped[str | None] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    stopped_at: Mapped[float | None] = mapped_column(Float)
    config_source: Mapped[str | None] = mapped_column(Text)


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (Index("ix_workflows_pipeline_id", "pipeline_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    stopped_at: Mapped[float | None] = mapped_column(Float)
    jobs: Mapped[Any] = mapped_column(JSON, nullable=False)  # [{"name", "requires": [...], "type"}]


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_workflow_id", "workflow_id"),
        Index("ix_jobs_project_build_num", "project", "build_num"),
        Index("ix_jobs_project_name", "project", "name"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(64))
    project: Mapped[str | None] = mapped_column(String(255))  # copied from the pipeline
    name: Mapped[str] = mapped_column(String(255))
    build_num: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    node_index: Mapped[int] = mapped_column(Integer, default=0)
    node_total: Mapped[int] = mapped_column(Integer, default=1)
    executor: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    stopped_at: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)


class Step(Base):
    __tablename__ = "steps"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    step_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[float | None] = mapped_column(Float)
    stopped_at: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)


class StepOutput(Base):
    """Output in appended chunks (each a batch of events), read back in id order."""

    __tablename__ = "step_output"
    __table_args__ = (Index("ix_step_output_job_step", "job_id", "step_index", "id"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64))
    step_index: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[float] = mapped_column(Float)


class TestCaseRow(Base):
    __tablename__ = "test_cases"
    __table_args__ = (Index("ix_test_cases_job_id", "job_id"),)
    __test__ = False  # not a pytest class

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64))
    classname: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    file: Mapped[str] = mapped_column(Text)
    result: Mapped[str] = mapped_column(String(16))
    time: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_job_id", "job_id"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    node_index: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)


# --------------------------------------------------------------- read results


def _duration(started: float | None, stopped: float | None) -> float | None:
    if started is None or stopped is None:
        return None
    return max(0.0, stopped - started)


@dataclass(frozen=True)
class PipelineRecord:
    id: str
    project: str
    number: int
    branch: str | None
    revision: str | None
    trigger: str
    status: str
    created_at: float
    started_at: float | None
    stopped_at: float | None
    config_source: str | None

    @property
    def duration(self) -> float | None:
        """Seconds from start to stop; None while running."""
        return _duration(self.started_at, self.stopped_at)


@dataclass(frozen=True)
class WorkflowRecord:
    id: str
    pipeline_id: str
    name: str
    status: str
    created_at: float
    started_at: float | None
    stopped_at: float | None
    jobs: tuple[dict[str, Any], ...]

    @property
    def duration(self) -> float | None:
        """Seconds from start to stop; None while running."""
        return _duration(self.started_at, self.stopped_at)


@dataclass(frozen=True)
class JobRecord:
    id: str
    workflow_id: str
    project: str | None
    name: str
    build_num: int | None
    status: str
    node_index: int
    node_total: int
    executor: str
    created_at: float
    started_at: float | None
    stopped_at: float | None
    reason: str | None

    @property
    def duration(self) -> float | None:
        """Seconds from start to stop; None while running or never started."""
        return _duration(self.started_at, self.stopped_at)


@dataclass(frozen=True)
class StepRecord:
    job_id: str
    index: int
    name: str
    step_type: str
    status: str
    exit_code: int | None
    started_at: float | None
    stopped_at: float | None
    reason: str | None

    @property
    def duration(self) -> float | None:
        """Seconds from start to stop; None while running."""
        return _duration(self.started_at, self.stopped_at)


@dataclass(frozen=True)
class TestCaseRecord:
    __test__ = False  # not a pytest class

    job_id: str
    classname: str
    name: str
    file: str
    result: str
    time: float
    message: str


@dataclass(frozen=True)
class ArtifactRecord:
    job_id: str
    path: str
    digest: str
    size: int
    node_index: int
    created_at: float


def pipeline_record(row: Pipeline) -> PipelineRecord:
    """Detach a row into a :class:`PipelineRecord`."""
    return PipelineRecord(
        id=row.id,
        project=row.project,
        number=row.number,
        branch=row.branch,
        revision=row.revision,
        trigger=row.trigger,
        status=row.status,
        created_at=row.created_at,
        started_at=row.started_at,
        stopped_at=row.stopped_at,
        config_source=row.config_source,
    )


def workflow_record(row: Workflow) -> WorkflowRecord:
    """Detach a row into a :class:`WorkflowRecord`."""
    return WorkflowRecord(
        id=row.id,
        pipeline_id=row.pipeline_id,
        name=row.name,
        status=row.status,
        created_at=row.created_at,
        started_at=row.started_at,
        stopped_at=row.stopped_at,
        jobs=tuple(row.jobs or ()),
    )


def job_record(row: Job) -> JobRecord:
    """Detach a row into a :class:`JobRecord`."""
    return JobRecord(
        id=row.id,
        workflow_id=row.workflow_id,
        project=row.project,
        name=row.name,
        build_num=row.build_num,
        status=row.status,
        node_index=row.node_index,
        node_total=row.node_total,
        executor=row.executor,
        created_at=row.created_at,
        started_at=row.started_at,
        stopped_at=row.stopped_at,
        reason=row.reason,
    )


def step_record(row: Step) -> StepRecord:
    """Detach a row into a :class:`StepRecord`."""
    return StepRecord(
        job_id=row.job_id,
        index=row.step_index,
        name=row.name,
        step_type=row.step_type,
        status=row.status,
        exit_code=row.exit_code,
        started_at=row.started_at,
        stopped_at=row.stopped_at,
        reason=row.reason,
    )
