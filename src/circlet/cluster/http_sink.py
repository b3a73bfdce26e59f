"""``HttpEventSink``: a running job's events, posted to the server in batches.

The JobRunner calls the sink synchronously; the sink only appends to a buffer,
so a slow or absent server never slows the job. A sender thread posts the
buffer in numbered batches, one at a time and in order, retrying each batch
(same number, same events) until the server takes it: a batch the server had
already stored before a connection broke is recognised by its number and not
stored twice. A server that refuses (the job was declared lost, the token
revoked) stops the sink and calls ``on_lost`` so the runner stops the job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from circlet.cluster.client import ApiClient, ServerError, UnreachableError
from circlet.cluster.wire import event_to_dict
from circlet.engine import events as ev

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.05  # seconds events gather before a batch goes: live enough
FIRST_FLUSH = 0.5  # seconds before a job's first batch goes: a short job's events all go
# with its result (one request, one transaction and one forwarding round per job, not three)
MAX_BATCH = 500  # events per request
GIVE_UP_AFTER = 3600.0  # seconds of unreachable server before the rest is dropped


class HttpEventSink:
    """An ``EventSink`` for one job copy (``attempt``) that posts to the server."""

    def __init__(
        self,
        client: ApiClient,
        job_id: str,
        attempt: int,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        first_flush: float = FIRST_FLUSH,
        max_batch: int = MAX_BATCH,
        give_up_after: float = GIVE_UP_AFTER,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.attempt = attempt
        self.flush_interval = flush_interval
        self.first_flush = first_flush
        self.max_batch = max_batch
        self.give_up_after = give_up_after
        self.on_lost = on_lost
        self.lost: str | None = None  # why the server stopped taking events
        self.batches = 0  # batches the server has taken
        self.delivered = 0  # events the server has taken
        self.finished = False  # the server has the job's result (``close(result)``)
        self._result: dict[str, Any] | None = None
        self._pending: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(
            target=self._send_loop, name=f"circlet-events-{job_id[:8]}", daemon=True
        )
        self._thread.start()

    def __call__(self, event: ev.Event) -> None:
        data = event_to_dict(event)
        with self._cond:
            if self.lost is not None:
                return
            self._pending.append(data)
            if len(self._pending) == 1 or len(self._pending) >= self.max_batch:
                self._cond.notify()

    def close(self, result: dict[str, Any] | None = None, timeout: float | None = None) -> bool:
        """Send what is buffered and stop; True if the server took every event.

        With ``result`` (the job's end) the last batch goes in the same request as
        the result: one round trip less per job."""
        with self._cond:
            self._closing = True
            self._result = result
            self._cond.notify()
        self._thread.join(timeout)
        with self._cond:
            return self.lost is None and not self._pending and not self._thread.is_alive()

    # ------------------------------------------------------------- sending

    def _next_batch(self) -> tuple[list[dict[str, Any]], bool] | None:
        """The next events to send and whether they are the last ones; None: done."""
        with self._cond:
            while not self._pending and not self._closing:
                self._cond.wait()
            if not self._closing and len(self._pending) < self.max_batch:
                # Let a burst of output gather into one request.
                wait = self.first_flush if self.batches == 0 else self.flush_interval
                deadline = time.monotonic() + wait
                while not self._closing and len(self._pending) < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            batch = list(self._pending[: self.max_batch])
            last = self._closing and len(batch) == len(self._pending)
            if not batch and not (last and self._result is not None):
                return None
            return batch, last

    def _send_loop(self) -> None:
        while True:
            found = self._next_batch()
            if found is None:
                return
            batch, last = found
            number = self.batches + 1
            try:
                if last and self._result is not None:
                    self._finish(batch, number)
                else:
                    self.client.call(
                        "POST",
                        f"/api/cluster/jobs/{self.job_id}/events",
                        json={"attempt": self.attempt, "batch": number, "events": batch},
                        retry_for=self.give_up_after,
                    )
            except (ServerError, UnreachableError) as exc:
                self._stop(str(exc))
                return
            with self._cond:
                del self._pending[: len(batch)]
                if batch:
                    self.batches = number
                    self.delivered += len(batch)
                if last and self._result is not None:
                    self.finished = True
                    return

    def _finish(self, batch: list[dict[str, Any]], number: int) -> None:
        body: dict[str, Any] = {"attempt": self.attempt, "result": self._result}
        if batch:
            body.update(batch=number, events=batch)
        self.client.call(
            "POST",
            f"/api/cluster/jobs/{self.job_id}/finish",
            json=body,
            retry_for=self.give_up_after,
        )

    def _stop(self, why: str) -> None:
        log.warning("cluster: job %s: events no longer accepted: %s", self.job_id, why)
        with self._cond:
            self.lost = why
            self._pending.clear()
        if self.on_lost is not None:
            self.on_lost(why)
