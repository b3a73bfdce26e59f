"""Fixtures for the fleet tests. Redis and PostgreSQL must be running on loopback
(``bash scripts/services``); without them every test here fails with that hint."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cluster_helpers import (
    REDIS_URL,
    ApiServer,
    Runner,
    ServicesMissingError,
    check_services,
    drop_database,
    forget_queues,
    fresh_database,
)
from sqlalchemy import Engine, create_engine


@pytest.fixture(scope="session")
def services() -> None:
    """Redis and PostgreSQL answer, or the test fails saying how to start them."""
    try:
        check_services()
    except ServicesMissingError as exc:
        pytest.fail(str(exc), pytrace=False)


@dataclass
class Fleet:
    """A database, a fleet API server and the runner tokens made for it."""

    home: Path
    database_url: str
    queue_prefix: str
    api: ApiServer
    engine: Engine
    broker: str = REDIS_URL
    tokens: dict[str, str] = field(default_factory=dict)
    runners: list[Runner] = field(default_factory=list)

    def token(self, name: str, classes: list[str]) -> str:
        from circlet.cluster.tokens import create_runner_token

        found = self.tokens.get(name)
        if found is None:
            found = self.tokens[name] = create_runner_token(self.engine, name, classes)
        return found

    def runner(
        self,
        name: str,
        classes: list[str],
        *,
        concurrency: int = 1,
        broker: str | None = None,
        executor: str = "host",
    ) -> Runner:
        runner = Runner(
            self.home,
            name,
            server=self.api.url,
            token=self.token(name, classes),
            classes=",".join(classes),
            broker=broker or self.broker,
            concurrency=concurrency,
            executor=executor,
        ).start()
        self.runners.append(runner)
        return runner


def make_fleet(home: Path, broker: str = REDIS_URL, **server: float) -> Fleet:
    """A fresh database and a started API server (runner tokens are made on demand)."""
    from circlet.store.accounts import SecretBox
    from circlet.store.records import RecordStore

    database_url = fresh_database()
    RecordStore(database_url).close()  # the records schema, before any process races for it
    SecretBox(home / "server-secrets.key")  # one key, before two processes race to make it
    prefix = "t" + uuid.uuid4().hex[:10]
    api = ApiServer(home, database_url, queue_prefix=prefix, broker_url=broker, **server)
    api.start()
    return Fleet(home, database_url, prefix, api, create_engine(database_url), broker=broker)


def close_fleet(fleet: Fleet) -> None:
    for runner in fleet.runners:
        runner.process.stop()
    fleet.api.process.stop()
    forget_queues(fleet.broker, fleet.queue_prefix)
    fleet.engine.dispose()
    drop_database(fleet.database_url)


@pytest.fixture(scope="module")
def fleet(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A fleet API server on a fresh PostgreSQL database (shared by a test module)."""
    built = make_fleet(tmp_path_factory.mktemp("fleet"))
    try:
        yield built
    finally:
        close_fleet(built)


@pytest.fixture(scope="module")
def git_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A git repository with one commit: (path, commit)."""
    repo = tmp_path_factory.mktemp("project")
    (repo / "app.txt").write_text("version 1\n")
    env = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q", "-b", "main"], ["add", "."], [*env, "commit", "-q", "-m", "first"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    return repo, commit
