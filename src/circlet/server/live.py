"""Live updates: the engine's events wake the server-sent-event streams.

:class:`Notifier` is an ``EventSink`` that turns events into keys
(``job:<id>`` for a job's steps and output, ``pipelines`` for anything that
changes a list) and wakes every asyncio waiter on those keys. The streams then
read what changed from the records, so a waiter that missed a wake-up loses
nothing: it only learns later (each stream also polls).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable

from circlet.engine import events as ev


class Notifier:
    """Thread-safe wake-ups for async waiters, keyed by strings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self.published = 0

    def publish(self, keys: Iterable[str]) -> None:
        """Wake everyone waiting on any of ``keys`` (callable from any thread)."""
        with self._lock:
            self.published += 1
            targets = {w for k in keys for w in self._waiters.get(k, ())}
        for loop, flag in targets:
            if not flag.is_set():
                # RuntimeError: the waiter's loop closed, it is gone.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(flag.set)

    async def wait(self, keys: Iterable[str], timeout: float) -> bool:
        """Wait until one of ``keys`` is published or ``timeout`` passes; True if woken."""
        loop = asyncio.get_running_loop()
        flag = asyncio.Event()
        entry = (loop, flag)
        keys = list(keys)
        with self._lock:
            for k in keys:
                self._waiters.setdefault(k, set()).add(entry)
        try:
            await asyncio.wait_for(flag.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                for k in keys:
                    waiters = self._waiters.get(k)
                    if waiters is not None:
                        waiters.discard(entry)
                        if not waiters:
                            del self._waiters[k]

    def sink(self, event: ev.Event) -> None:
        """The ``EventSink``: every event wakes its job's stream and the lists."""
        job_id = getattr(event, "job_id", None)
        keys = [f"job:{job_id}"] if job_id else []
        if not isinstance(event, ev.Output):
            keys.append("pipelines")
        self.publish(keys)
