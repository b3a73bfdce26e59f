"""The runner's side of a job: what the Celery task does with a ``{job_id, attempt}``.

1. Claim the job from the server (refused: it is not ours, canceled, or already
   taken by an earlier delivery of the same message: the message is dropped).
2. Open the secrets (sealed for this runner's token) and fetch the code (a git
   pack from the blob API) when the job checks it out.
3. Run the same :class:`~circlet.engine.runner.JobRunner` as ``circlet run``,
   with an :class:`HttpEventSink` (output streams to the server live), an
   :class:`HttpBlobStore` (caches, workspaces, artifacts) and a heartbeat that
   keeps the job's lease and brings back a cancel.
4. Deliver the last events, then the result (retrying while the server is away).
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circlet.cluster.client import ApiClient, ServerError, UnreachableError
from circlet.cluster.http_blobs import HttpBlobStore
from circlet.cluster.http_sink import GIVE_UP_AFTER, HttpEventSink
from circlet.cluster.wire import WireError, open_for_runner, request_from_dict
from circlet.engine import events as ev
from circlet.engine.runner import JobRequest, JobResult, JobRunner
from circlet.executors.base import Executor
from circlet.plan import JobSpec

log = logging.getLogger("circlet.runner")


@dataclass
class RunnerSetup:
    """What every job on this runner shares (set once by ``circlet runner``)."""

    client: ApiClient
    name: str
    executor_factory: Callable[[JobSpec], Executor]
    work_dir: Path
    host: str = field(default_factory=socket.gethostname)
    give_up_after: float = GIVE_UP_AFTER


class _Current:
    setup: RunnerSetup | None = None


def configure(setup: RunnerSetup) -> None:
    """Make ``setup`` the runner every task of this process uses."""
    _Current.setup = setup
    (setup.work_dir / "staging").mkdir(parents=True, exist_ok=True)
    (setup.work_dir / "repos").mkdir(parents=True, exist_ok=True)


def run_job(payload: dict[str, Any]) -> dict[str, Any]:
    """The Celery task: run job ``payload["job_id"]`` (attempt ``payload["attempt"]``)."""
    setup = _Current.setup
    if setup is None:
        raise RuntimeError("the runner is not configured (circlet.cluster.worker.configure)")
    return _Job(setup, str(payload["job_id"]), int(payload["attempt"])).run()


class _Timings:
    """The records reader a remote JobRunner needs: the test timings the server sent."""

    def __init__(self, table: dict[str, dict[str, float]]) -> None:
        self.table = table

    # The server chose the table for this job: the arguments are the protocol's.
    def test_timing_table(self, project: str, job_name: str) -> dict[str, dict[str, float]]:  # noqa: ARG002
        return self.table

    def test_timings(self, project: str, job_name: str) -> dict[str, float]:  # noqa: ARG002
        return {**self.table.get("classname", {}), **self.table.get("filename", {})}

    def next_build_num(self, project: str) -> int:  # noqa: ARG002
        raise RuntimeError("build numbers are the server's")

    def next_pipeline_number(self, project: str) -> int:  # noqa: ARG002
        raise RuntimeError("pipeline numbers are the server's")


class _Heartbeat:
    """Keeps the job's lease; sets ``cancel`` when the server says so or drops the job."""

    def __init__(self, job: _Job, interval: float) -> None:
        self.job = job
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="circlet-heartbeat", daemon=True)

    def _loop(self) -> None:
        job = self.job
        path = f"/api/cluster/jobs/{job.job_id}/heartbeat"
        while not self.stop.wait(self.interval):
            try:
                answer = job.setup.client.call(
                    "POST",
                    path,
                    json={"attempt": job.attempt},
                    retry_for=0,
                    timeout=max(2.0, self.interval * 2),
                ).json()
            except UnreachableError:
                continue  # the server is away: the job goes on, events wait in the sink
            except ServerError as exc:
                job.lose(str(exc))
                return
            if answer.get("cancel") and not job.cancel.is_set():
                log.info("runner %s: job %s canceled by the server", job.setup.name, job.job_id)
                job.cancel.set()


