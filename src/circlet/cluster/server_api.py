"""The server's side of the fleet: an ``APIRouter`` under ``/api/cluster`` and
:func:`install`, which mounts it on an app and starts the reaper.

Runners authenticate with ``Authorization: Bearer <runner token>``. A runner
registers (its classes must be a subset of its token's), claims a job it took
from its queue (refused unless the job's class is one of its token's and the
job is still queued), heartbeats while it runs it (the answer says whether it
was canceled), posts its events in numbered batches (a resent batch is
ignored) and finally its result. Secrets reach only the runner that claims a
job, sealed with a key derived from that runner's token. The blob routes
(:mod:`circlet.cluster.server_blobs`) serve caches, workspaces and artifacts
to runners for the jobs they run.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from circlet import settings as global_settings
from circlet.cluster import server_blobs
from circlet.cluster.reaper import Reaper
from circlet.cluster.store import ClusterStore
from circlet.cluster.store_base import DEFAULT_HEARTBEAT, DEFAULT_LEASE, RefusedError, Sealer
from circlet.cluster.tokens import RunnerInfo, lookup_token, touch_runner
from circlet.cluster.wire import WireError, seal_for_runner
from circlet.engine import events as ev
from circlet.store.api import BlobStore

TOKEN_CACHE_SECONDS = 2.0  # a revoked token is refused at most this long after revoking


@dataclass(frozen=True)
class ClusterSettings:
    """How the server runs the fleet."""

    lease_seconds: float = DEFAULT_LEASE
    heartbeat_seconds: float = DEFAULT_HEARTBEAT
    reap_interval: float = 1.0
    broker_url: str = field(default_factory=global_settings.BROKER_URL.get)  # told to runners
    queue_prefix: str = "circlet"
    work_dir: Path = field(
        default_factory=lambda: Path(global_settings.HOME.get()) / "cluster"
    )  # partial uploads and exported archives


class ClusterServer:
    """What the routes reach through ``app.state.cluster``."""

    def __init__(
        self,
        store: ClusterStore,
        blobs: BlobStore,
        *,
        records: Any,
        sink: ev.EventSink,
        settings: ClusterSettings,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.records = records
        self.settings = settings
        self.transfers = server_blobs.Transfers(blobs, settings.work_dir)
        self.reaper = Reaper(store, sink, interval=settings.reap_interval)
        self._tokens: dict[str, tuple[RunnerInfo | None, float]] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> RunnerInfo | None:
        """The active runner of ``token`` (cached for a moment: runners call often)."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._tokens.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        info = lookup_token(self.store.engine, token)
        with self._lock:
            self._tokens[key] = (info, now + TOKEN_CACHE_SECONDS)
        return info

    def timings(self, request: dict[str, Any]) -> dict[str, Any]:
        """Test timings for the job (``tests split --split-by=timings`` on the runner)."""
        table = getattr(self.records, "test_timing_table", None)
        if table is None:
            return {}
        identity = request.get("identity", {})
        return dict(table(str(identity.get("project")), str(identity.get("job_name"))))

    def close(self) -> None:
        """Stop the reaper."""
        self.reaper.stop()


def install(
    app: FastAPI,
    records: Any,
    blobs: BlobStore,
    tokens: ClusterStore | None = None,
    *,
    sealer: Sealer | None = None,
    sink: ev.EventSink | None = None,
    settings: ClusterSettings | None = None,
) -> ClusterServer:
    """Mount the fleet's API on ``app`` and start the reaper; call ``.close()`` at shutdown.

    ``records`` is the server's RecordStore; ``tokens`` the fleet's tables (built
    on ``records.engine`` with ``sealer``, the secrets-at-rest key, when None);
    ``sink`` receives the events of jobs whose scheduler is gone (default:
    ``records.sink``)."""
    settings = settings or ClusterSettings()
    if tokens is None:
        if sealer is None:
            raise ValueError("install() needs a ClusterStore or a sealer for secrets at rest")
        tokens = ClusterStore(
            records,
            sealer,
            lease_seconds=settings.lease_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
        )
    server = ClusterServer(
        tokens, blobs, records=records, sink=sink or records.sink, settings=settings
    )
    app.state.cluster = server
    app.include_router(router)
    server.reaper.start()
    return server


# ------------------------------------------------------------------ routes

router = APIRouter(prefix="/api/cluster", tags=["cluster"])


