"""Which local image runs a config's ``image:``, and making sure it is there.

A config names public images (``cimg/python:3.12.0``); a machine without a
registry has local ones. The image map (the ``image`` setting, ``--image``
flags, ``images:`` in ``.circlet.yml``) says which stands in for which. An
image that is neither present nor pullable is one clear error with the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from circlet import settings
from circlet.executors.base import ExecutorError
from circlet.plan import DockerImage

DEFAULT_PULL_TIMEOUT = 60.0


@dataclass(frozen=True)
class ResolvedImage:
    """A config's image name, the local image that runs it, and that image's metadata."""

    requested: str
    local: str
    attrs: dict[str, Any]
    pulled: bool = False

    @property
    def short_id(self) -> str:
        """``sha256:70f47196bb6e``."""
        image_id = str(self.attrs.get("Id", ""))
        return image_id[:19] if image_id.startswith("sha256:") else image_id[:12]

    @property
    def digest(self) -> str | None:
        """``repo@sha256:…`` when the image came from a registry, else None."""
        digests = self.attrs.get("RepoDigests") or []
        return str(digests[0]) if digests else None

    @property
    def config(self) -> dict[str, Any]:
        """The image's ``Config`` (Env, User, WorkingDir, Entrypoint, Cmd…)."""
        return dict(self.attrs.get("Config") or {})


def image_map(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``image`` setting (``FROM=TO,…``) overlaid with ``extra`` (flags, .circlet.yml)."""
    try:
        result = settings.parse_image_map(settings.IMAGE_MAP.get())
    except ValueError as exc:
        raise ExecutorError(f"{settings.IMAGE_MAP.env}: {exc}") from exc
    result.update(extra or {})
    return result


def map_image(name: str, mapping: Mapping[str, str]) -> str:
    """``name`` through ``mapping``: an exact entry, else one without ``docker.io/``."""
    if name in mapping:
        return mapping[name]
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix) and name[len(prefix) :] in mapping:
            return mapping[name[len(prefix) :]]
    return name


def ensure_image(
    api: docker.APIClient,
    requested: str,
    mapping: Mapping[str, str],
    *,
    docker_host: str,
    pull_timeout: float = DEFAULT_PULL_TIMEOUT,
) -> ResolvedImage:
    """The local image for ``requested``: mapped, inspected, pulled if missing.

    Raises ExecutorError with one line naming the fix when it is not available.
    """
    local = map_image(requested, mapping)
    try:
        return ResolvedImage(requested, local, api.inspect_image(local))
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as exc:
        raise ExecutorError(f"image {local}: {short_reason(exc)}") from exc
    reason = _pull(api, docker_host, local, pull_timeout)
    if reason is None:
        try:
            return ResolvedImage(requested, local, api.inspect_image(local), pulled=True)
        except docker.errors.APIError as exc:
            reason = short_reason(exc)
    shown = requested if local == requested else f"{requested} (mapped to {local})"
    raise ExecutorError(
        f"image {shown} is not available locally and could not be pulled ({reason}); "
        f"build or tag one locally, then map it: --image {requested}=LOCAL_IMAGE "
        "(or add it under images: in .circlet.yml)"
    )


def _pull(api: docker.APIClient, docker_host: str, name: str, timeout: float) -> str | None:
    """Pull ``name`` within ``timeout`` seconds; None on success, else a short reason."""
    repo, tag = _split(name)
    # A client of its own: the pull's timeout must not apply to other calls.
    puller = docker.APIClient(base_url=docker_host, version=api.api_version, timeout=timeout)
    try:
        puller.pull(repo, tag=tag)
    except docker.errors.APIError as exc:
        return short_reason(exc)
    except Exception as exc:  # requests' timeouts and connection errors: one line, not a trace
        return f"no answer within {timeout:g}s" if "timed out" in str(exc) else str(exc)[:160]
    finally:
        puller.close()
    return None


def _split(name: str) -> tuple[str, str | None]:
    """``repo:tag`` / ``repo@digest`` → (repo, tag-or-digest)."""
    if "@" in name:
        repo, digest = name.split("@", 1)
        return repo, digest
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, "latest"
    return repo, tag


def short_reason(exc: docker.errors.APIError) -> str:
    """The engine's explanation of an error, as one short line."""
    text = str(exc.explanation or exc).strip().replace('"', "")
    return text.splitlines()[0][:200] if text else type(exc).__name__


def connect(docker_host: str) -> tuple[docker.APIClient, tuple[str, ...], bool]:
    """An API client, the *System information* lines of the engine, and whether it remaps users.

    Users are remapped by a rootless engine or one with ``userns-remap``: root
    in a container is then not root on the host.
    """
    try:
        api = docker.APIClient(base_url=docker_host, version="auto", timeout=300)
        info = api.info()
    except docker.errors.DockerException as exc:
        raise ExecutorError(
            f"cannot reach the Docker engine at {docker_host} ({str(exc)[:160]}); "
            "is it running? (or use --executor host)"
        ) from exc
    lines = [f"Docker engine version {info.get('ServerVersion', '?')}", "System information:"]
    for label, key in (
        ("Server Version", "ServerVersion"),
        ("Storage Driver", "Driver"),
        ("Cgroup Driver", "CgroupDriver"),
        ("Cgroup Version", "CgroupVersion"),
        ("Kernel Version", "KernelVersion"),
        ("Operating System", "OperatingSystem"),
        ("OSType", "OSType"),
        ("Architecture", "Architecture"),
    ):
        if info.get(key):
            lines.append(f" {label}: {info[key]}")
    options = " ".join(str(option) for option in info.get("SecurityOptions") or ())
    remapped = "name=rootless" in options or "name=userns" in options
    return api, tuple(lines), remapped


def image_lines(spec: DockerImage, image: ResolvedImage) -> list[str]:
    """*Spin up environment* lines for one container's image."""
    lines = [f"Starting container {spec.image}"]
    if image.local != spec.image:
        lines.append(f"  mapped to local image {image.local}")
    lines.append("  pulled" if image.pulled else "  image cache found on this host")
    lines.append(f"{spec.image}:")
    lines.append(f"  using image {image.digest or image.local} ({image.short_id})")
    return lines


def env_dict(items: Any) -> dict[str, str]:
    """An image config's ``Env`` list as a dict."""
    result: dict[str, str] = {}
    for item in items or ():
        key, _, value = str(item).partition("=")
        result[key] = value
    return result
