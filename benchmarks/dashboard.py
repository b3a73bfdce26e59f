"""All Pipelines with 10,000 recorded pipelines: how long the page takes.

Records 10,000 pipelines (one workflow of five jobs each, as examples/lettings
has) straight into a fresh SQLite records database, starts a real circlet
server (uvicorn) on a loopback port, signs in, and times 20 requests of the
All Pipelines page against 20 requests of a static file from the same server
(the baseline: same HTTP stack, no work). Prints medians and their ratio; the
target is a median of 100 ms or less for the page.

    python benchmarks/dashboard.py [--pipelines N] [--requests N]
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import insert

from circlet.server.app import create_app
from circlet.server.settings import ServerSettings
from circlet.store.models import Job, Pipeline, Project, Workflow
from circlet.store.records import RecordStore

JOBS = ("run_test", "flake8_test", "build_docker_image", "deploy_on_heroku", "notify_deployment")
PROJECT = "gh/acme/lettings"
TARGET_MS = 100.0


def record(url: str, count: int) -> float:
    """Insert ``count`` finished pipelines; returns seconds taken."""
    started = time.perf_counter()
    store = RecordStore(url)
    now = time.time()
    spec = [
        {"name": name, "requires": [JOBS[i - 1]] if i else [], "type": "build"}
        for i, name in enumerate(JOBS)
    ]
    pipelines, workflows, jobs = [], [], []
    for n in range(1, count + 1):
        at = now - (count - n) * 300
        pid, wid = str(uuid.uuid4()), str(uuid.uuid4())
        status = "failed" if n % 17 == 0 else "success"
        pipelines.append(
            {
                "id": pid,
                "project": PROJECT,
                "number": n,
                "branch": "master" if n % 5 else "dev",
                "revision": uuid.uuid4().hex + "abcdefgh",
                "trigger": "webhook",
                "status": status,
                "created_at": at,
                "started_at": at,
                "stopped_at": at + 200 + n % 40,
                "config_source": None,
            }
        )
        workflows.append(
            {
                "id": wid,
                "pipeline_id": pid,
                "name": "main",
                "status": status,
                "created_at": at,
                "started_at": at,
                "stopped_at": at + 200 + n % 40,
                "jobs": spec,
            }
        )
        t = at
        for i, name in enumerate(JOBS):
            jobs.append(
                {
                    "id": str(uuid.uuid4()),
                    "workflow_id": wid,
                    "project": PROJECT,
                    "name": name,
                    "build_num": (n - 1) * len(JOBS) + i + 1,
                    "status": status if i == 0 else "success",
                    "node_index": 0,
                    "node_total": 1,
                    "executor": "docker",
                    "created_at": t,
                    "started_at": t,
                    "stopped_at": t + 20 + i,
                    "reason": None,
                }
            )
            t += 30
    with store.engine.begin() as conn:
        conn.execute(
            insert(Project),
            [
                {
                    "slug": PROJECT,
                    "pipeline_counter": count,
                    "build_counter": count * len(JOBS),
                    "created_at": now,
                }
            ],
        )
        for table, rows in ((Pipeline, pipelines), (Workflow, workflows), (Job, jobs)):
            for i in range(0, len(rows), 5000):
                conn.execute(insert(table), rows[i : i + 5000])
    store.close()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed(client: httpx.Client, path: str, requests: int) -> list[float]:
    """Milliseconds per request (after one warm-up request)."""
    assert client.get(path).status_code == 200
    samples = []
    for _ in range(requests):
        t0 = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - t0) * 1000)
        assert answer.status_code == 200, answer.status_code
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="circlet-bench-dashboard-") as tmp:
        home = Path(tmp)
        settings = ServerSettings(home=home, executor="host", schedules=False)
        seconds = record(settings.url, args.pipelines)
        jobs = args.pipelines * len(JOBS)
        print(f"recorded {args.pipelines} pipelines ({jobs} jobs) in {seconds:.1f}s")
        app = create_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=free_port(),
                log_level="warning",
                timeout_graceful_shutdown=1,
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        svc = app.state.services
        svc.accounts.create_user("bench", "bench-password", is_admin=True)
        svc.accounts.add_project(PROJECT, str(home), kind="path", name="lettings")
        base = f"http://127.0.0.1:{server.config.port}"
        try:
            with httpx.Client(base_url=base, timeout=60) as client:
                page = client.get("/login")
                token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
                assert token is not None
                client.post(
                    "/login",
                    data={
                        "login": "bench",
                        "password": "bench-password",
                        "csrf_token": token.group(1),
                        "next": "/",
                    },
                )
                dashboard = timed(client, "/", args.requests)
                body = client.get("/").text
                assert body.count('class="pipeline"') == settings.page_size, "page not filled"
                static = timed(client, "/static/app.css", args.requests)
        finally:
            server.should_exit = True
            thread.join(10)
    page_ms, static_ms = statistics.median(dashboard), statistics.median(static)
    print(
        f"All Pipelines, {args.pipelines} pipelines: median {page_ms:.1f} ms "
        f"(p90 {statistics.quantiles(dashboard, n=10)[-1]:.1f} ms) over {args.requests} requests"
    )
    print(f"static file baseline:            median {static_ms:.1f} ms")
    print(
        f"ratio page/static: {page_ms / static_ms:.1f}x; target <= {TARGET_MS:.0f} ms: "
        f"{'met' if page_ms <= TARGET_MS else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
