"""The host executor: a job's steps run on this machine, in a private job directory.

Each job gets ``<base>/<job_key>/`` with ``home/`` as ``$HOME`` (so the default
working directory ``~/project`` lands inside it), ``staging/`` for the engine's
transfers (the environment's ``staging_dir``) and ``bin/`` of shims that
stand in for the primary image's Python: ``python``, ``python3``, ``pip`` and
``pip3`` point at the interpreter that matches ``cimg/python:X.Y`` best.

The environment is built from scratch (PATH, HOME, USER, LANG, the CA bundle
variables) rather than inherited, so a job sees what CircleCI would give it
and not the caller's shell. Service images cannot run here; they are listed
as skipped.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from circlet import overlay, settings
from circlet.executors import process
from circlet.executors.base import ExecResult, ExecutorError, OutputCallback, StartInfo
from circlet.executors.common import CA_BUNDLE_VARIABLES, expand_path, safe_name
from circlet.executors.pythons import (
    Choice,
    choose,
    find_interpreters,
    pyenv_root,
    requested_version,
)
from circlet.executors.staging import STAGING
from circlet.overlay import CowArea
from circlet.plan import JobSpec

KEEP_WORKDIR_ENV = "CIRCLET_KEEP_WORKDIR"
# CA variables passed through from the caller's environment: behind an
# intercepting proxy nothing that talks HTTPS works without them.
CA_VARIABLES = (*CA_BUNDLE_VARIABLES, "SSL_CERT_DIR")


class HostExecutor:
    """Runs jobs on this machine; one object serves many jobs."""

    name = "host"

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        agent_bin: Path | None = None,
        ca_bundle: str | None = None,
        keep_workdir: bool | None = None,
    ) -> None:
        """``base_dir`` holds the job directories (default ``<circlet home>/work``).

        ``agent_bin`` is put on PATH (the engine's ``circleci-agent`` helpers);
        ``ca_bundle`` (default: the ``ca-bundle`` setting) is exported as
        SSL_CERT_FILE & co.; ``keep_workdir`` (default: ``$CIRCLET_KEEP_WORKDIR=1``)
        keeps job directories after ``stop``.
        """
        self._base_dir = base_dir
        self.agent_bin = agent_bin
        self.ca_bundle = settings.CA_BUNDLE.get() if ca_bundle is None else ca_bundle
        if keep_workdir is None:
            keep_workdir = os.environ.get(KEEP_WORKDIR_ENV, "") == "1"
        self.keep_workdir = keep_workdir

    @property
    def base_dir(self) -> Path:
        """Where job directories go."""
        if self._base_dir is None:
            self._base_dir = settings.home_dir() / "work"
        return self._base_dir

    def start(self, job: JobSpec, *, job_key: str, extra_env: Mapping[str, str]) -> HostEnvironment:
        """Create the job directory and the Python shims; see the module doc."""
        started = time.monotonic()
        job_dir = self.base_dir / safe_name(job_key)
        lines: list[str] = []
        details = {"executor": "host", "job_dir": str(job_dir)}
        image = ""
        if job.executor is not None and job.executor.images:
            image = job.executor.images[0].image
            details["image"] = image
        try:
            if job_dir.exists():  # a leftover of an interrupted run with the same key
                overlay.unmount_under(job_dir)
                shutil.rmtree(job_dir)
            home = job_dir / "home"
            shim_dir = job_dir / "bin"
            home.mkdir(parents=True)
            shim_dir.mkdir()
            (job_dir / STAGING).mkdir(mode=0o700)
        except OSError as exc:
            raise ExecutorError(f"cannot create the job directory {job_dir}: {exc}") from exc

        path_dirs = [str(shim_dir)]
        if self.agent_bin is not None:
            path_dirs.append(str(self.agent_bin))
        lines.append(f"Running on this machine in {job_dir}")
        requested = requested_version(image) if image else None
        if requested is not None:
            choice = choose(requested, list(find_interpreters()))
            lines.append(choice.describe(image))
            if choice.interpreter is not None:
                _write_shims(shim_dir, choice)
                details["python"] = str(choice.interpreter.path)
                if choice.interpreter.bin_dir is not None:
                    path_dirs.append(str(choice.interpreter.bin_dir))
        elif image:
            lines.append(f"{image} is not emulated on the host; commands use this machine's tools")
        if job.executor is not None:
            lines.extend(
                f"service image {service.image} not started (host executor)"
                for service in job.executor.images[1:]
            )

        host_path = os.environ.get("PATH", os.defpath)
        env: dict[str, str] = {
            "PATH": os.pathsep.join([*path_dirs, host_path]),
            "HOME": str(home),
            "USER": _user(),
            "LOGNAME": _user(),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "SHELL": "/bin/bash",
        }
        root = pyenv_root()
        if root is not None:  # pyenv's shims find their versions through PYENV_ROOT, not $HOME
            env["PYENV_ROOT"] = str(root)
        for name in CA_VARIABLES:
            if name in os.environ:
                env[name] = os.environ[name]
        if self.ca_bundle:
            for name in CA_BUNDLE_VARIABLES:
                env[name] = self.ca_bundle
        env.update(extra_env)
        env["PATH"] = _with_dirs_first(path_dirs, env["PATH"])
        lines.append(f"Time to prepare environment: {time.monotonic() - started:.2f}s")
        info = StartInfo(lines=tuple(lines), home=str(home), details=details)
        return HostEnvironment(
            info,
            job_dir=job_dir,
            base_env=env,
            path_dirs=path_dirs,
            working_directory=job.working_directory,
            keep=self.keep_workdir,
        )


class HostEnvironment:
    """A started host job: its directory, its environment and its process groups."""

    staging_dir: Path | None

    def __init__(
        self,
        info: StartInfo,
        *,
        job_dir: Path,
        base_env: dict[str, str],
        path_dirs: list[str],
        working_directory: str,
        keep: bool,
    ) -> None:
        self.info = info
        self.job_dir = job_dir
        self.staging_dir = job_dir / STAGING
        self.base_env = base_env
        self._path_dirs = path_dirs
        self._working_directory = working_directory
        self._keep = keep
        self._groups: set[int] = set()
        self._lock = threading.Lock()
        self._stopped = False
        # Caches restored as overlay mounts (store.blobs.cow), detached at stop; a
        # kept job directory is for inspection after the run, so it gets plain files.
        self.cow_area: CowArea | None = None if keep else CowArea(job_dir / "cow")

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
        """Run ``argv`` on this machine with the job's environment plus ``env``."""
        if self._stopped:
            raise ExecutorError("the host environment was stopped")
        full_env = {**self.base_env, **env}
        if "PATH" in env:  # the job's PATH still needs the shims and helpers first
            full_env["PATH"] = _with_dirs_first(self._path_dirs, env["PATH"])
        pgid_box: list[int] = []

        def track(pgid: int) -> None:
            pgid_box.append(pgid)
            with self._lock:
                self._groups.add(pgid)

        result = process.run(
            argv,
            env=full_env,
            cwd=self.expand(cwd) if cwd is not None else None,
            on_output=on_output,
            stdin=stdin,
            timeout=timeout,
            no_output_timeout=no_output_timeout,
            cancel=cancel,
            on_start=track,
        )
        for pgid in pgid_box:
            if not _group_alive(pgid):  # nothing left behind: forget it (pids get reused)
                with self._lock:
                    self._groups.discard(pgid)
        return result

    def expand(self, path: str) -> str:
        """``~`` → the job's HOME; a relative path is taken from the working directory."""
        return expand_path(path, home=self.info.home, working_directory=self._working_directory)

    def copy_in(self, src: Path, dest: str) -> None:
        """Copy a directory's contents (or a file, to the path ``dest``) into the job."""
        _copy(src, Path(self.expand(dest)))

    def copy_out(self, src: str, dest: Path) -> bool:
        """Copy a directory's contents (or a file) out of the job; False if ``src`` is missing."""
        source = Path(self.expand(src))
        if not os.path.lexists(source):
            return False
        _copy(source, dest)
        return True

    def host_path(self, inside: str) -> Path | None:
        """The job's files are the host's: ``inside`` itself (expanded)."""
        return Path(self.expand(inside))

    def adopt(self, inside: str) -> None:
        """Nothing to do: files written here already belong to the job's user."""

    def stop(self) -> None:
        """Kill what the job left running and remove its directory (unless kept)."""
        if self._stopped:
            return
        self._stopped = True
        with self._lock:
            groups = sorted(self._groups)
            self._groups.clear()
        for pgid in groups:
            process.kill_group(pgid, signal.SIGKILL)
        if self.cow_area is not None:
            self.cow_area.release()
        if not self._keep:
            shutil.rmtree(self.job_dir, ignore_errors=True)
        elif self.staging_dir is not None:  # scratch space: not worth keeping
            shutil.rmtree(self.staging_dir, ignore_errors=True)


def _copy(src: Path, dest: Path) -> None:
    """``cp -a``: modes, times and symlinks kept; a directory's contents merge into ``dest``."""
    if src.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        process.check_output(["cp", "-a", f"{src}/.", f"{dest}/"], what=f"copy {src}")
    elif os.path.lexists(src):
        dest.parent.mkdir(parents=True, exist_ok=True)
        process.check_output(["cp", "-a", str(src), str(dest)], what=f"copy {src}")
    else:
        raise ExecutorError(f"cannot copy {src}: no such file or directory")


def _write_shims(shim_dir: Path, choice: Choice) -> None:
    assert choice.interpreter is not None
    exe = choice.interpreter.path
    major, minor, _ = choice.interpreter.version
    for name in ("python", "python3", f"python{major}.{minor}"):
        (shim_dir / name).symlink_to(exe)
    for name in ("pip", "pip3", f"pip{major}.{minor}"):
        shim = shim_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{exe}" -m pip "$@"\n')
        shim.chmod(0o755)


def _with_dirs_first(dirs: list[str], path: str) -> str:
    """``path`` with ``dirs`` in front (those it lacks)."""
    parts = path.split(os.pathsep)
    return os.pathsep.join([*(d for d in dirs if d not in parts), *parts])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "circleci"
