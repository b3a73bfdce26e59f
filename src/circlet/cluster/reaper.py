"""The server's periodic care of the fleet: lost runners and orphaned results.

:func:`reap_lost_jobs` ends every job whose runner stopped heartbeating (its
lease expired): failed with reason "runner lost", its partial log kept, or
marked for one retry when the dispatcher allows it. :class:`Reaper` runs it
every second in the server and also adopts the events of jobs whose
dispatcher died (a scheduler in a server that restarted), handing them to the
server's sink, so no result a runner delivered is lost.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from circlet.cluster.store import ClusterStore
from circlet.engine import events as ev

log = logging.getLogger(__name__)


def reap_lost_jobs(store: ClusterStore, now: float | None = None) -> list[tuple[str, str]]:
    """End or retry the jobs whose lease expired before ``now``; (job id, new state)."""
    now = time.time() if now is None else now
    changed: list[tuple[str, str]] = []
    for job_id in store.expired(now):
        state = store.lose(job_id, now)
        if state is not None:
            log.warning("cluster: job %s: runner lost (now %s)", job_id, state)
            changed.append((job_id, state))
    return changed


class Reaper:
    """A daemon thread: :func:`reap_lost_jobs` and orphan forwarding every ``interval``."""

    def __init__(self, store: ClusterStore, sink: ev.EventSink, *, interval: float = 1.0) -> None:
        self.store = store
        self.sink = sink
        self.interval = interval
        self.owner = f"reaper-{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Renew running leases (runners kept working while we were away), then run."""
        self.store.renew_leases(time.time())
        self._thread = threading.Thread(target=self._loop, name="circlet-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (waits for the current pass)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def tick(self) -> None:
        """One pass: reap, adopt orphans, forward what the adopted jobs reported."""
        now = time.time()
        reap_lost_jobs(self.store, now)
        self.store.adopt_orphans(self.owner, now)
        owned = self.store.owned(self.owner)
        self.store.touch_owner(self.owner, owned)
        for job_id in owned:
            self.store.forward(job_id, self.sink, self.owner)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # the database may be restarting: the next pass retries
                log.warning("cluster: reaper pass failed", exc_info=True)
