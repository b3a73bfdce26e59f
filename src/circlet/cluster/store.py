"""The fleet's shared state in SQL: every dispatched job copy, its lease, its events.

A job copy's row moves ``queued → running → done`` (or ``running → retry →
queued`` once, when a lost runner's job may be retried). The scheduler side
(:mod:`circlet.cluster.dispatch`) enqueues, watches and forwards events; the
server API (:mod:`circlet.cluster.server_api`) records claims, heartbeats,
event batches and results for runners; the reaper (:mod:`circlet.cluster.reaper`)
fails jobs whose lease expired. Each change is one transaction: the runner's
usual requests (claim, heartbeat, the next batch of events, the result) are one
``UPDATE … WHERE <every condition> RETURNING`` (plus the events' INSERT), so two
runners never claim the same job and a batch is applied once however often it
is resent; when that UPDATE changes nothing, the row is read (locked, ``SELECT …
FOR UPDATE`` on PostgreSQL) to say why or to accept a resend.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine, case, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from circlet.cluster.models import DispatchEvent, DispatchJob
from circlet.cluster.tokens import RunnerInfo, engine_of
from circlet.cluster.wire import event_from_dict, event_to_dict
from circlet.engine import events as ev

DEFAULT_LEASE = 15.0  # seconds a running job stays assigned without a heartbeat
DEFAULT_HEARTBEAT = 3.0  # seconds between a runner's heartbeats
OWNER_STALE = 10.0  # seconds after which a silent dispatcher's jobs are adopted
LOST = "runner lost"
CHANNEL = "circlet_cluster"  # PostgreSQL NOTIFY channel: a job's row changed


class Sealer(Protocol):
    """Encrypts secrets at rest (``store.accounts.SecretBox`` is one)."""

    def seal(self, value: str) -> str: ...

    def open(self, token: str) -> str: ...


class RefusedError(Exception):
    """A runner request the job's state does not allow; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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
class Claim:
    """What a runner gets for a job it may run."""

    job_id: str
    attempt: int
    request: dict[str, Any]
    secrets: dict[str, str]
    lease_seconds: float
    heartbeat_seconds: float


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


