"""The server with its runner fleet: a runner token made on the settings page, a
real ``circlet runner`` process serving ``acme/small`` through Redis, a job of
that class run on it, and the token revoked (the runner's next claim refused).

Needs Redis on loopback (``bash scripts/services``); the records are SQLite.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import ADMIN, ADMIN_PASSWORD, Server, csrf_of, login, start_server
from sqlalchemy import select
from sqlalchemy.orm import Session

REDIS_URL = os.environ.get("CIRCLET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SLUG = "circlet/acme/fleet"
CONFIG = """
version: 2.1
jobs:
  build:
    machine: true
    resource_class: acme/small
    steps:
      - checkout
      - run:
          name: Build
          command: |
            echo "built from $(cat app.txt) in $PWD"
workflows:
  main:
    jobs: [build]
"""


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def _redis_or_fail() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        pytest.fail(
            f"Redis at {REDIS_URL} does not answer ({exc}); start it with `bash scripts/services`",
            pytrace=False,
        )


def _forget_queues(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=f"*{prefix}*"):
            client.delete(key)
    finally:
        client.close()


def _git_repo(dest: Path) -> Path:
    (dest / ".circleci").mkdir(parents=True)
    (dest / ".circleci" / "config.yml").write_text(CONFIG)
    (dest / "app.txt").write_text("version 7\n")
    env = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*env, "commit", "-qm", "first"]):
        subprocess.run(["git", *args], cwd=dest, check=True, capture_output=True)
    return dest


@pytest.fixture
def fleet_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Server, str]]:
    """A real server with a broker configured and a unique queue prefix."""
    _redis_or_fail()
    prefix = "ts" + uuid.uuid4().hex[:10]
    monkeypatch.setenv("CIRCLET_BROKER_URL", REDIS_URL)
    srv, uv, thread = start_server(tmp_path / "home", queue_prefix=prefix)
    srv.svc.accounts.create_user(ADMIN, ADMIN_PASSWORD, is_admin=True)
    srv.svc.accounts.add_project(
        SLUG, str(_git_repo(tmp_path / "fleet")), kind="path", name="fleet"
    )
    try:
        yield srv, prefix
    finally:
        srv.close_clients()
        uv.should_exit = True
        thread.join(15)
        _forget_queues(prefix)


def _runner(srv: Server, token: str, work: Path) -> subprocess.Popen[bytes]:
    work.mkdir(parents=True)
    argv = [
        sys.executable,
        "-m",
        "circlet.cli.runner_cmd",
        "--server",
        srv.base,
        "--token",
        token,
        "--resource-class",
        "acme/small",
        "--broker",
        REDIS_URL,
        "--executor",
        "host",
        "--work-dir",
        str(work),
    ]
    env = {**os.environ, "CIRCLET_HOME": str(work / "home")}
    with (work.parent / "runner.log").open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


def _dispatch_row(srv: Server, pipeline_number: int) -> Any:
    from circlet.cluster.models import DispatchJob

    with Session(srv.svc.records.engine) as session:
        rows = session.scalars(select(DispatchJob).order_by(DispatchJob.created_at)).all()
    return rows[pipeline_number - 1] if len(rows) >= pipeline_number else None


def test_runner_token_page_runs_a_job_on_the_runner_then_revoke_refuses_it(
    fleet_server: tuple[Server, str], tmp_path: Path
) -> None:
    srv, _ = fleet_server
    web = srv.client()
    csrf = login(web)

    # The page is admin-only and its forms are CSRF-protected.
    assert srv.client().get("/settings/runners", follow_redirects=False).status_code == 303
    forged = web.post("/settings/runners", data={"name": "x", "resource_classes": "acme/x"})
    assert forged.status_code == 403
    bad = web.post(
        "/settings/runners", data={"csrf_token": csrf, "name": "x", "resource_classes": "small"}
    )
    assert bad.status_code == 400
    assert "namespace/name" in bad.text

    made = web.post(
        "/settings/runners",
        data={"csrf_token": csrf, "name": "small-box", "resource_classes": "acme/small"},
    )
    assert made.status_code == 200, made.text
    found = re.search(r'<code class="token">(crt_[^<]+)</code>', made.text)
    assert found, "the new token is shown once"
    token = found.group(1)
    listing = web.get("/settings/runners").text
    assert "small-box" in listing
    assert "acme/small" in listing
    assert token not in listing
    assert "never" in listing  # not seen yet

    runner = _runner(srv, token, tmp_path / "runner" / "work")
    log = tmp_path / "runner" / "runner.log"
    try:
        _wait(
            lambda: (
                "small-box" in web.get("/settings/runners").text
                and "never" not in web.get("/settings/runners").text
            ),
            30,
            "the runner to register",
        )
        user = srv.svc.accounts.user_by_login(ADMIN)
        assert user is not None
        api = srv.api(srv.svc.accounts.create_token(user.id, "fleet")[0])

        first = api.post(f"/project/{SLUG}/pipeline", json={"branch": "main"}).json()
        workflows = srv.wait_pipeline(api, first["id"], timeout=40)
        assert [w["status"] for w in workflows] == ["success"], log.read_text()
        jobs = api.get(f"/workflow/{workflows[0]['id']}/job").json()["items"]
        assert [(j["name"], j["status"]) for j in jobs] == [("build", "success")]
        row = _dispatch_row(srv, 1)
        assert row is not None
        assert row.runner_name == "small-box"
        assert (row.resource_class, row.status) == ("acme/small", "success")

        # Revoke: the runner's next claim is refused and the job stays queued.
        page = web.get("/settings/runners").text
        revoked = web.post("/settings/runners/small-box/revoke", data={"csrf_token": csrf_of(page)})
        assert revoked.status_code == 303
        assert "revoked" in web.get("/settings/runners").text
        time.sleep(2.5)  # the fleet API caches a token's answer for 2 s
        second = api.post(f"/project/{SLUG}/pipeline", json={"branch": "main"}).json()
        row = _wait(lambda: _dispatch_row(srv, 2), 20, "the second job to be queued")
        _wait(lambda: f"not running job {row.job_id}" in log.read_text(), 20, "a refused claim")
        refused = httpx.post(
            f"{srv.base}/api/cluster/jobs/{row.job_id}/claim",
            json={"attempt": 1, "host": "test"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert refused.status_code == 401
        assert "revoked" in refused.text
        again = _dispatch_row(srv, 2)
        assert (again.state, again.runner_name) == ("queued", None)
        wf = _wait(
            lambda: api.get(f"/pipeline/{second['id']}/workflow").json()["items"],
            10,
            "the second workflow",
        )
        assert api.post(f"/workflow/{wf[0]['id']}/cancel").status_code == 202
        assert [w["status"] for w in srv.wait_pipeline(api, second["id"], 30)] == ["canceled"]
    finally:
        runner.terminate()
        try:
            runner.wait(10)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait(5)
