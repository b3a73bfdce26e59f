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

The parts: :mod:`~circlet.cluster.store_base` (the engine, transactions, lease
settings), :mod:`~circlet.cluster.store_dispatch` (the scheduler side),
:mod:`~circlet.cluster.store_runner` (the runner side) and
:mod:`~circlet.cluster.store_reaping` (the reaper).
"""

from __future__ import annotations

from circlet.cluster.store_dispatch import DispatchSide
from circlet.cluster.store_reaping import ReapingSide
from circlet.cluster.store_runner import RunnerSide


class ClusterStore(DispatchSide, RunnerSide, ReapingSide):
    """The fleet's tables on the records engine. Thread-safe; one per process."""