@dataclass(frozen=True)
class Caller:
    runner: RunnerInfo
    token: str
    server: ClusterServer


def caller(request: Request) -> Caller:
    """The runner making the request (a dependency): 401 without a valid token."""
    server: ClusterServer = request.app.state.cluster
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "A runner token is required (Authorization: Bearer …).")
    info = server.authenticate(token.strip())
    if info is None:
        raise HTTPException(401, "Unknown or revoked runner token.")
    return Caller(info, token.strip(), server)


class RegisterBody(BaseModel):
    resource_classes: list[str] = Field(min_length=1)
    host: str = ""
    concurrency: int = 1


class AttemptBody(BaseModel):
    attempt: int
    host: str = ""


class EventsBody(BaseModel):
    attempt: int
    batch: int
    events: list[dict[str, Any]]


class FinishBody(BaseModel):
    attempt: int
    result: dict[str, Any]
    batch: int | None = None  # the last batch of events, in the same request
    events: list[dict[str, Any]] = Field(default_factory=list)


def _refused(exc: RefusedError | WireError) -> HTTPException:
    if isinstance(exc, WireError):
        return HTTPException(400, str(exc))
    return HTTPException(exc.status, str(exc))


@router.post("/runners/register")
def register(body: RegisterBody, who: Caller = Depends(caller)) -> dict[str, Any]:  # noqa: B008
    """Check the classes a runner wants against its token; tell it how to work."""
    extra = sorted(set(body.resource_classes) - set(who.runner.resource_classes))
    if extra:
        allowed = ", ".join(who.runner.resource_classes)
        raise HTTPException(
            403,
            f"runner token {who.runner.name!r} is not allowed resource class "
            f"{extra[0]!r} (allowed: {allowed})",
        )
    touch_runner(who.server.store.engine, who.runner.id, body.host or None)
    cfg = who.server.settings
    return {
        "name": who.runner.name,
        "resource_classes": sorted(set(body.resource_classes)),
        "broker_url": cfg.broker_url,
        "queue_prefix": cfg.queue_prefix,
        "lease_seconds": cfg.lease_seconds,
        "heartbeat_seconds": cfg.heartbeat_seconds,
    }


@router.post("/jobs/{job_id}/claim")
def claim(job_id: str, body: AttemptBody, who: Caller = Depends(caller)) -> dict[str, Any]:  # noqa: B008
    """Give a queued job to the runner that took its message from the broker."""
    try:
        got = who.server.store.claim(job_id, body.attempt, who.runner, body.host)
    except RefusedError as exc:
        raise _refused(exc) from None
    return {
        "job_id": got.job_id,
        "attempt": got.attempt,
        "request": got.request,
        "secrets": seal_for_runner(who.token, got.secrets),
        "lease_seconds": got.lease_seconds,
        "heartbeat_seconds": got.heartbeat_seconds,
        "timings": who.server.timings(got.request),
    }


@router.post("/jobs/{job_id}/heartbeat")
def heartbeat(job_id: str, body: AttemptBody, who: Caller = Depends(caller)) -> dict[str, Any]:  # noqa: B008
    """Extend the job's lease; the answer says whether to cancel it."""
    try:
        cancel = who.server.store.heartbeat(job_id, body.attempt, who.runner)
    except RefusedError as exc:
        raise _refused(exc) from None
    return {"cancel": cancel}


@router.post("/jobs/{job_id}/events")
def post_events(job_id: str, body: EventsBody, who: Caller = Depends(caller)) -> dict[str, Any]:  # noqa: B008
    """Store one numbered batch of the job's events (a resent batch is ignored)."""
    try:
        stored = who.server.store.append_events(
            job_id, body.attempt, who.runner, body.batch, body.events
        )
    except (RefusedError, WireError) as exc:
        raise _refused(exc) from None
    return {"stored": stored}


@router.post("/jobs/{job_id}/finish")
def finish(job_id: str, body: FinishBody, who: Caller = Depends(caller)) -> dict[str, Any]:  # noqa: B008
    """Record how the job ended (with, or after, its last event batch)."""
    try:
        who.server.store.finish(
            job_id,
            body.attempt,
            who.runner,
            body.result,
            batch=body.batch,
            events=body.events,
        )
    except (RefusedError, WireError) as exc:
        raise _refused(exc) from None
    return {"done": True}


server_blobs.add_routes(router, caller)
