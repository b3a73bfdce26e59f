"""``ClusterDispatcher``: the scheduler's :class:`~circlet.engine.dispatcher.Dispatcher`
for a fleet. A job whose ``resource_class`` is a runner class (``org/name``)
goes to that class's Celery queue; any other job runs in the local pool (or,
with ``default_queue``, on runners of the class ``default``).

For a remote job copy the dispatcher records it (:class:`ClusterStore`, with
its secrets sealed at rest), sends a ``{job_id, attempt}`` message, and waits
on the scheduler's pool thread until the job is done. A cancel of the pipeline
flags the job (the runner sees it in its next heartbeat and stops the job's
containers) and revokes the message. A lost runner's job comes back as failed
"runner lost" (from the server's reaper) or, with ``retries=1``, is sent once more.

One watcher thread reads, in one query, the rows PostgreSQL announced a change
of (LISTEN/NOTIFY; all the jobs this dispatcher waits for when no NOTIFY came
for a while) or, on SQLite, all of them every few milliseconds. One forwarder
thread hands the events runners report to each job's sink, in order (the same
sink, masking and id rewriting as a local job). A job's result goes back to
the scheduler as soon as its row is done, so the next job is sent while its
last events are still being recorded; before it ends the workflows the
scheduler waits for them (:meth:`ClusterDispatcher.drain`).

A restarted server resumes its workflows with a new dispatcher: :meth:`hold`
takes over the jobs the old one had sent (before the server's reaper would
adopt them), and a copy the scheduler marks ``RESUMED`` is waited for, its
remaining events forwarded, instead of being sent again.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from circlet.cluster.celery_app import close_celery, make_celery, revoke, send_job
from circlet.cluster.store import ClusterStore
from circlet.cluster.store_base import Sealer
from circlet.cluster.store_dispatch import Dispatched, JobState, Listener
from circlet.cluster.wire import DEFAULT_CLASS, queue_name, request_to_dict, runner_class
from circlet.engine import events as ev
from circlet.engine.dispatcher import RESUMED, DispatchContext, Dispatcher, LocalDispatcher
from circlet.engine.runner import JobRequest, JobResult, StepRecord
from circlet.plan import CheckoutStep, JobSpec
from circlet.store.api import BlobStore

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.02  # seconds between the watcher's queries (SQLite, no LISTEN)
LISTEN_TIMEOUT = 0.5  # seconds without a NOTIFY before the watcher looks anyway
OWNER_TOUCH = 1.0  # seconds between "still here" marks on the watched rows
FORWARD_ATTEMPTS = 20  # failed forwards of a job in a row (0.5 s apart) before letting go


@dataclass
class _Watch:
    """One job copy this dispatcher waits for and forwards the events of."""

    event: threading.Event  # set when ``state`` changed
    sink: ev.EventSink
    state: JobState | None = None
    forwarded: int = 0  # events handed to ``sink`` so far
    forwarding: bool = True  # False: a server's reaper adopted the job
    returned: bool = False  # the scheduler has the result: forward the rest, then drop it
    complete: bool = False  # done, and every event handed on
    failures: int = 0  # forwarding attempts that failed in a row


class ClusterDispatcher:
    """Runner-class jobs through Celery, the rest through ``local``. Thread-safe."""

    def __init__(
        self,
        store: ClusterStore,
        broker_url: str,
        *,
        queue_prefix: str = "circlet",
        default_queue: bool = False,
        retries: int = 0,
        poll_interval: float = POLL_INTERVAL,
        local: Dispatcher | None = None,
    ) -> None:
        self.store = store
        self.celery = make_celery(broker_url)
        self.queue_prefix = queue_prefix
        self.default_queue = default_queue
        self.retries = max(0, retries)
        self.poll_interval = poll_interval
        self.local = local or LocalDispatcher()
        self.id = f"dispatcher-{uuid.uuid4().hex[:12]}"
        self._watches: dict[str, _Watch] = {}
        self._held: set[str] = set()  # taken over at a restart, not waited for yet
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # forwarding to do, or done
        self._to_forward: set[str] = set()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._forwarder: threading.Thread | None = None
        self._packs: dict[tuple[str, str], tuple[str, str | None]] = {}

    # ------------------------------------------------------------ routing

    def resource_class(self, spec: JobSpec) -> str | None:
        """The runner class ``spec`` goes to, or None for the local pool."""
        found = runner_class(spec)
        if found is None and self.default_queue:
            return DEFAULT_CLASS
        return found

    def is_local(self, spec: JobSpec) -> bool:
        """True for jobs without a runner class (unless a default queue is used)."""
        return self.resource_class(spec) is None

    def __call__(self, request: JobRequest, ctx: DispatchContext) -> JobResult:
        """Run the copy locally or on a runner; block until it is done (its last
        events may still be on their way to ``ctx.sink``: :meth:`drain`)."""
        rc = self.resource_class(request.spec)
        if rc is None:
            return self.local(request, ctx)
        return self._remote(request, ctx, rc)

    def drain(self, job_ids: Sequence[str]) -> None:
        """Wait until every event of these (returned) job copies is handed on."""
        wanted = set(job_ids)
        with self._changed:
            while not self._closed.is_set():
                pending = [w for j, w in self._watches.items() if j in wanted and w.returned]
                if not pending:
                    return
                self._changed.wait(0.5)

    def hold(self, job_ids: Sequence[str]) -> dict[str, Dispatched]:
        """Take over jobs a previous scheduler sent (a server restart) and keep them
        ours until the resumed workflow waits for them (or :meth:`release`)."""
        taken = self.store.take_over(job_ids, self.id)
        with self._lock:
            self._held.update(taken)
            self._start_threads()
        self._wake.set()
        return taken

    def release(self, job_ids: Sequence[str]) -> None:
        """Give up held jobs (nothing will wait for them): the reaper forwards them."""
        with self._lock:
            self._held.difference_update(job_ids)
        self.store.let_go(job_ids, self.id)

    def close(self) -> None:
        """Stop the watcher and the forwarder; release the broker connections."""
        self._closed.set()
        self._wake.set()
        with self._changed:
            self._changed.notify_all()
        for thread in (self._thread, self._forwarder):
            if thread is not None:
                thread.join()
        close_celery(self.celery)

    # ------------------------------------------------------------- remote

    def _remote(self, request: JobRequest, ctx: DispatchContext, rc: str) -> JobResult:
        job_id = request.job_id
        queue = queue_name(self.queue_prefix, rc)
        if request.extra.get(RESUMED):
            found = self.store.take_over([job_id], self.id, from_anyone=False).get(job_id)
            if found is not None:
                return self._resumed(request, ctx, found)
            # Never sent before the restart: send it now.
            extra = {k: v for k, v in request.extra.items() if k != RESUMED}
            request = replace(request, extra=extra)
        payload: dict[str, Any] = request_to_dict(request)
        if request.repo is not None and request.commit and _checks_out(request.spec):
            digest, origin = self._pack(request.repo, request.commit, ctx.blobs)
            payload["repo_bundle"], payload["repo_origin"] = digest, origin
        task_id = self.store.enqueue(
            job_id=job_id,
            request=payload,
            secrets=request.secrets,
            resource_class=rc,
            queue=queue,
            max_attempts=1 + self.retries,
            owner=self.id,
        )
        watch = self._register(job_id, ctx.sink)
        ended = False
        try:
            try:
                send_job(self.celery, queue=queue, job_id=job_id, attempt=1, task_id=task_id)
            except Exception as exc:  # the broker stayed away through every retry
                reason = f"could not queue the job on {queue}: {exc}"
                if self.store.abandon(job_id, "infrastructure_fail", reason):
                    ctx.sink(ev.JobFinished(job_id, "infrastructure_fail", reason))
                    return JobResult(
                        "infrastructure_fail",
                        reason,
                        job_id=job_id,
                        node_index=request.identity.node_index,
                    )
            result = self._wait(request, ctx, watch, queue, task_id)
            ended = True
            return result
        finally:
            self._returned(job_id, ended)

    def _resumed(self, request: JobRequest, ctx: DispatchContext, found: Dispatched) -> JobResult:
        """Wait for a copy sent before a restart, forwarding what it still reports."""
        job_id = request.job_id
        watch = self._register(
            job_id, ctx.sink, forwarded=found.forwarded, forwarding=found.owner == self.id
        )
        with self._lock:
            self._held.discard(job_id)
        ended = False
        try:
            result = self._wait(request, ctx, watch, found.queue, found.task_id)
            ended = True
            return result
        finally:
            self._returned(job_id, ended)

    def _wait(
        self,
        request: JobRequest,
        ctx: DispatchContext,
        watch: _Watch,
        queue: str,
        task_id: str,
    ) -> JobResult:
        """Until the copy is done: cancel it when asked, send a retry when due. The
        forwarder hands its events on meanwhile (and its last ones after)."""
        job_id = request.job_id
        canceled = False
        while True:
            watch.event.wait(0.25)
            watch.event.clear()
            if ctx.cancel.is_set() and not canceled:
                canceled = True
                self.store.request_cancel(job_id)
                revoke(self.celery, task_id)
            state = watch.state
            if state is None:
                continue
            if state.state == "retry":
                again = self.store.requeue(job_id)
                if again is not None:
                    attempt, task_id = again
                    log.warning("cluster: job %s: runner lost, sending attempt %d", job_id, attempt)
                    send_job(
                        self.celery, queue=queue, job_id=job_id, attempt=attempt, task_id=task_id
                    )
            elif state.state == "done":
                if watch.forwarding and state.status == "canceled" and state.next_seq == 0:
                    # Nobody ran it: the only record of its end is ours to write.
                    ctx.sink(ev.JobFinished(job_id, "canceled", state.reason))
                return _result(request, state)

    # ------------------------------------------------------------ watching

    def _register(
        self, job_id: str, sink: ev.EventSink, *, forwarded: int = 0, forwarding: bool = True
    ) -> _Watch:
        watch = _Watch(threading.Event(), sink, forwarded=forwarded, forwarding=forwarding)
        with self._lock:
            self._watches[job_id] = watch
            self._start_threads()
        self._wake.set()
        return watch

    def _start_threads(self) -> None:
        """Start the watcher and the forwarder once (called with the lock held)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._watch_loop, name="circlet-dispatch-watch", daemon=True
            )
            self._thread.start()
        if self._forwarder is None:
            self._forwarder = threading.Thread(
                target=self._forward_loop, name="circlet-dispatch-forward", daemon=True
            )
            self._forwarder.start()

    def _returned(self, job_id: str, ended: bool) -> None:
        """The scheduler has the copy's result: drop the watch once every event is
        handed on (at once if it did not end: a failure to send or to wait)."""
        with self._changed:
            watch = self._watches.get(job_id)
            if watch is None:
                return
            watch.returned = True
            if not ended or watch.complete or not watch.forwarding:
                del self._watches[job_id]
                self._changed.notify_all()

    def _watch_loop(self) -> None:
        try:
            listener = self.store.listener()
        except Exception:  # no LISTEN connection: polling works too
            log.warning("cluster: cannot listen for job changes; polling", exc_info=True)
            listener = None
        try:
            self._watch(listener)
        finally:
            if listener is not None:
                listener.close()

    def _watch(self, listener: Listener | None) -> None:
        touched = 0.0
        heard: set[str] | None = None  # the jobs a NOTIFY named; None: look at every one
        while not self._closed.is_set():
            with self._lock:
                ids = list(self._watches)
                held = list(self._held)
            if not ids and not held:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                # Only the rows a NOTIFY named changed: with many jobs in flight each
                # wake-up reads one or two rows, not all of them.
                states = self.store.states(ids if heard is None else sorted(heard & set(ids)))
                now = time.monotonic()
                if now - touched > OWNER_TOUCH:
                    self.store.touch_owner(self.id, ids + held)
                    touched = now
            except Exception:  # the database may be restarting: try again shortly
                log.warning("cluster: could not read job states", exc_info=True)
                heard = None
                self._closed.wait(0.5)
                continue
            self._seen(states)
            heard = None
            if listener is None:
                self._closed.wait(self.poll_interval)
                continue
            try:
                # A NOTIFY wakes us at once; the timeout (a full look) covers a lost one.
                if listener.wait(LISTEN_TIMEOUT):
                    heard = set(listener.heard)
            except Exception:
                log.warning("cluster: lost the LISTEN connection; polling", exc_info=True)
                listener.close()
                listener = None

    def _seen(self, states: dict[str, JobState]) -> None:
        """New row states: wake their waiters; queue what has events to hand on."""
        with self._changed:
            queued = False
            for job_id, state in states.items():
                watch = self._watches.get(job_id)
                if watch is None:
                    continue
                if state != watch.state:
                    watch.state = state
                    watch.event.set()
                # Once done, one more pass removes the handed-on events from the table.
                if (
                    watch.forwarding
                    and not watch.complete
                    and (state.next_seq > watch.forwarded or state.state == "done")
                ):
                    self._to_forward.add(job_id)
                    queued = True
            if queued:
                self._changed.notify_all()

    def _forward_loop(self) -> None:
        """Hand the watched jobs' new events to their sinks, in order, one job at a time
        (the scheduler's pool threads only wait; a job's slot frees when it ends)."""
        while True:
            with self._changed:
                while not self._to_forward and not self._closed.is_set():
                    self._changed.wait()
                if self._closed.is_set():
                    return
                todo = [(j, self._watches.get(j)) for j in sorted(self._to_forward)]
                self._to_forward.clear()
            for job_id, watch in todo:
                if watch is not None:
                    self._forward(job_id, watch)

    def _forward(self, job_id: str, watch: _Watch) -> None:
        state = watch.state  # read before forwarding: done is final
        try:
            moved = self.store.forward(job_id, watch.sink, self.id)
        except Exception:  # the database may be restarting: try again shortly
            log.warning("cluster: could not forward job %s's events", job_id, exc_info=True)
            self._closed.wait(0.5)
            with self._changed:
                watch.failures += 1
                if watch.failures < FORWARD_ATTEMPTS:
                    self._to_forward.add(job_id)
                    return
                # Let go: the server's reaper adopts the job once we stop marking it ours.
                log.exception("cluster: job %s: giving its events to the reaper", job_id)
                watch.forwarding = False
                if watch.returned:
                    self._watches.pop(job_id, None)
                self._changed.notify_all()
            return
        with self._changed:
            watch.failures = 0
            if moved < 0:  # adopted by a server's reaper: it forwards from now on
                watch.forwarding = False
            else:
                watch.forwarded += moved
            if state is not None and state.state == "done" and watch.forwarded >= state.next_seq:
                watch.complete = True
            if (watch.complete or not watch.forwarding) and watch.returned:
                self._watches.pop(job_id, None)
            self._changed.notify_all()

    # ---------------------------------------------------------------- code

    def _pack(self, repo: Path, commit: str, blobs: BlobStore) -> tuple[str, str | None]:
        """The blob digest of a git pack with ``commit`` and its history (once per commit)."""
        from circlet.engine import gitsnapshot

        top = gitsnapshot.find_repo(repo)
        key = (str(top), commit)
        with self._lock:
            known = self._packs.get(key)
        if known is not None:
            return known
        proc = subprocess.run(
            ["git", "pack-objects", "--stdout", "--revs"],
            cwd=top,
            input=f"{commit}\n".encode(),
            capture_output=True,
            check=False,
            timeout=600,
        )
        if proc.returncode != 0:
            message = proc.stderr.decode("utf-8", "replace").strip()
            raise RuntimeError(f"could not pack commit {commit[:12]} of {top}: {message}")
        digest, _ = blobs.put_blob(io.BytesIO(proc.stdout))
        found = (digest, gitsnapshot.origin_url(top))
        with self._lock:
            self._packs[key] = found
        return found


