"""The fleet's tables, in the records database (SQLite or PostgreSQL).

``cluster_runner_tokens``  runner tokens (only a SHA-256 of each), bound to resource classes
``cluster_jobs``           one row per dispatched job copy: its queue, lease, runner, result
``cluster_events``         what the runner reported, in order, until the scheduler takes it

They are part of the records' schema (Alembic revision 0002, which a
RecordStore applies when it opens the database); :func:`ensure_schema` still
creates them on an engine nobody migrated. They hold queue state, not history.
"""

from __future__ import annotations

import threading
import weakref

from sqlalchemy import (
    JSON,
    Boolean,
    Engine,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

_SCHEMA_LOCK = 0x636C7573  # "clus": one process creates the tables at a time


class ClusterBase(DeclarativeBase):
    """The metadata of the fleet's tables (separate from the records' models)."""


class RunnerToken(ClusterBase):
    __tablename__ = "cluster_runner_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    resource_classes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_seen_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_host: Mapped[str | None] = mapped_column(String(200), nullable=True)


class DispatchJob(ClusterBase):
    __tablename__ = "cluster_jobs"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_class: Mapped[str] = mapped_column(String(200), index=True)
    queue: Mapped[str] = mapped_column(String(260))
    name: Mapped[str] = mapped_column(String(300))
    project: Mapped[str] = mapped_column(String(300))
    workflow_id: Mapped[str] = mapped_column(String(64))
    workspace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request: Mapped[str] = mapped_column(Text)  # wire.request_to_dict as JSON
    secrets: Mapped[str | None] = mapped_column(Text, nullable=True)  # sealed at rest
    state: Mapped[str] = mapped_column(String(16), index=True)  # queued|running|retry|done
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    task_id: Mapped[str] = mapped_column(String(100))
    runner_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    runner_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    runner_host: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    owner_seen: Mapped[float | None] = mapped_column(Float, nullable=True)
    batches: Mapped[int] = mapped_column(Integer, default=0)  # last batch applied (attempt)
    next_seq: Mapped[int] = mapped_column(Integer, default=0)  # events stored so far
    forwarded: Mapped[int] = mapped_column(Integer, default=0)  # events handed on so far
    status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)  # JobResult as JSON
    created_at: Mapped[float] = mapped_column(Float)
    claimed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class DispatchEvent(ClusterBase):
    __tablename__ = "cluster_events"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_cluster_events_job_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)


_ready: weakref.WeakSet[Engine] = weakref.WeakSet()
_ready_lock = threading.Lock()


def ensure_schema(engine: Engine) -> None:
    """Create the fleet's tables if missing (once per engine in a process)."""
    with _ready_lock:
        if engine in _ready:
            return
        with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
            ClusterBase.metadata.create_all(conn, checkfirst=True)
        _ready.add(engine)
