"""Helpers shared by the executor tests (imported by name: tests are not a package)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import docker

from circlet.executors.base import Environment, ExecResult, Executor
from circlet.executors.common import LABEL_JOB
from circlet.plan import DockerImage, ExecutorSpec, JobSpec, Step

PRIMARY = "cimg/python:3.11"  # mapped to the local image below on docker
LOCAL_PRIMARY = "circlet/cimg-python:3.11"
SERVICE = "circlet/debian-python:bookworm"
KEY_PREFIX = "circlet-test-"

ExecutorFactory = Callable[..., Executor]


def make_job(
    *images: DockerImage, steps: tuple[Step, ...] = (), working_directory: str = "~/project"
) -> JobSpec:
    """A docker job with these images (default: the primary only)."""
    return JobSpec(
        name="contract",
        executor=ExecutorSpec(kind="docker", images=images or (DockerImage(PRIMARY),)),
        steps=steps,
        working_directory=working_directory,
    )


def new_key() -> str:
    """A job key no other test uses (containers and dirs are named by it)."""
    return f"{KEY_PREFIX}{uuid.uuid4().hex[:10]}"


def run(environment: Environment, argv: list[str], /, **kwargs: Any) -> tuple[ExecResult, bytes]:
    """``env.exec`` collecting the output."""
    chunks: list[bytes] = []
    kwargs.setdefault("env", {})
    kwargs.setdefault("cwd", None)
    result = environment.exec(argv, on_output=chunks.append, **kwargs)
    return result, b"".join(chunks)


def containers_of(job_key: str) -> list[dict[str, Any]]:
    """Containers (running or not) labelled with ``job_key``."""
    client = docker.APIClient()
    try:
        found: list[dict[str, Any]] = client.containers(
            all=True, filters={"label": f"{LABEL_JOB}={job_key}"}
        )
        return found
    finally:
        client.close()


def containers_with_prefix(prefix: str) -> list[dict[str, Any]]:
    """Containers whose job label starts with ``prefix``."""
    client = docker.APIClient()
    try:
        return [
            c
            for c in client.containers(all=True, filters={"label": LABEL_JOB})
            if str(c["Labels"].get(LABEL_JOB, "")).startswith(prefix)
        ]
    finally:
        client.close()
