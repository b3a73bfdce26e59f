"""What every side of :class:`~circlet.cluster.store.ClusterStore` shares: the
settings of a lease, the secret sealer, the refusal a runner gets, and the base
class holding the engine, its transactions and row locks, and the two changes
every side makes to a job's row (events appended, the job done).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from circlet.cluster.models import DispatchEvent, DispatchJob
from circlet.cluster.tokens import engine_of
from circlet.cluster.wire import event_to_dict
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


class ClusterStoreBase:
    """The fleet's tables on the records engine: the parts every side uses."""

    def __init__(
        self,
        records_or_engine: Any,
        sealer: Sealer,
        *,
        lease_seconds: float = DEFAULT_LEASE,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT,
    ) -> None:
        self.engine: Engine = engine_of(records_or_engine)
        # The records buffer step output for a moment: forwarding writes it out
        # before it counts events as handed on (a crash must not lose them).
        self.flush_records: Callable[[], None] | None = getattr(records_or_engine, "flush", None)
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

    def _locked(self, session: Session, job_id: str) -> DispatchJob:
        row = session.get(DispatchJob, job_id, with_for_update=True)
        if row is None:
            raise RefusedError(404, f"job {job_id} is not a dispatched job")
        return row

    def _add_events(self, s: Session, row: DispatchJob, events: Iterable[ev.Event]) -> None:
        rows = event_rows(row.job_id, row.next_seq, list(events))
        if rows:
            # One executemany, not an ORM object per event (a job's whole output
            # arrives with its result).
            s.execute(insert(DispatchEvent), rows)
        row.next_seq += len(rows)

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


def event_rows(job_id: str, start: int, events: Sequence[ev.Event]) -> list[dict[str, Any]]:
    """``events`` as rows of ``cluster_events``, numbered from ``start``."""
    rows: list[dict[str, Any]] = []
    for seq, event in enumerate(events, start):
        data = event_to_dict(event)
        rows.append(
            {"job_id": job_id, "seq": seq, "kind": str(data["kind"]), "payload": json.dumps(data)}
        )
    return rows
