"""Records: what ran, when, how it ended, what it printed — in SQL.

:class:`RecordStore` opens SQLite (WAL, default under the circlet home) or
PostgreSQL (``postgresql+psycopg://…``), brings the schema to the newest Alembic
revision, and then is both an :data:`~circlet.engine.events.EventSink`
(:meth:`RecordStore.sink`) and the query side for the CLI and the server.

Writes are serialized inside a process (SQLite has one writer anyway) and each
event is one transaction, except step output: chunks are buffered and written
in one transaction when their step finishes, every ``flush_interval`` seconds,
when the buffer grows past ``flush_bytes`` and at :meth:`RecordStore.close`. A
crash therefore loses at most the unflushed buffer; SQLite's WAL and
PostgreSQL's commits keep what was written intact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from circlet.engine.events import Event, JobFinished, Output, StepFinished
from circlet.store.api import RecordsReader
from circlet.store.models import (
    Artifact,
    ArtifactRecord,
    Job,
    JobRecord,
    Pipeline,
    PipelineRecord,
    Project,
    Step,
    StepOutput,
    StepRecord,
    TestCaseRecord,
    TestCaseRow,
    Workflow,
    WorkflowRecord,
    job_record,
    pipeline_record,
    step_record,
    workflow_record,
)
from circlet.store.records_db import default_url, make_engine, migrate
from circlet.store.records_events import EventWriter, OutputBuffer, write_output

__all__ = [
    "ArtifactRecord",
    "JobRecord",
    "PipelineRecord",
    "RecordStore",
    "StepRecord",
    "TestCaseRecord",
    "WorkflowRecord",
    "default_url",
    "migrate",
]

log = logging.getLogger(__name__)

FINISHED_JOB = ("success", "failed")  # runs whose test timings count for splitting
ACTIVE = ("running", "queued")


# ------------------------------------------------------------------ the store


class RecordStore:
    """Pipelines, workflows, jobs, steps, output, test results and artifacts.

    ``url`` None means :func:`default_url`. Thread-safe; one instance per process
    is enough. Close it (or use ``with``) to flush buffered output.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        flush_interval: float = 0.2,
        flush_bytes: int = 1 << 20,
    ) -> None:
        self.url = url or default_url()
        self._engine = make_engine(self.url)
        self.revision = migrate(self._engine)
        self._flush_interval = flush_interval
        self._flush_bytes = flush_bytes
        self._write_lock = threading.RLock()
        self._buffer_lock = threading.Lock()
        self._buffer: OutputBuffer = {}
        self._buffered_bytes = 0
        self._writer = EventWriter()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._closed = False

    # -- lifecycle

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush buffered output, stop the flusher thread, release connections."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        self.flush()
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for the server's own queries)."""
        return self._engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with (
            self._write_lock,
            self._engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn,
            conn.begin(),
        ):
            yield conn

    # -- numbers

    def next_pipeline_number(self, project: str) -> int:
        """The next pipeline number of ``project`` (1, 2, …), unique across processes."""
        return self._bump(project, "pipeline")

    def next_build_num(self, project: str) -> int:
        """The next job build number of ``project`` (1, 2, …), unique across processes."""
        return self._bump(project, "build")

    def _bump(self, project: str, which: str) -> int:
        column = Project.pipeline_counter if which == "pipeline" else Project.build_counter
        for attempt in range(5):
            try:
                with self._write() as conn:
                    done = conn.execute(
                        update(Project).where(Project.slug == project).values({column: column + 1})
                    )
                    if done.rowcount == 0:
                        conn.execute(
                            insert(Project).values(
                                slug=project,
                                pipeline_counter=1 if which == "pipeline" else 0,
                                build_counter=1 if which == "build" else 0,
                                created_at=time.time(),
                            )
                        )
                        return 1
                    value = conn.execute(select(column).where(Project.slug == project))
                    return int(value.scalar_one())
            except IntegrityError:  # another process created the project row first: retry
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    # -- the event sink

    def sink(self, event: Event) -> None:
        """Record one engine event (an ``EventSink``); output is buffered."""
        if isinstance(event, Output):
            with self._buffer_lock:
                self._buffer.setdefault((event.job_id, event.index), []).append(event)
                self._buffered_bytes += len(event.text)
                full = self._buffered_bytes >= self._flush_bytes
            if full or self._closed:  # after close() nobody else would flush it
                self.flush()
            elif self._flusher is None:
                self._start_flusher()
            return
        with self._write() as conn:
            if isinstance(event, (StepFinished, JobFinished)):
                # The step's output lands with (before) its end, so a finished
                # step always shows its whole log.
                write_output(conn, self._take_buffer())
            self._writer.apply(conn, event)

    def flush(self) -> None:
        """Write buffered output now."""
        with self._write_lock:
            pending = self._take_buffer()
            if not pending:
                return
            try:
                with self._write() as conn:
                    write_output(conn, pending)
            except Exception:
                self._put_back(pending)
                raise

    def _start_flusher(self) -> None:
        with self._buffer_lock:
            if self._flusher is not None or self._closed:
                return
            self._flusher = threading.Thread(
                target=self._flush_loop, name="circlet-records-flush", daemon=True
            )
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._flush_interval):
            if self._buffer:
                try:
                    self.flush()
                except Exception:  # the next tick retries; the engine must not die of it
                    log.warning("records: could not write step output", exc_info=True)

    def _take_buffer(self) -> OutputBuffer:
        with self._buffer_lock:
            pending, self._buffer = self._buffer, {}
            self._buffered_bytes = 0
        return pending

    def _put_back(self, pending: OutputBuffer) -> None:
        with self._buffer_lock:
            for key, chunks in self._buffer.items():
                pending.setdefault(key, []).extend(chunks)
            self._buffer = pending
            self._buffered_bytes = sum(len(c.text) for cs in pending.values() for c in cs)

    # -- queries

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._engine) as session:
            yield session

    def list_pipelines(
        self,
        project: str | None = None,
        branch: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[PipelineRecord]:
        """Newest first, optionally filtered."""
        query = select(Pipeline)
        if project is not None:
            query = query.where(Pipeline.project == project)
        if branch is not None:
            query = query.where(Pipeline.branch == branch)
        if status is not None:
            query = query.where(Pipeline.status == status)
        query = query.order_by(Pipeline.created_at.desc(), Pipeline.number.desc())
        with self._read() as s:
            return [pipeline_record(r) for r in s.scalars(query.limit(limit).offset(offset))]

    def get_pipeline(self, pipeline_id: str) -> PipelineRecord | None:
        """One pipeline by id."""
        with self._read() as s:
            row = s.get(Pipeline, pipeline_id)
            return pipeline_record(row) if row else None

    def pipeline_by_number(self, project: str, number: int) -> PipelineRecord | None:
        """The newest pipeline of ``project`` with ``number``."""
        query = (
            select(Pipeline)
            .where(Pipeline.project == project, Pipeline.number == number)
            .order_by(Pipeline.created_at.desc())
        )
        with self._read() as s:
            row = s.scalars(query.limit(1)).first()
            return pipeline_record(row) if row else None

    def projects(self) -> list[str]:
        """Every known project slug, sorted."""
        with self._read() as s:
            return list(s.scalars(select(Project.slug).order_by(Project.slug)))

    def workflows(self, pipeline_id: str) -> list[WorkflowRecord]:
        """The pipeline's workflows in start order."""
        query = (
            select(Workflow)
            .where(Workflow.pipeline_id == pipeline_id)
            .order_by(Workflow.created_at, Workflow.name)
        )
        with self._read() as s:
            return [workflow_record(r) for r in s.scalars(query)]

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """One workflow by id."""
        with self._read() as s:
            row = s.get(Workflow, workflow_id)
            return workflow_record(row) if row else None

    def jobs(self, workflow_id: str) -> list[JobRecord]:
        """The workflow's jobs (parallel nodes each a row) in creation order."""
        query = (
            select(Job)
            .where(Job.workflow_id == workflow_id)
            .order_by(Job.created_at, Job.name, Job.node_index)
        )
        with self._read() as s:
            return [job_record(r) for r in s.scalars(query)]

    def job(self, job_id: str) -> JobRecord | None:
        """One job by id."""
        with self._read() as s:
            row = s.get(Job, job_id)
            return job_record(row) if row else None

    def jobs_by_id_prefix(self, prefix: str, limit: int = 10) -> list[JobRecord]:
        """Jobs whose id starts with ``prefix`` (for short ids typed by people)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = select(Job).where(Job.id.like(escaped + "%", escape="\\")).order_by(Job.id)
        with self._read() as s:
            return [job_record(r) for r in s.scalars(query.limit(limit))]

    def jobs_by_build_num(self, project: str | None, build_num: int) -> list[JobRecord]:
        """Every node of build ``build_num`` (of ``project``, or of any project)."""
        query = select(Job).where(Job.build_num == build_num)
        if project is not None:
            query = query.where(Job.project == project)
        query = query.order_by(Job.project, Job.node_index, Job.created_at)
        with self._read() as s:
            return [job_record(r) for r in s.scalars(query)]

    def job_by_build_num(self, project: str, build_num: int) -> JobRecord | None:
        """Build ``build_num`` of ``project`` (its first node if parallel)."""
        found = self.jobs_by_build_num(project, build_num)
        return found[0] if found else None

    def steps(self, job_id: str) -> list[StepRecord]:
        """The job's steps in display order."""
        query = select(Step).where(Step.job_id == job_id).order_by(Step.step_index)
        with self._read() as s:
            return [step_record(r) for r in s.scalars(query)]

    def step_output(self, job_id: str, index: int) -> str:
        """The step's whole output so far (masked at the source), unflushed part included."""
        query = (
            select(StepOutput.text)
            .where(StepOutput.job_id == job_id, StepOutput.step_index == index)
            .order_by(StepOutput.id)
        )
        with self._write_lock:  # no flush may move chunks between our two reads
            with self._read() as s:
                written = "".join(s.scalars(query))
            with self._buffer_lock:
                pending = "".join(c.text for c in self._buffer.get((job_id, index), ()))
        return written + pending

    def test_cases(self, job_id: str) -> list[TestCaseRecord]:
        """The job's recorded test cases in the order they were stored."""
        query = select(TestCaseRow).where(TestCaseRow.job_id == job_id).order_by(TestCaseRow.id)
        with self._read() as s:
            return [
                TestCaseRecord(
                    job_id=r.job_id,
                    classname=r.classname,
                    name=r.name,
                    file=r.file,
                    result=r.result,
                    time=r.time,
                    message=r.message,
                )
                for r in s.scalars(query)
            ]

    def artifacts(self, job_id: str) -> list[ArtifactRecord]:
        """The job's artifacts, by node then path."""
        query = (
            select(Artifact)
            .where(Artifact.job_id == job_id)
            .order_by(Artifact.node_index, Artifact.path, Artifact.id)
        )
        with self._read() as s:
            return [
                ArtifactRecord(
                    job_id=r.job_id,
                    path=r.path,
                    digest=r.digest,
                    size=r.size,
                    node_index=r.node_index,
                    created_at=r.created_at,
                )
                for r in s.scalars(query)
            ]

    def test_timing_table(self, project: str, job_name: str) -> dict[str, dict[str, float]]:
        """Seconds per ``filename``, ``classname`` and ``testname`` from the newest
        finished (success or failed) run of ``job_name`` that recorded tests; all
        parallel nodes of that run are summed. Empty tables if there is none."""
        table: dict[str, dict[str, float]] = {"filename": {}, "classname": {}, "testname": {}}
        has_tests = select(TestCaseRow.id).where(TestCaseRow.job_id == Job.id).exists()
        newest = (
            select(Job.workflow_id)
            .where(
                Job.project == project,
                Job.name == job_name,
                Job.status.in_(FINISHED_JOB),
                has_tests,
            )
            .order_by(Job.started_at.desc(), Job.created_at.desc())
            .limit(1)
        )
        with self._read() as s:
            workflow_id = s.scalars(newest).first()
            if workflow_id is None:
                return table
            job_ids = select(Job.id).where(
                Job.workflow_id == workflow_id,
                Job.name == job_name,
                Job.status.in_(FINISHED_JOB),
            )
            for kind, column in (
                ("filename", TestCaseRow.file),
                ("classname", TestCaseRow.classname),
                ("testname", TestCaseRow.name),
            ):
                query = (
                    select(column, func.sum(TestCaseRow.time))
                    .where(TestCaseRow.job_id.in_(job_ids), column != "")
                    .group_by(column)
                )
                table[kind] = {str(k): float(v or 0.0) for k, v in s.execute(query)}
        return table

    def test_timings(self, project: str, job_name: str) -> dict[str, float]:
        """Seconds per test file and per classname (one flat dict, files first
        on a clash) of the newest recorded run: ``RecordsReader.test_timings``."""
        table = self.test_timing_table(project, job_name)
        return {**table["classname"], **table["filename"]}

    def mark_interrupted(
        self,
        pipeline_ids: Iterable[str] | None = None,
        *,
        before: float | None = None,
        reason: str = "interrupted: circlet stopped before the job finished",
    ) -> int:
        """Mark rows still ``running``/``queued`` as ``canceled`` (jobs, steps,
        workflows, pipelines) after a crash. Limit it to ``pipeline_ids`` or to rows
        created ``before`` a time when other processes may be running pipelines.
        Returns the number of jobs changed."""
        at = time.time()
        with self._write() as conn:
            pipelines = select(Pipeline.id).where(Pipeline.status.in_(ACTIVE))
            if pipeline_ids is not None:
                pipelines = pipelines.where(Pipeline.id.in_(list(pipeline_ids)))
            if before is not None:
                pipelines = pipelines.where(Pipeline.created_at < before)
            ids = list(conn.execute(pipelines).scalars())
            if not ids:
                return 0
            workflows = select(Workflow.id).where(Workflow.pipeline_id.in_(ids))
            jobs = select(Job.id).where(Job.workflow_id.in_(workflows))
            conn.execute(
                update(Step)
                .where(Step.job_id.in_(jobs), Step.status == "running")
                .values(status="canceled", stopped_at=at, reason=reason)
            )
            changed = conn.execute(
                update(Job)
                .where(Job.workflow_id.in_(workflows), Job.status.in_(ACTIVE))
                .values(status="canceled", stopped_at=at, reason=reason)
            ).rowcount
            conn.execute(
                update(Workflow)
                .where(Workflow.pipeline_id.in_(ids), Workflow.status.in_(ACTIVE))
                .values(status="canceled", stopped_at=at)
            )
            conn.execute(
                update(Pipeline)
                .where(Pipeline.id.in_(ids))
                .values(status="canceled", stopped_at=at)
            )
        return int(changed)


def _satisfies_records_reader(store: RecordStore) -> RecordsReader:
    """Type check only: a RecordStore is what the engine's ``RecordsReader`` asks for."""
    return store
