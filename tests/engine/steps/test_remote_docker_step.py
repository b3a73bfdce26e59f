"""setup_remote_docker: the job talks to this machine's Docker engine."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from datastep_env import StartJob, docker_executor, host_executor, job_factory, make_store

from circlet.plan import SetupRemoteDockerStep


def engine_version() -> str:
    return subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def start_job(tmp_path: Path) -> Iterator[StartJob]:
    yield from job_factory(tmp_path, make_store(tmp_path / "blobs"), host_executor(tmp_path))


@pytest.fixture
def start_docker_job(tmp_path: Path) -> Iterator[StartJob]:
    yield from job_factory(tmp_path, make_store(tmp_path / "blobs"), docker_executor())


@pytest.mark.docker
def test_host_job_uses_the_local_engine(
    start_job: StartJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    job = start_job()
    outcome, out = job.run(SetupRemoteDockerStep(version="20.10.24", docker_layer_caching=True))
    assert outcome.status == "success"
    assert (
        f"Remote Docker engine: {engine_version()} (this machine's engine via "
        "/var/run/docker.sock)\n"
    ) in out
    assert "Requested version 20.10.24" in out
    assert "Docker layer caching: always on" in out
    assert out.endswith(
        "Created container accessible with:\n  DOCKER_HOST=unix:///var/run/docker.sock\n"
    )
    assert job.ctx.environ["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    assert job.sh("docker version --format '{{.Server.Version}}'").strip() == engine_version()


def test_missing_socket_fails_clearly(start_job: StartJob, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    job = start_job()
    outcome, out = job.run(SetupRemoteDockerStep())
    assert outcome.status == "failed"
    assert outcome.reason is not None
    assert outcome.reason.startswith(
        "No Docker engine socket at /nonexistent/docker.sock in the job"
    )
    assert out == outcome.reason + "\n"
    assert "DOCKER_HOST" not in job.ctx.environ


@pytest.mark.docker
def test_docker_job_reaches_the_engine_through_the_mounted_socket(
    start_docker_job: StartJob,
) -> None:
    step = SetupRemoteDockerStep()
    job = start_docker_job((step,))
    outcome, out = job.run(step)
    assert outcome.status == "success", out
    assert f"Remote Docker engine: {engine_version()} (" in out
    answer = job.sh("curl -s --unix-socket /var/run/docker.sock http://localhost/_ping")
    assert answer == "OK"

    without = start_docker_job(())  # the executor mounts the socket only for this step
    outcome, _ = without.run(step)
    assert outcome.status == "failed"
