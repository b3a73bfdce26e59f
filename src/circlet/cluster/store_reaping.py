"""The reaper's side of :class:`~circlet.cluster.store.ClusterStore`, for
:mod:`circlet.cluster.reaper`: leases renewed at a server start, jobs whose lease
ran out (retried once, or failed "runner lost" with their open steps closed),
and jobs whose dispatcher went silent adopted so their events still reach the
records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from circlet.cluster.models import DispatchEvent, DispatchJob
from circlet.cluster.store_base import LOST, OWNER_STALE, ClusterStoreBase
from circlet.engine import events as ev


class ReapingSide(ClusterStoreBase):
    """What the reaper does to rows whose runner or dispatcher went silent."""

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


def _open_steps(marks: Iterable[Any]) -> list[int]:
    open_steps: dict[int, None] = {}
    for kind, payload in marks:
        index = int(json.loads(payload)["index"])
        if kind == "step_started":
            open_steps[index] = None
        else:
            open_steps.pop(index, None)
    return list(open_steps)
