"""Fixtures: a real circlet server (uvicorn on a free loopback port, SQLite in a
temporary home, the host executor) and a tiny git project to run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import ADMIN, ADMIN_PASSWORD, DATA, Server, make_repo, start_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv, uv, thread = start_server(tmp_path / "home")
    srv.svc.accounts.create_user(ADMIN, ADMIN_PASSWORD, is_admin=True)
    try:
        yield srv
    finally:
        srv.close_clients()
        uv.should_exit = True
        thread.join(15)


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    return make_repo(DATA / "tiny", tmp_path / "tiny")


@pytest.fixture
def project(server: Server, tiny_repo: Path) -> str:
    """The tiny project registered on the server; its slug."""
    server.svc.accounts.add_project("circlet/acme/tiny", str(tiny_repo), kind="path", name="tiny")
    return "circlet/acme/tiny"


@pytest.fixture
def admin_token(server: Server) -> str:
    user = server.svc.accounts.user_by_login(ADMIN)
    assert user is not None
    token, _ = server.svc.accounts.create_token(user.id, "tests")
    return token
