"""Real parts for the fleet tests: the services ``scripts/services`` starts (Redis and
PostgreSQL on loopback), a fleet API server process (uvicorn), ``circlet runner``
processes, and a scheduler with a ClusterDispatcher in the test process.

Nothing is faked: the broker is Redis, the records are PostgreSQL, the runners are
separate processes running the host executor, and faults are real signals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REDIS_URL = os.environ.get("CIRCLET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("CIRCLET_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
AMQP_NODE = os.environ.get("CIRCLET_TEST_AMQP_NODE", "circlet@localhost")
DATABASE_URL = os.environ.get(
    "CIRCLET_TEST_DATABASE_URL", "postgresql+psycopg://circlet:circlet@127.0.0.1:5432/circlet"
)
REPO = Path(__file__).resolve().parents[2]
HINT = "start them with `bash scripts/services` (installs and starts Redis and PostgreSQL)"


class ServicesMissingError(RuntimeError):
    """Redis or PostgreSQL is not there: the fleet cannot be tested."""


def check_services() -> None:
    """Fail with a clear message when the broker or the database does not answer."""
    import psycopg
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        raise ServicesMissingError(
            f"Redis at {REDIS_URL} does not answer ({exc}); {HINT}"
        ) from None
    try:
        with psycopg.connect(_plain(DATABASE_URL), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        raise ServicesMissingError(
            f"PostgreSQL at {DATABASE_URL} does not answer ({exc}); {HINT}"
        ) from None


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def fresh_database() -> str:
    """A new empty database on the test PostgreSQL; its SQLAlchemy URL."""
    import psycopg

    name = "circlet_t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(_plain(DATABASE_URL), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, _ = DATABASE_URL.rpartition("/")
    return f"{base}/{name}"


def drop_database(url: str) -> None:
    """Drop a database made by :func:`fresh_database` (its connections first)."""
    import psycopg

    name = url.rpartition("/")[2]
    with psycopg.connect(_plain(DATABASE_URL), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f"DROP DATABASE IF EXISTS {name}")


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` against the test node (``scripts/services``); its output."""
    proc = subprocess.run(
        ["rabbitmqctl", "-q", "-n", AMQP_NODE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout


def forget_queues(broker_url: str, prefix: str) -> None:
    """Remove what a test left in a shared broker under its queue prefix: queues,
    bindings, and (Redis) messages a killed runner never acknowledged."""
    if broker_url.startswith("amqp"):
        for line in rabbitmqctl("list_queues", "name").splitlines()[1:]:
            if prefix in line:
                rabbitmqctl("delete_queue", line.strip())
        return
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        for key in client.scan_iter(match=f"*{prefix}*"):
            client.delete(key)
        for tag, message in client.hgetall("unacked").items():
            if prefix.encode() in message:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll until ``predicate()`` is truthy; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def say(message: str) -> None:
    """What happened, for the test log (pytest -s shows it; -rA keeps it on failure)."""
    print(f"[cluster] {message}", flush=True)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@dataclass
class Process:
    """A child process with its log file."""

    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> list[int]:
        """SIGKILL the process (as a machine loss would), then its orphans; their pids."""
        assert self.proc is not None
        orphans = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return orphans

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill9()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ApiServer:
    """The fleet API (records + blobs + /api/cluster) in a uvicorn process."""

    def __init__(
        self,
        home: Path,
        database_url: str,
        *,
        queue_prefix: str,
        broker_url: str,
        lease: float = 4.0,
        heartbeat: float = 1.0,
        reap_interval: float = 0.5,
    ) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key_file = home / "server-secrets.key"
        self.process = Process(
            [
                sys.executable,
                "-m",
                "circlet.cluster.devserver",
                "--home",
                str(home),
                "--database-url",
                database_url,
                "--port",
                str(self.port),
                "--key-file",
                str(self.key_file),
                "--broker-url",
                broker_url,
                "--queue-prefix",
                queue_prefix,
                "--lease",
                str(lease),
                "--heartbeat",
                str(heartbeat),
                "--reap-interval",
                str(reap_interval),
            ],
            home / "server.log",
        )

    def start(self) -> None:
        """Start (or start again, on the same port) and wait until it answers."""
        self.process.start()
        try:
            wait_for(self.healthy, 30, "the fleet API server to answer")
        except AssertionError:
            raise AssertionError(f"server did not start:\n{self.process.tail()}") from None

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


class FullServer:
    """``circlet server`` (pages, REST API, webhooks, the fleet API and the schedulers
    of its pipelines) in a process of its own, on a PostgreSQL database, sending
    runner-class jobs through the broker. ``start`` again after a kill: same port."""

    def __init__(
        self, home: Path, database_url: str, *, queue_prefix: str, broker_url: str
    ) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process(
            [
                sys.executable,
                "-c",
                "from circlet.cli.server_cmd import command; command()",
                "--home",
                str(home),
                "--database-url",
                database_url,
                "--executor",
                "host",
                "--port",
                str(self.port),
            ],
            home / "full-server.log",
            env={
                "CIRCLET_BROKER_URL": broker_url,
                "CIRCLET_QUEUE_PREFIX": queue_prefix,
                "CIRCLET_HOME": str(home),
            },
        )

    def start(self) -> None:
        """Start (or start again) and wait until it answers."""
        self.process.start()
        try:
            wait_for(self.healthy, 60, "circlet server to answer")
        except AssertionError:
            raise AssertionError(f"server did not start:\n{self.process.tail()}") from None

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


class Runner:
    """A ``circlet runner`` process (host executor unless told otherwise)."""

    def __init__(
        self,
        home: Path,
        name: str,
        *,
        server: str,
        token: str,
        classes: str,
        broker: str,
        concurrency: int = 1,
        executor: str = "host",
    ) -> None:
        work = home / f"runner-{name}"
        work.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.process = Process(
            [
                sys.executable,
                "-m",
                "circlet.cli.runner_cmd",
                "--server",
                server,
                "--token",
                token,
                "--resource-class",
                classes,
                "--concurrency",
                str(concurrency),
                "--broker",
                broker,
                "--executor",
                executor,
                "--work-dir",
                str(work),
            ],
            home / f"runner-{name}.log",
            env={"CIRCLET_HOME": str(work / "home")},
        )

    def start(self) -> Runner:
        self.process.start()
        return self


def pipeline_from(text: str, tmp: Path) -> Any:
    """Compile a config text (as ``circlet run`` would)."""
    from circlet.config.compile import compile_file

    config = tmp / f"config-{uuid.uuid4().hex[:6]}.yml"
    config.write_text(text)
    return compile_file(config)


@dataclass
class Scheduler:
    """The scheduling half of a server, in the test process: records, blobs, dispatcher."""

    records: Any
    blobs: Any
    store: Any
    dispatcher: Any
    staging: Path

    def run(self, pipeline: Any, *, project: str = "gh/acme/fleet", **options: Any) -> Any:
        from circlet.engine.run_options import RunOptions
        from circlet.engine.scheduler import run_pipeline
        from circlet.executors.host import HostExecutor

        host = HostExecutor(self.staging / "work")
        cancel = options.pop("cancel", None)
        max_parallel = options.pop("max_parallel", 4)
        return run_pipeline(
            pipeline,
            options=RunOptions(project=project, staging_root=self.staging, **options),
            executor_factory=lambda _spec: host,
            blobs=self.blobs,
            sink=self.records.sink,
            records=self.records,
            max_parallel=max_parallel,
            cancel=cancel,
            dispatcher=self.dispatcher,
        )

    def runner_of(self, job_id: str) -> str | None:
        found = self.store.assignment(job_id)
        return found.runner_name if found else None


@dataclass
class Background:
    """A pipeline running on a daemon thread; ``cancel`` cancels it."""

    cancel: threading.Event
    thread: threading.Thread | None = None
    result: Any = None

    def join(self, timeout: float, what: str = "the pipeline to end") -> Any:
        """Wait for the pipeline's result; AssertionError naming ``what`` on timeout."""
        assert self.thread is not None
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        return self.result


@contextlib.contextmanager
def in_background(sch: Scheduler, config: str, tmp: Path, **options: Any) -> Iterator[Background]:
    """Run a config's pipeline on a thread; a test that fails midway cancels it (the
    thread never outlives the test, and never blocks the interpreter's exit)."""
    run = Background(threading.Event())
    pipeline = pipeline_from(config, tmp)

    def work() -> None:
        run.result = sch.run(pipeline, cancel=run.cancel, **options)

    run.thread = threading.Thread(target=work, name="test-pipeline", daemon=True)
    run.thread.start()
    try:
        yield run
    finally:
        if run.thread.is_alive():
            run.cancel.set()
            run.thread.join(30)


@contextlib.contextmanager
def scheduler(
    home: Path, database_url: str, broker: str, queue_prefix: str, **kw: Any
) -> Iterator[Scheduler]:
    """A records store, the shared blob store and a ClusterDispatcher (closed after)."""
    from circlet.cluster.dispatch import ClusterDispatcher
    from circlet.cluster.store import ClusterStore
    from circlet.store.accounts import SecretBox
    from circlet.store.blobs import LocalBlobStore
    from circlet.store.records import RecordStore

    records = RecordStore(database_url)
    blobs = LocalBlobStore(home / "blobs")
    store = ClusterStore(records, SecretBox(home / "server-secrets.key"))
    dispatcher = ClusterDispatcher(store, broker, queue_prefix=queue_prefix, **kw)
    staging = home / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        yield Scheduler(records, blobs, store, dispatcher, staging)
    finally:
        dispatcher.close()
        blobs.close()
        records.close()


class PrivateRedis:
    """A Redis of our own (the binary ``scripts/services`` installed), so a test may
    kill and restart its broker without disturbing anything else. Append-only file,
    fsync on every write, as in ``scripts/services``."""

    def __init__(self, home: Path) -> None:
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            raise ServicesMissingError(f"redis-server is not installed; {HINT}")
        self.dir = home / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = Process(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            home / "redis.log",
        )

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_connect_timeout=1)

    def start(self) -> None:
        self.process.start()

        def pong() -> bool:
            try:
                return bool(self.client().ping())
            except Exception:
                return False

        wait_for(pong, 15, f"redis on port {self.port}")
