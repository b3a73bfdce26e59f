"""The scheduler side of :class:`~circlet.cluster.store.ClusterStore`, for
:mod:`circlet.cluster.dispatch`: enqueue a job copy, watch its row (or LISTEN for
changes on PostgreSQL), own and hand over the forwarding of its events, cancel,
abandon or requeue it, and forward its events to the scheduler's sink.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.orm import Session

from circlet.cluster.models import DispatchEvent, DispatchJob
from circlet.cluster.store_base import CHANNEL, OWNER_STALE, ClusterStoreBase
from circlet.cluster.wire import event_from_dict
from circlet.engine import events as ev


@dataclass(frozen=True)
class JobState:
    """What the dispatcher watches of one row."""

    job_id: str
    state: str
    attempt: int
    next_seq: int
    forwarded: int
    status: str | None
    reason: str | None
    owner: str | None
    result: str | None = None  # the JobResult as JSON, once done


@dataclass(frozen=True)
class Assignment:
    """Where a job copy ran (for the UI and tests)."""

    job_id: str
    name: str
    resource_class: str
    state: str
    attempt: int
    runner_name: str | None
    runner_host: str | None
    status: str | None
    reason: str | None
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dispatched:
    """A job copy as its row has it (what a restarted scheduler resumes from)."""

    job_id: str
    name: str
    workflow_id: str
    workflow_job_id: str
    node_index: int
    build_num: int | None
    queue: str
    task_id: str
    state: str
    status: str | None
    reason: str | None
    owner: str | None
    next_seq: int
    forwarded: int

    @property
    def handed_on(self) -> bool:
        """Done, and every event it reported is in the records."""
        return self.state == "done" and self.forwarded >= self.next_seq


class Listener:
    """LISTEN on the fleet's channel: :meth:`wait` returns when some job changed."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute(f"LISTEN {CHANNEL}")
        self.heard: set[str] = set()  # the jobs announced by the last :meth:`wait`

    def wait(self, timeout: float) -> bool:
        """True if a change was announced within ``timeout`` seconds (all pending ones
        are consumed into :attr:`heard`: one look at those rows serves them all)."""
        self.heard = {n.payload for n in self.conn.notifies(timeout=timeout, stop_after=1)}
        if self.heard:
            self.heard.update(n.payload for n in self.conn.notifies(timeout=0.001))
        return bool(self.heard)

    def close(self) -> None:
        self.conn.close()


