"""Fixtures for the executor tests: one job spec, both real backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from executor_helpers import (
    LOCAL_PRIMARY,
    PRIMARY,
    ExecutorFactory,
    containers_of,
    make_job,
    new_key,
)

from circlet.executors.base import Environment, Executor
from circlet.executors.docker import DockerExecutor
from circlet.executors.host import HostExecutor
from circlet.plan import JobSpec


@pytest.fixture(autouse=True)
def _clean_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("CIRCLET_CA_BUNDLE", "CIRCLET_IMAGE_MAP", "CIRCLET_KEEP_WORKDIR"):
        monkeypatch.delenv(name, raising=False)
    # Staging directories go under the circlet home: not the real one.
    monkeypatch.setenv("CIRCLET_HOME", str(tmp_path / "circlet-home"))


@pytest.fixture(params=["host", pytest.param("docker", marks=pytest.mark.docker)])
def kind(request: pytest.FixtureRequest) -> str:
    """Which backend a contract test runs against."""
    return str(request.param)


@pytest.fixture
def make_executor(kind: str, tmp_path: Path) -> ExecutorFactory:
    """Build an executor of ``kind``; keyword arguments go to its constructor."""

    def factory(**kwargs: Any) -> Executor:
        kwargs.setdefault("ca_bundle", "")
        if kind == "host":
            kwargs.pop("image_map", None)
            return HostExecutor(tmp_path / "work", **kwargs)
        kwargs.setdefault("image_map", {PRIMARY: LOCAL_PRIMARY})
        return DockerExecutor(**kwargs)

    return factory


@pytest.fixture
def start(kind: str, make_executor: ExecutorFactory) -> Iterator[Callable[..., Environment]]:
    """Start environments (``start(job=…, executor=…)``); all stopped after the test."""
    started: list[tuple[str, Environment]] = []

    def starter(
        job: JobSpec | None = None,
        executor: Executor | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Environment:
        key = new_key()
        env = (executor or make_executor()).start(
            job or make_job(), job_key=key, extra_env=extra_env or {}
        )
        started.append((key, env))
        return env

    yield starter
    for key, env in started:
        env.stop()
        if kind == "docker":  # nothing of the job may survive its stop()
            assert containers_of(key) == []


@pytest.fixture
def env(start: Callable[..., Environment]) -> Environment:
    """A started environment of the default job."""
    return start()