class _Job:
    def __init__(self, setup: RunnerSetup, job_id: str, attempt: int) -> None:
        self.setup = setup
        self.job_id = job_id
        self.attempt = attempt
        self.cancel = threading.Event()
        self.lost: str | None = None

    def lose(self, why: str) -> None:
        """The server no longer counts on us for this job: stop it."""
        if self.lost is None:
            log.warning(
                "runner %s: job %s dropped by the server: %s", self.setup.name, self.job_id, why
            )
        self.lost = why
        self.cancel.set()

    def run(self) -> dict[str, Any]:
        client = self.setup.client
        try:
            claim = client.call(
                "POST",
                f"/api/cluster/jobs/{self.job_id}/claim",
                json={"attempt": self.attempt, "host": self.setup.host},
                retry_for=self.setup.give_up_after,
            ).json()
            secrets = open_for_runner(client.token, claim["secrets"])
            request = request_from_dict(claim["request"], secrets)
        except (ServerError, UnreachableError, WireError) as exc:
            log.info("runner %s: not running job %s: %s", self.setup.name, self.job_id, exc)
            return {"job_id": self.job_id, "skipped": str(exc)}
        started = time.monotonic()
        sink = HttpEventSink(
            client,
            self.job_id,
            self.attempt,
            give_up_after=self.setup.give_up_after,
            on_lost=self.lose,
        )
        blobs = HttpBlobStore(client, job_id=self.job_id, spool_dir=self.setup.work_dir)
        beat = _Heartbeat(self, float(claim["heartbeat_seconds"]))
        beat.thread.start()
        try:
            result = self._execute(request, claim, sink, blobs)
        finally:
            beat.stop.set()
        sink.close(result_dict(result))  # the last events and the result, in one request
        if not sink.finished and self.lost is None:
            self.lose(sink.lost or "the server did not take the job's result")
        seconds = time.monotonic() - started
        log.info(
            "runner %s: job %s (%s) %s in %.1fs",
            self.setup.name,
            request.identity.job_name,
            self.job_id[:8],
            result.status if self.lost is None else f"dropped ({self.lost})",
            seconds,
        )
        return {"job_id": self.job_id, "status": result.status, "lost": self.lost}

    def _execute(
        self,
        request: JobRequest,
        claim: dict[str, Any],
        sink: HttpEventSink,
        blobs: HttpBlobStore,
    ) -> JobResult:
        try:
            executor = self.setup.executor_factory(request.spec)
            bundle = claim["request"].get("repo_bundle")
            if bundle and request.commit:
                origin = claim["request"].get("repo_origin")
                repo = fetch_repo(
                    blobs, bundle, request.commit, self.setup.work_dir / "repos", origin
                )
                request = dataclasses.replace(request, repo=repo)
        except Exception as exc:  # no executor, no code: the job cannot start here
            reason = f"runner {self.setup.name}: {str(exc).splitlines()[0] if str(exc) else exc}"
            sink(ev.JobFinished(self.job_id, "infrastructure_fail", reason))
            return JobResult("infrastructure_fail", reason, job_id=self.job_id)
        runner = JobRunner(
            request,
            executor=executor,
            blobs=blobs,
            sink=sink,
            records=_Timings(dict(claim.get("timings") or {})),
            cancel=self.cancel,
            staging_root=self.setup.work_dir / "staging",
        )
        try:
            runner.run()
        except Exception as exc:  # the runner reports its own failures; a last resort
            runner.result.status = "infrastructure_fail"
            runner.result.reason = f"{type(exc).__name__}: {exc}"
        return runner.result


def result_dict(result: JobResult) -> dict[str, Any]:
    """A JobResult as JSON data (the dispatcher rebuilds it)."""
    return dataclasses.asdict(result)


def fetch_repo(
    blobs: HttpBlobStore, digest: str, commit: str, cache: Path, origin: str | None
) -> Path:
    """A local repository holding ``commit`` (from the git pack blob ``digest``,
    ``origin`` as its origin URL), kept per pack so later jobs of the commit reuse it."""
    target = cache / digest[:32]
    ready = target / "circlet-ready"
    lock_path = cache / f"{digest[:32]}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        # Not bare: the checkout step clones from a working-copy top level.
        _git(["init", "--quiet", str(target)], cache)
        with blobs.open_blob(digest) as pack:
            _git(["index-pack", "--stdin", "--fix-thin"], target, stdin=pack.read())
        _git(["update-ref", "refs/heads/circlet-build", commit], target)
        _git(["symbolic-ref", "HEAD", "refs/heads/circlet-build"], target)
        if origin:
            _git(["config", "remote.origin.url", origin], target)
        ready.touch()
    return target


def _git(args: list[str], cwd: Path, stdin: bytes | None = None) -> None:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, capture_output=True, check=False, timeout=600
    )
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"git {args[0]} failed: {message[-1] if message else proc.returncode}")