class ClusterStore:
    """The fleet's tables on the records engine. Thread-safe; one per process."""

    def __init__(
        self,
        records_or_engine: Any,
        sealer: Sealer,
        *,
        lease_seconds: float = DEFAULT_LEASE,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT,
    ) -> None:
        self.engine: Engine = engine_of(records_or_engine)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self.sealer = sealer
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def _notify(self, session: Session, job_id: str) -> None:
        """Wake the dispatcher waiting for ``job_id`` (PostgreSQL; sent at commit)."""
        if self.engine.dialect.name == "postgresql":
            session.execute(text("SELECT pg_notify(:c, :j)"), {"c": CHANNEL, "j": job_id})

    def listener(self) -> Listener | None:
        """A connection that hears row changes (PostgreSQL), or None: poll instead."""
        if self.engine.dialect.name != "postgresql":
            return None
        url = self.engine.url.set(drivername="postgresql")
        return Listener(url.render_as_string(hide_password=False))

    def _locked(self, session: Session, job_id: str) -> DispatchJob:
        row = session.get(DispatchJob, job_id, with_for_update=True)
        if row is None:
            raise RefusedError(404, f"job {job_id} is not a dispatched job")
        return row

    # ------------------------------------------------------- scheduler side

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

    # ---------------------------------------------------------- runner side

    def claim(self, job_id: str, attempt: int, runner: RunnerInfo, host: str) -> Claim:
        """Give the job to ``runner`` if it is queued and of one of its classes."""
        now = time.time()
        # One statement: the row changes only if every condition holds (two runners
        # racing: the second one's UPDATE waits for the first and then finds none).
        with self._writer.begin() as conn:
            got = conn.execute(
                update(DispatchJob)
                .where(
                    DispatchJob.job_id == job_id,
                    DispatchJob.state == "queued",
                    DispatchJob.attempt == attempt,
                    DispatchJob.resource_class.in_(list(runner.resource_classes)),
                )
                .values(
                    state="running",
                    runner_id=runner.id,
                    runner_name=runner.name,
                    runner_host=host,
                    claimed_at=now,
                    lease_until=now + self.lease_seconds,
                )
                .returning(DispatchJob.request, DispatchJob.secrets)
            ).first()
        # No NOTIFY: the dispatcher acts on events and ends, not on a start (one
        # wake-up and one look at every watched row less per job).
        if got is None:
            raise self._claim_refused(job_id, attempt, runner)
        request, sealed = got
        secrets = json.loads(self.sealer.open(sealed)) if sealed else {}
        return Claim(
            job_id=job_id,
            attempt=attempt,
            request=json.loads(request),
            secrets={str(k): str(v) for k, v in secrets.items()},
            lease_seconds=self.lease_seconds,
            heartbeat_seconds=self.heartbeat_seconds,
        )

    def _claim_refused(self, job_id: str, attempt: int, runner: RunnerInfo) -> RefusedError:
        """Why a claim changed nothing."""
        with Session(self.engine) as s:
            row = s.get(DispatchJob, job_id)
            if row is None:
                return RefusedError(404, f"job {job_id} is not a dispatched job")
            if row.resource_class not in runner.resource_classes:
                return RefusedError(
                    403,
                    f"runner token {runner.name!r} may not run jobs of "
                    f"resource class {row.resource_class!r}",
                )
        return RefusedError(409, f"job {job_id} attempt {attempt} is not waiting for a runner")

    def _mine(self, s: Session, job_id: str, attempt: int, runner: RunnerInfo) -> DispatchJob:
        return _check_mine(self._locked(s, job_id), attempt, runner)

    def _running_here(self, job_id: str, attempt: int, runner: RunnerInfo) -> Any:
        """The WHERE clause of a change only the runner running the job may make."""
        return (
            (DispatchJob.job_id == job_id)
            & (DispatchJob.runner_id == runner.id)
            & (DispatchJob.attempt == attempt)
            & (DispatchJob.state == "running")
        )

    def heartbeat(self, job_id: str, attempt: int, runner: RunnerInfo) -> bool:
        """Extend the lease; True if the job was canceled (the runner stops it)."""
        with self._writer.begin() as conn:
            got = conn.execute(
                update(DispatchJob)
                .where(self._running_here(job_id, attempt, runner))
                .values(lease_until=time.time() + self.lease_seconds)
                .returning(DispatchJob.cancel)
            ).first()
        if got is not None:
            return bool(got[0])
        with self._write() as s:  # not ours (any more): say why
            row = self._mine(s, job_id, attempt, runner)
            row.lease_until = time.time() + self.lease_seconds
            return bool(row.cancel)

    def append_events(
        self,
        job_id: str,
        attempt: int,
        runner: RunnerInfo,
        batch: int,
        events: Sequence[Mapping[str, Any]],
    ) -> bool:
        """Store batch number ``batch`` of the job's events; False if it was stored
        before (a resend after a lost response)."""
        checked = self._checked(job_id, events)
        if self._next_batch(job_id, attempt, runner, batch=batch, events=checked, values={}):
            return True
        # A resend, a skipped batch, or not ours: the careful way says which.
        with self._write() as s:
            row = self._mine(s, job_id, attempt, runner)
            stored = self._apply_batch(row, s, batch, checked)
            if stored:
                self._notify(s, job_id)
            return stored

    def finish(
        self,
        job_id: str,
        attempt: int,
        runner: RunnerInfo,
        result: Mapping[str, Any],
        *,
        batch: int | None = None,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Record the job's result, after its last batch of events if one comes along
        (one transaction); idempotent for the runner that ran it."""
        checked = self._checked(job_id, events)
        status = str(result.get("status") or "infrastructure_fail")
        done = {
            "state": "done",
            "status": status,
            "reason": result.get("reason"),
            "result": json.dumps(dict(result)),
            "finished_at": time.time(),
            "lease_until": None,
            "secrets": None,
        }
        if self._next_batch(job_id, attempt, runner, batch=batch, events=checked, values=done):
            return
        with self._write() as s:
            row = self._locked(s, job_id)
            if row.state == "done" and row.runner_id == runner.id and row.attempt == attempt:
                return
            # The row is locked already: check it, no second SELECT … FOR UPDATE.
            row = _check_mine(row, attempt, runner)
            if batch is not None:
                self._apply_batch(row, s, batch, checked)
            self._done(row, status, result.get("reason"), result)
            self._notify(s, job_id)

    def _next_batch(
        self,
        job_id: str,
        attempt: int,
        runner: RunnerInfo,
        *,
        batch: int | None,
        events: Sequence[ev.Event],
        values: Mapping[str, Any],
    ) -> bool:
        """The usual case in one transaction of two statements: the next batch of a
        job this runner runs (and ``values``: its end). False: nothing changed."""
        change: dict[str, Any] = dict(values)
        where = self._running_here(job_id, attempt, runner)
        if batch is not None:
            where = where & (DispatchJob.batches == batch - 1)
            change["next_seq"] = DispatchJob.next_seq + len(events)
            change["batches"] = batch
            change.setdefault("lease_until", time.time() + self.lease_seconds)
        elif not change:
            return False
        statement = update(DispatchJob).where(where).values(change).returning(DispatchJob.next_seq)
        if self.engine.dialect.name == "postgresql":  # wake the dispatcher (sent at commit)
            statement = statement.returning(func.pg_notify(CHANNEL, DispatchJob.job_id))
        with self._writer.begin() as conn:
            got = conn.execute(statement).first()
            if got is None:
                return False
            if events:
                conn.execute(
                    insert(DispatchEvent), _event_rows(job_id, got[0] - len(events), events)
                )
        return True

    def _checked(self, job_id: str, events: Sequence[Mapping[str, Any]]) -> list[ev.Event]:
        checked = [event_from_dict(e) for e in events]
        for event in checked:
            owner = getattr(event, "job_id", None)
            if owner != job_id:  # pipeline/workflow events are the scheduler's, not a runner's
                raise RefusedError(
                    403, f"a {event.kind} event of {owner} in a batch of job {job_id}"
                )
        return checked

    def _apply_batch(
        self, row: DispatchJob, s: Session, batch: int, checked: Sequence[ev.Event]
    ) -> bool:
        if batch <= row.batches:
            return False
        if batch != row.batches + 1:
            raise RefusedError(409, f"batch {batch} after batch {row.batches}: one was skipped")
        self._add_events(s, row, checked)
        row.batches = batch
        row.lease_until = time.time() + self.lease_seconds
        return True

    def job_scope(self, job_id: str, runner: RunnerInfo) -> tuple[str, set[str]]:
        """(project, workflow ids) a runner may reach through the blob API for a job
        it is running; :class:`RefusedError` otherwise."""
        with Session(self.engine) as s:
            row = s.get(DispatchJob, job_id)
            if row is None or row.runner_id != runner.id or row.state != "running":
                raise RefusedError(403, f"job {job_id} is not running on runner {runner.name!r}")
            workflows = {row.workflow_id} | ({row.workspace_id} if row.workspace_id else set())
            return row.project, workflows

    # ------------------------------------------------------------- reaping

    def renew_leases(self, now: float) -> int:
        """Give every running job a fresh lease (a server start: runners kept working)."""
        with self._write() as s:
            done = s.execute(
                update(DispatchJob)
                .where(DispatchJob.state == "running")
                .values(lease_until=now + self.lease_seconds)
            )
            return int(done.rowcount)  # type: ignore[attr-defined]

    def expired(self, now: float) -> list[str]:
        """Running jobs whose lease ran out, and retries nobody will send."""
        stale = now - OWNER_STALE
        with Session(self.engine) as s:
            running = select(DispatchJob.job_id).where(
                DispatchJob.state == "running", DispatchJob.lease_until < now
            )
            orphan_retries = select(DispatchJob.job_id).where(
                DispatchJob.state == "retry", DispatchJob.owner_seen < stale
            )
            return list(s.scalars(running)) + list(s.scalars(orphan_retries))

    def lose(self, job_id: str, now: float) -> str | None:
        """A lost runner's job: ``retry`` when allowed and someone will send it, else
        done as failed "runner lost" with its open steps closed. The new state."""
        with self._write() as s:
            row = self._locked(s, job_id)
            if row.state == "running" and (row.lease_until or 0) >= now:
                return None  # a heartbeat came in meanwhile
            if row.state not in ("running", "retry"):
                return None
            alive = (row.owner_seen or 0) >= now - OWNER_STALE
            who = row.runner_name or "the runner"
            if row.state == "running" and row.attempt < row.max_attempts and alive:
                note = f"\ncirclet: {LOST}: {who} stopped reporting; retrying the job\n"
                self._close_steps(s, row, note, status="canceled")
                row.state = "retry"
                self._notify(s, job_id)
                return row.state
            note = f"\ncirclet: {LOST}: {who} stopped reporting (no heartbeat)\n"
            self._close_steps(s, row, note, status="failed")
            status: ev.JobStatus = "canceled" if row.cancel else "failed"
            self._add_events(s, row, [ev.JobFinished(job_id, status, LOST)])
            self._done(row, status, LOST)
            self._notify(s, job_id)
            return row.state

    def adopt_orphans(self, owner: str, now: float) -> list[str]:
        """Take over forwarding for jobs whose dispatcher went silent (a scheduler
        that died: its runners' results must still reach the records)."""
        stale = now - OWNER_STALE
        with self._write() as s:
            ids = list(
                s.scalars(
                    select(DispatchJob.job_id).where(
                        DispatchJob.owner != owner,
                        DispatchJob.owner_seen < stale,
                        (DispatchJob.state != "done")
                        | (DispatchJob.next_seq > DispatchJob.forwarded),
                    )
                )
            )
            if ids:
                s.execute(
                    update(DispatchJob)
                    .where(DispatchJob.job_id.in_(ids), DispatchJob.owner_seen < stale)
                    .values(owner=owner, owner_seen=now)
                )
        return ids

    def owned(self, owner: str) -> list[str]:
        """Jobs whose events ``owner`` forwards and that are not fully handed on."""
        with Session(self.engine) as s:
            return list(
                s.scalars(
                    select(DispatchJob.job_id).where(
                        DispatchJob.owner == owner,
                        (DispatchJob.state != "done")
                        | (DispatchJob.next_seq > DispatchJob.forwarded),
                    )
                )
            )

    # ------------------------------------------------------------ helpers

    def _add_events(self, s: Session, row: DispatchJob, events: Iterable[ev.Event]) -> None:
        rows = _event_rows(row.job_id, row.next_seq, list(events))
        if rows:
            # One executemany, not an ORM object per event (a job's whole output
            # arrives with its result).
            s.execute(insert(DispatchEvent), rows)
        row.next_seq += len(rows)

    def _close_steps(self, s: Session, row: DispatchJob, note: str, *, status: str) -> None:
        """End the steps a lost runner left running (their output so far stays)."""
        marks = s.execute(
            select(DispatchEvent.kind, DispatchEvent.payload)
            .where(
                DispatchEvent.job_id == row.job_id,
                DispatchEvent.kind.in_(("step_started", "step_finished")),
            )
            .order_by(DispatchEvent.seq)
        )
        started = _open_steps(marks)
        # Forwarded events are deleted only once a job is done, so this sees them all.
        closing: list[ev.Event] = []
        for index in started:
            closing.append(ev.Output(row.job_id, index, note))
            closing.append(ev.StepFinished(row.job_id, index, status, None, LOST))  # type: ignore[arg-type]
        self._add_events(s, row, closing)

    def _done(
        self,
        row: DispatchJob,
        status: str,
        reason: str | None,
        result: Mapping[str, Any] | None = None,
    ) -> None:
        row.state = "done"
        row.status = status
        row.reason = reason
        row.result = json.dumps(dict(result or {"status": status, "reason": reason}))
        row.finished_at = time.time()
        row.lease_until = None
        row.secrets = None  # nobody needs them any more: do not keep them at rest


def _event_rows(job_id: str, start: int, events: Sequence[ev.Event]) -> list[dict[str, Any]]:
    """``events`` as rows of ``cluster_events``, numbered from ``start``."""
    rows: list[dict[str, Any]] = []
    for seq, event in enumerate(events, start):
        data = event_to_dict(event)
        rows.append(
            {"job_id": job_id, "seq": seq, "kind": str(data["kind"]), "payload": json.dumps(data)}
        )
    return rows


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


def _check_mine(row: DispatchJob, attempt: int, runner: RunnerInfo) -> DispatchJob:
    """``row`` if ``runner`` runs its ``attempt`` now; :class:`RefusedError` otherwise."""
    job_id = row.job_id
    if row.runner_id != runner.id or row.attempt != attempt:
        raise RefusedError(403, f"job {job_id} is not assigned to runner {runner.name!r}")
    if row.state != "running":
        why = row.reason if row.state == "done" and row.reason else row.state
        raise RefusedError(409, f"job {job_id} is no longer running here ({why})")
    return row


def _open_steps(marks: Iterable[Any]) -> list[int]:
    open_steps: dict[int, None] = {}
    for kind, payload in marks:
        index = int(json.loads(payload)["index"])
        if kind == "step_started":
            open_steps[index] = None
        else:
            open_steps.pop(index, None)
    return list(open_steps)