def fleet_dispatcher(
    records: Any,
    sealer: Sealer,
    *,
    broker_url: str | None = None,
    queue_prefix: str = "circlet",
    retries: int = 0,
) -> ClusterDispatcher | None:
    """The server's dispatcher: a ClusterDispatcher on ``records``' database when a
    broker is configured (``broker_url`` or ``$CIRCLET_BROKER_URL``), else None (every
    job in the local pool). Pass it to ``run_pipeline(dispatcher=…)``; close it at exit."""
    from circlet import settings

    url = broker_url if broker_url is not None else settings.BROKER_URL.get()
    if not url:
        return None
    store = ClusterStore(records, sealer)
    return ClusterDispatcher(store, url, queue_prefix=queue_prefix, retries=retries)


def _result(request: JobRequest, state: JobState) -> JobResult:
    """The copy's result from its done row (the runner's JobResult as JSON)."""
    data: dict[str, Any] = json.loads(state.result) if state.result else {}
    status = str(data.get("status") or state.status or "infrastructure_fail")
    return JobResult(
        status,  # type: ignore[arg-type]
        data.get("reason", state.reason),
        steps=[StepRecord(**s) for s in data.get("steps") or ()],
        seconds=float(data.get("seconds") or 0.0),
        job_id=request.job_id,
        node_index=request.identity.node_index,
    )


def _checks_out(spec: JobSpec) -> bool:
    return any(isinstance(step, CheckoutStep) for step in spec.steps)
