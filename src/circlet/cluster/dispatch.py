"""``ClusterDispatcher``: the scheduler's :class:`~circlet.engine.scheduler.Dispatcher`
for a fleet. A job whose ``resource_class`` is a runner class (``org/name``)
goes to that class's Celery queue; any other job runs in the local pool (or,
with ``default_queue``, on runners of the class ``default``).

For a remote job copy the dispatcher records it (:class:`ClusterStore`, with
its secrets sealed at rest), sends a ``{job_id, attempt}`` message, and then,
on the scheduler's pool thread, hands the events the runner reports to the
scheduler's sink in order (the same sink, masking and id rewriting as a local
job) until the job is done. A cancel of the pipeline flags the job (the runner
sees it in its next heartbeat and stops the job's containers) and revokes the
message. A lost runner's job comes back as failed "runner lost" (from the
server's reaper) or, with ``retries=1``, is sent once more.

One watcher thread reads, in one query, the rows PostgreSQL announced a change
of (LISTEN/NOTIFY; all the jobs this dispatcher waits for when no NOTIFY came
for a while) or, on SQLite, all of them every few milliseconds.
"""

from __future__ import annotations

import io
import logging
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circlet.cluster.celery_app import make_celery, revoke, send_job
from circlet.cluster.store import ClusterStore, JobState, Listener, Sealer
from circlet.cluster.wire import DEFAULT_CLASS, queue_name, request_to_dict, runner_class
from circlet.engine import events as ev
from circlet.engine.runner import JobRequest, JobResult, StepRecord
from circlet.engine.scheduler import DispatchContext, Dispatcher, LocalDispatcher
from circlet.plan import CheckoutStep, JobSpec
from circlet.store.api import BlobStore

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.02  # seconds between the watcher's queries (SQLite, no LISTEN)
LISTEN_TIMEOUT = 0.5  # seconds without a NOTIFY before the watcher looks anyway
OWNER_TOUCH = 1.0  # seconds between "still here" marks on the watched rows


@dataclass
class _Watch:
    event: threading.Event
    state: JobState | None = None


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
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
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
        """Run the copy locally or on a runner; block until it is done."""
        rc = self.resource_class(request.spec)
        if rc is None:
            return self.local(request, ctx)
        return self._remote(request, ctx, rc)

    def close(self) -> None:
        """Stop the watcher and release the broker connections."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.celery.close()

    # ------------------------------------------------------------- remote

    def _remote(self, request: JobRequest, ctx: DispatchContext, rc: str) -> JobResult:
        job_id = request.job_id
        queue = queue_name(self.queue_prefix, rc)
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
        watch = self._register(job_id)
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
            return self._wait(request, ctx, watch, queue, task_id)
        finally:
            self._unregister(job_id)

    def _wait(
        self,
        request: JobRequest,
        ctx: DispatchContext,
        watch: _Watch,
        queue: str,
        task_id: str,
    ) -> JobResult:
        job_id = request.job_id
        forwarded = 0
        forwarding = True
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
            if forwarding and (state.next_seq > forwarded or state.state == "done"):
                moved = self.store.forward(job_id, ctx.sink, self.id)
                if moved < 0:  # adopted by a server's reaper: it forwards from now on
                    forwarding = False
                else:
                    forwarded += moved
            if state.state == "retry":
                again = self.store.requeue(job_id)
                if again is not None:
                    attempt, task_id = again
                    log.warning("cluster: job %s: runner lost, sending attempt %d", job_id, attempt)
                    send_job(
                        self.celery, queue=queue, job_id=job_id, attempt=attempt, task_id=task_id
                    )
            elif state.state == "done" and (not forwarding or forwarded >= state.next_seq):
                if forwarding and state.status == "canceled" and forwarded == 0:
                    # Nobody ran it: the only record of its end is ours to write.
                    ctx.sink(ev.JobFinished(job_id, "canceled", state.reason))
                return self._result(request)

    def _result(self, request: JobRequest) -> JobResult:
        found = self.store.assignment(request.job_id)
        data = found.result if found is not None else {}
        status = str(data.get("status") or (found.status if found else "infrastructure_fail"))
        return JobResult(
            status,  # type: ignore[arg-type]
            data.get("reason"),
            steps=[StepRecord(**s) for s in data.get("steps") or ()],
            seconds=float(data.get("seconds") or 0.0),
            job_id=request.job_id,
            node_index=request.identity.node_index,
        )

    # ------------------------------------------------------------ watching

    def _register(self, job_id: str) -> _Watch:
        watch = _Watch(threading.Event())
        with self._lock:
            self._watches[job_id] = watch
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch_loop, name="circlet-dispatch-watch", daemon=True
                )
                self._thread.start()
        self._wake.set()
        return watch

    def _unregister(self, job_id: str) -> None:
        with self._lock:
            self._watches.pop(job_id, None)

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
            if not ids:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                # Only the rows a NOTIFY named changed: with many jobs in flight each
                # wake-up reads one or two rows, not all of them.
                states = self.store.states(ids if heard is None else sorted(heard & set(ids)))
                now = time.monotonic()
                if now - touched > OWNER_TOUCH:
                    self.store.touch_owner(self.id, ids)
                    touched = now
            except Exception:  # the database may be restarting: try again shortly
                log.warning("cluster: could not read job states", exc_info=True)
                heard = None
                self._closed.wait(0.5)
                continue
            with self._lock:
                for job_id, state in states.items():
                    watch = self._watches.get(job_id)
                    if watch is not None and state != watch.state:
                        watch.state = state
                        watch.event.set()
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


def _checks_out(spec: JobSpec) -> bool:
    return any(isinstance(step, CheckoutStep) for step in spec.steps)
