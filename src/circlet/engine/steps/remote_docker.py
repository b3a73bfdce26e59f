"""``setup_remote_docker``: a Docker engine for the job's ``docker`` commands.

CircleCI starts a separate VM running Docker and points ``DOCKER_HOST`` at it.
Locally the job uses this machine's engine: the docker executor mounts the
engine's socket into the primary container when the job has this step, the
host executor reaches it directly. The step checks the socket is there,
reports the engine's version and sets ``DOCKER_HOST`` for the later steps.
``docker_layer_caching`` needs nothing: the engine's image cache is shared by
every job anyway.
"""

from __future__ import annotations

import os

from circlet.engine.steps import register
from circlet.engine.steps.base import StepContext, StepOutcome
from circlet.plan import SetupRemoteDockerStep, Step

SOCKET = "/var/run/docker.sock"
_PROBE = (
    's="$1"; [ -S "$s" ] || { echo "no socket"; exit 3; }; '
    "if command -v docker >/dev/null 2>&1; then "
    "docker version --format '{{.Server.Version}}' 2>/dev/null && exit 0; fi; "
    "if command -v curl >/dev/null 2>&1; then "
    'curl -s --unix-socket "$s" http://localhost/version 2>/dev/null; fi; exit 0'
)


def _docker_host(ctx: StepContext) -> str:
    details = ctx.environment.info.details
    if details.get("docker_host"):
        return details["docker_host"]
    if details.get("executor") == "host" and os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    return f"unix://{SOCKET}"


def _version(text: str) -> str:
    text = text.strip()
    if text.startswith("{"):  # the engine's /version JSON, read with curl
        marker = '"Version":"'
        start = text.find(marker)
        if start >= 0:
            return text[start + len(marker) :].split('"', 1)[0]
        return "unknown"
    return text.splitlines()[0] if text else "unknown"


@register("setup_remote_docker")
def setup_remote_docker(step: Step, ctx: StepContext) -> StepOutcome:
    """Point the job at this machine's Docker engine."""
    assert isinstance(step, SetupRemoteDockerStep)
    docker_host = _docker_host(ctx)
    if not docker_host.startswith("unix://"):
        ctx.environ["DOCKER_HOST"] = docker_host
        ctx.write(f"Remote Docker engine: {docker_host} (this machine's DOCKER_HOST)\n")
        return StepOutcome("success")
    socket = docker_host.removeprefix("unix://")
    chunks: list[bytes] = []
    result = ctx.environment.exec(
        ["/bin/sh", "-c", _PROBE, "setup_remote_docker", socket],
        env=ctx.environ,
        cwd=None,
        on_output=chunks.append,
        cancel=ctx.cancel,
    )
    if result.exit_code == 3:
        reason = (
            f"No Docker engine socket at {socket} in the job: this machine has no "
            "local Docker engine (or the executor could not share it)"
        )
        ctx.write(reason + "\n")
        return StepOutcome("failed", 1, reason)
    version = _version(b"".join(chunks).decode(errors="replace"))
    ctx.environ["DOCKER_HOST"] = docker_host
    ctx.write("Using this machine's Docker engine instead of a remote one\n")
    ctx.write(f"Remote Docker engine: {version} (this machine's engine via {socket})\n")
    if step.version:
        ctx.write(f"Requested version {step.version}: the local engine is used as it is\n")
    if step.docker_layer_caching:
        ctx.write("Docker layer caching: always on here (jobs share the engine's image cache)\n")
    ctx.write(f"Created container accessible with:\n  DOCKER_HOST={docker_host}\n")
    return StepOutcome("success")
