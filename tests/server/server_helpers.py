"""Helpers for the server tests: a real server on a free loopback port, logins."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from circlet.server.app import create_app
from circlet.server.services import Services
from circlet.server.settings import ServerSettings

DATA = Path(__file__).parent / "data"
ADMIN, ADMIN_PASSWORD = "admin", "admin-password-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_repo(source: Path, dest: Path) -> Path:
    """A git repository at ``dest`` holding a copy of ``source`` (one commit on main)."""
    shutil.copytree(source, dest)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
    }
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["commit", "-qm", "tiny: first commit"],
    ):
        subprocess.run(["git", *args], cwd=dest, env=env, check=True)
    return dest


@dataclass
class Server:
    base: str
    app: Any
    home: Path
    clients: list[httpx.Client] = field(default_factory=list)

    def close_clients(self) -> None:
        for c in self.clients:
            c.close()

    @property
    def svc(self) -> Services:
        found: Services = self.app.state.services
        return found

    def client(self, **kw: Any) -> httpx.Client:
        c = httpx.Client(base_url=self.base, timeout=30, **kw)
        self.clients.append(c)
        return c

    def api(self, token: str) -> httpx.Client:
        c = httpx.Client(
            base_url=self.base + "/api/v2", headers={"Circle-Token": token}, timeout=30
        )
        self.clients.append(c)
        return c

    def wait_pipeline(
        self, api: httpx.Client, pipeline_id: str, timeout: float = 60
    ) -> list[dict[str, Any]]:
        """Wait until every workflow of the pipeline has ended; its workflows."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if api.get(f"/pipeline/{pipeline_id}").json().get("state") == "errored":
                return []
            items = api.get(f"/pipeline/{pipeline_id}/workflow").json()["items"]
            if items and all(w["status"] not in ("running",) for w in items):
                self.svc.runs.wait_idle(timeout=30)
                return list(api.get(f"/pipeline/{pipeline_id}/workflow").json()["items"])
            time.sleep(0.2)
        raise AssertionError(f"pipeline {pipeline_id} did not finish in {timeout}s")


def start_server(home: Path, **settings: Any) -> tuple[Server, uvicorn.Server, threading.Thread]:
    """Start a real server; the caller stops it."""
    settings.setdefault("executor", "host")
    app = create_app(ServerSettings(home=home, schedules=False, **settings))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=120,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return Server(f"http://127.0.0.1:{port}", app, home), server, thread


def csrf_of(html: str) -> str:
    """The CSRF token of the first form in a page."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client: httpx.Client, user: str = ADMIN, password: str = ADMIN_PASSWORD) -> str:
    """Sign in with the form; returns the session's CSRF token."""
    page = client.get("/login")
    answer = client.post(
        "/login",
        data={"login": user, "password": password, "csrf_token": csrf_of(page.text), "next": "/"},
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/settings/tokens").text)
