"""The runner side of :class:`~circlet.cluster.store.ClusterStore`, for the
server API (:mod:`circlet.cluster.server_api`): a runner claims a queued job,
keeps its lease with heartbeats, sends its events in numbered batches and its
result; and what it may reach through the blob API while it runs one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, update
from sqlalchemy.orm import Session

from circlet.cluster.models import DispatchEvent, DispatchJob
from circlet.cluster.store_base import CHANNEL, ClusterStoreBase, RefusedError, event_rows
from circlet.cluster.tokens import RunnerInfo
from circlet.cluster.wire import event_from_dict
from circlet.engine import events as ev


@dataclass(frozen=True)
class Claim:
    """What a runner gets for a job it may run."""

    job_id: str
    attempt: int
    request: dict[str, Any]
    secrets: dict[str, str]
    lease_seconds: float
    heartbeat_seconds: float


class RunnerSide(ClusterStoreBase):
    """What a runner's requests do to its job's row."""

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
                    insert(DispatchEvent), event_rows(job_id, got[0] - len(events), events)
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


def _check_mine(row: DispatchJob, attempt: int, runner: RunnerInfo) -> DispatchJob:
    """``row`` if ``runner`` runs its ``attempt`` now; :class:`RefusedError` otherwise."""
    job_id = row.job_id
    if row.runner_id != runner.id or row.attempt != attempt:
        raise RefusedError(403, f"job {job_id} is not assigned to runner {runner.name!r}")
    if row.state != "running":
        why = row.reason if row.state == "done" and row.reason else row.state
        raise RefusedError(409, f"job {job_id} is no longer running here ({why})")
    return row