class DispatchSide(ClusterStoreBase):
    """What the dispatcher (in the scheduler's process) does with the rows."""

    def listener(self) -> Listener | None:
        """A connection that hears row changes (PostgreSQL), or None: poll instead."""
        if self.engine.dialect.name != "postgresql":
            return None
        url = self.engine.url.set(drivername="postgresql")
        return Listener(url.render_as_string(hide_password=False))

    def enqueue(
        self,
        *,
        job_id: str,
        request: Mapping[str, Any],
        secrets: Mapping[str, str],
        resource_class: str,
        queue: str,
        max_attempts: int,
        owner: str,
    ) -> str:
        """Record a job copy as queued; return the Celery task id for its message."""
        identity = request["identity"]
        now = time.time()
        row = {
            "job_id": job_id,
            "resource_class": resource_class,
            "queue": queue,
            "name": str(identity["job_name"]),
            "project": str(identity["project"]),
            "workflow_id": str(identity["workflow_id"]),
            "workspace_id": identity.get("workflow_workspace_id"),
            "request": json.dumps(dict(request)),
            "secrets": self.sealer.seal(json.dumps(dict(secrets))) if secrets else None,
            "state": "queued",
            "attempt": 1,
            "max_attempts": max(1, max_attempts),
            "task_id": f"{job_id}.1",
            "cancel": False,
            "owner": owner,
            "owner_seen": now,
            "batches": 0,
            "next_seq": 0,
            "forwarded": 0,
            "created_at": now,
        }
        with self._writer.begin() as conn:  # Core: no ORM object to build and flush
            conn.execute(insert(DispatchJob).values(row))
        return str(row["task_id"])

    def states(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """The watched fields of ``job_ids`` (unknown ids are left out)."""
        if not job_ids:
            return {}
        query = select(
            DispatchJob.job_id,
            DispatchJob.state,
            DispatchJob.attempt,
            DispatchJob.next_seq,
            DispatchJob.forwarded,
            DispatchJob.status,
            DispatchJob.reason,
            DispatchJob.owner,
            case((DispatchJob.state == "done", DispatchJob.result), else_=None),
        ).where(DispatchJob.job_id.in_(list(job_ids)))
        with Session(self.engine) as s:
            return {r[0]: JobState(*r) for r in s.execute(query)}

    def dispatched(self, workflow_ids: Sequence[str]) -> list[Dispatched]:
        """Every job copy dispatched for these workflows."""
        if not workflow_ids:
            return []
        query = select(DispatchJob).where(DispatchJob.workflow_id.in_(list(workflow_ids)))
        with Session(self.engine) as s:
            return [_dispatched(row) for row in s.scalars(query)]

    def take_over(
        self, job_ids: Sequence[str], owner: str, *, from_anyone: bool = True
    ) -> dict[str, Dispatched]:
        """Make ``owner`` the one that forwards these jobs' events (a restarted
        scheduler: the dispatcher that sent them is gone). ``from_anyone=False``
        takes only rows nobody else forwards now (theirs went stale). The rows after."""
        if not job_ids:
            return {}
        now = time.time()
        ids = list(job_ids)
        with self._write() as s:
            change = update(DispatchJob).where(DispatchJob.job_id.in_(ids))
            if not from_anyone:
                change = change.where(
                    (DispatchJob.owner == owner)
                    | DispatchJob.owner.is_(None)
                    | (DispatchJob.owner_seen < now - OWNER_STALE)
                )
            s.execute(change.values(owner=owner, owner_seen=now))
            rows = s.scalars(select(DispatchJob).where(DispatchJob.job_id.in_(ids)))
            return {row.job_id: _dispatched(row) for row in rows}

    def let_go(self, job_ids: Sequence[str], owner: str) -> None:
        """Stop forwarding these jobs' events: the server's reaper adopts them at once."""
        if job_ids:
            with self._write() as s:
                s.execute(
                    update(DispatchJob)
                    .where(DispatchJob.job_id.in_(list(job_ids)), DispatchJob.owner == owner)
                    .values(owner_seen=0.0)
                )

    def touch_owner(self, owner: str, job_ids: Sequence[str]) -> None:
        """Say the dispatcher ``owner`` still forwards these jobs' events."""
        if job_ids:
            with self._write() as s:
                s.execute(
                    update(DispatchJob)
                    .where(DispatchJob.job_id.in_(list(job_ids)), DispatchJob.owner == owner)
                    .values(owner_seen=time.time())
                )

    def request_cancel(self, job_id: str) -> str:
        """Flag the job canceled; a job no runner took yet is done at once. Its state."""
        with self._write() as s:
            row = self._locked(s, job_id)
            row.cancel = True
            if row.state in ("queued", "retry"):
                self._done(row, "canceled", "canceled before a runner started it")
            self._notify(s, job_id)
            return row.state

    def abandon(self, job_id: str, status: str, reason: str) -> bool:
        """End a job no runner has started (its message could not be sent)."""
        with self._write() as s:
            row = self._locked(s, job_id)
            if row.state not in ("queued", "retry"):
                return False
            self._done(row, status, reason)
            self._notify(s, job_id)
            return True

    def requeue(self, job_id: str) -> tuple[int, str] | None:
        """Move a ``retry`` row back to queued as the next attempt: (attempt, task id)."""
        with self._write() as s:
            row = self._locked(s, job_id)
            if row.state != "retry":
                return None
            row.attempt += 1
            row.state = "queued"
            row.batches = 0
            row.runner_id = row.runner_name = row.runner_host = None
            row.lease_until = None
            row.task_id = f"{job_id}.{row.attempt}"
            self._notify(s, job_id)
            return row.attempt, row.task_id

    def forward(self, job_id: str, sink: ev.EventSink, owner: str) -> int:
        """Hand the job's new events to ``sink`` in order; the number handed on,
        -1 if ``owner`` no longer owns the job (another process adopted it)."""
        with Session(self.engine) as s:
            row = s.execute(
                select(
                    DispatchJob.owner,
                    DispatchJob.forwarded,
                    DispatchJob.state,
                    DispatchJob.next_seq,
                ).where(DispatchJob.job_id == job_id)
            ).first()
            if row is None or row.owner != owner:
                return -1
            start, state, total = row.forwarded, row.state, row.next_seq
            payloads = list(
                s.scalars(
                    select(DispatchEvent.payload)
                    .where(DispatchEvent.job_id == job_id, DispatchEvent.seq >= start)
                    .order_by(DispatchEvent.seq)
                )
            )
        if not payloads:
            if state == "done" and total:
                # Everything is handed on: the events' only copy now is in the records.
                with self._write() as s:
                    s.execute(delete(DispatchEvent).where(DispatchEvent.job_id == job_id))
            return 0
        # The sink writes records on other connections: no lock is held meanwhile
        # (SQLite has a single writer).
        for payload in payloads:
            sink(event_from_dict(json.loads(payload)))
        if self.flush_records is not None:
            self.flush_records()  # the output is in the records before ``forwarded`` moves
        end = start + len(payloads)
        with self._write() as s:
            moved = s.execute(
                update(DispatchJob)
                .where(
                    DispatchJob.job_id == job_id,
                    DispatchJob.owner == owner,
                    DispatchJob.forwarded == start,
                )
                .values(forwarded=end)
            ).rowcount  # type: ignore[attr-defined]
            if moved and state == "done" and end >= total:
                s.execute(delete(DispatchEvent).where(DispatchEvent.job_id == job_id))
        return len(payloads) if moved else -1

    def assignment(self, job_id: str) -> Assignment | None:
        """Where and how a job copy ran."""
        with Session(self.engine) as s:
            row = s.get(DispatchJob, job_id)
            if row is None:
                return None
            return Assignment(
                job_id=row.job_id,
                name=row.name,
                resource_class=row.resource_class,
                state=row.state,
                attempt=row.attempt,
                runner_name=row.runner_name,
                runner_host=row.runner_host,
                status=row.status,
                reason=row.reason,
                result=json.loads(row.result) if row.result else {},
            )


def _dispatched(row: DispatchJob) -> Dispatched:
    identity = json.loads(row.request).get("identity", {})
    build_num = identity.get("build_num")
    return Dispatched(
        job_id=row.job_id,
        name=row.name,
        workflow_id=row.workflow_id,
        workflow_job_id=str(identity.get("workflow_job_id") or row.job_id),
        node_index=int(identity.get("node_index") or 0),
        build_num=int(build_num) if build_num is not None else None,
        queue=row.queue,
        task_id=row.task_id,
        state=row.state,
        status=row.status,
        reason=row.reason,
        owner=row.owner,
        next_seq=row.next_seq,
        forwarded=row.forwarded,
    )
