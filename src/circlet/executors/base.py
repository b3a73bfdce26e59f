"""The Executor protocol: the seam between the engine and a place that runs commands.

Lifecycle (as in Woodpecker's Backend): ``Executor.start(job)`` → an
``Environment`` → ``exec`` (many times, streamed output, timeouts) and file
copies in/out → ``stop``. ``stop`` is always safe to call, also after a
failed or partial ``start``, and more than once.

Executors never mask secrets: the engine wraps ``on_output`` with its masker,
so every byte a job prints goes through one place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from circlet.plan import JobSpec

OutputCallback = Callable[[bytes], None]


class ExecutorError(Exception):
    """An environment could not be started or used; the message is one line for the user."""


@dataclass(frozen=True)
class ExecResult:
    """How a command ended. ``exit_code`` is None when it was killed by us."""

    exit_code: int | None
    timed_out: bool = False  # the overall timeout
    no_output_timeout: bool = False  # no output for ``no_output_timeout`` seconds
    cancelled: bool = False


@dataclass(frozen=True)
class StartInfo:
    """What *Spin up environment* reports."""

    lines: tuple[str, ...]  # human lines: image, digest/engine version, timings…
    home: str  # $HOME inside the environment, to expand ``~``
    details: dict[str, str] = field(default_factory=dict)  # executor, image, resource class…


class Environment(Protocol):
    """A started job environment (a container set, or a private host directory)."""

    info: StartInfo
    # A private host directory of this job that the environment also sees at
    # the same absolute path (docker: bind-mounted into the primary; host: a
    # directory in the job directory), or None where there is none (a remote
    # engine). The engine makes its per-step staging directories under it:
    # ``copy_in`` from it and ``copy_out`` into it are then fast local copies
    # (``cp -a``) instead of tar streams. Removed by ``stop``.
    staging_dir: Path | None

    def exec(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        on_output: OutputCallback,
        stdin: bytes | None = None,
        timeout: float | None = None,
        no_output_timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> ExecResult:
        """Run ``argv`` (stdout and stderr merged, as CircleCI shows them); block until done.

        On timeout, no-output timeout or cancel: interrupt → terminate → kill the
        whole process group, then return with the matching flag set.
        """
        ...

    def expand(self, path: str) -> str:
        """``~``/``~/x``/relative path (to the working directory) → absolute path inside."""
        ...

    def copy_in(self, src: Path, dest: str) -> None:
        """Copy a host directory's *contents* (or a file) to ``dest`` inside, creating it."""
        ...

    def copy_out(self, src: str, dest: Path) -> bool:
        """Copy ``src`` (file or directory) from inside to host ``dest``; False if missing."""
        ...

    def host_path(self, inside: str) -> Path | None:
        """A host path through which the file ``inside`` (absolute) is read and written
        directly, or None (then use ``copy_in``/``copy_out``). Optional: an
        environment without this method is treated as returning None."""
        ...

    def adopt(self, inside: str) -> None:
        """Give files just written through :meth:`host_path` to the environment's user."""
        ...

    def stop(self) -> None:
        """Remove containers / kill leftover processes. Idempotent, never raises."""
        ...


class Executor(Protocol):
    """Starts environments for jobs. One Executor object serves many jobs."""

    name: str  # "docker" | "host"

    def start(self, job: JobSpec, *, job_key: str, extra_env: Mapping[str, str]) -> Environment:
        """Start the environment for ``job``; ``job_key`` names containers/dirs uniquely."""
        ...
