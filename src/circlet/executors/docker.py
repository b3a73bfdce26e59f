"""The docker executor: a job's primary container plus its service containers.

As on CircleCI, the primary (``images[0]``) only has to stay up: its image
ENTRYPOINT/CMD are ignored and a keep-alive runs instead, and every step is a
``docker exec`` into it. When the config gives the primary a ``command`` (or
``entrypoint``), that runs too, as a detached exec beside the steps, so that
a command that exits does not take the job's container down with it.

Service containers (``images[1:]``) run their own entrypoint/command and join
the primary's network namespace (``network_mode=container:<primary>``), so
they answer on ``localhost``. A service's ``name`` is added to the primary's
``/etc/hosts`` as 127.0.0.1 (the namespace is shared, so every name is local).

Every container carries the label ``circlet.job=<job_key>``; ``stop`` and
:func:`remove_leftovers` find them by it.

Files move in and out by one of two ways. The job's staging directory
(``staging_dir``, on a local engine) is bind-mounted into the primary at its
own path, so a copy between it and the job is one ``cp -a`` inside (see
:mod:`circlet.executors.staging`). Any other host path goes as a tar stream
(host ``tar`` ↔ the engine's archive API) with the container user's uid/gid
in the headers. Either way copied-in files belong to that user.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import signal
import tarfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors

from circlet import settings
from circlet.executors import dockercopy, images, mergeddir, process, staging
from circlet.executors.base import ExecResult, ExecutorError, OutputCallback, StartInfo
from circlet.executors.common import CA_BUNDLE_VARIABLES, LABEL_JOB, expand_path, safe_name
from circlet.executors.dockerexec import WRAPPER, DockerSocket
from circlet.plan import DockerImage, JobSpec, SetupRemoteDockerStep

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
LABEL_ROLE = "circlet.role"
CA_PATH = "/etc/ssl/certs/circlet-ca.crt"
AGENT_BIN = "/opt/circlet/bin"
KEEPALIVE = ("/bin/sh", "-c", "while :; do sleep 86400; done")
_ENGINE_MOUNTS = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
_PROBE = 'printf "%s\\n%s\\n" "$HOME" "$PATH"; id -u; id -g'


class DockerExecutor:
    """Starts job environments on a Docker engine; one object serves many jobs."""

    name = "docker"

    def __init__(
        self,
        *,
        image_map: Mapping[str, str] | None = None,
        ca_bundle: str | None = None,
        agent_bin: Path | None = None,
        docker_host: str | None = None,
        pull_timeout: float = images.DEFAULT_PULL_TIMEOUT,
        work_dir: Path | None = None,
    ) -> None:
        """``image_map`` (flags, .circlet.yml) overlays the ``image`` setting.

        ``ca_bundle`` (default: the ``ca-bundle`` setting) is mounted into every
        container and trusted there; ``agent_bin`` is mounted read-only at
        /opt/circlet/bin and put first on PATH; ``docker_host`` defaults to
        $DOCKER_HOST, else the local socket; ``work_dir`` (default
        ``<circlet home>/work``) holds the jobs' staging directories.
        """
        self.image_map = images.image_map(image_map)
        self.ca_bundle = settings.CA_BUNDLE.get() if ca_bundle is None else ca_bundle
        self.agent_bin = agent_bin
        self.docker_host = docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        self.pull_timeout = pull_timeout
        self._work_dir = work_dir
        self._socket = DockerSocket(self.docker_host)
        self._api: docker.APIClient | None = None
        self._system: tuple[str, ...] = ()
        self._remapped = False  # root inside is not root here (rootless, userns-remap)
        self._lock = threading.Lock()

    @property
    def api(self) -> docker.APIClient:
        """The engine's API client (connected on first use)."""
        with self._lock:
            if self._api is None:
                self._api, self._system, self._remapped = images.connect(self.docker_host)
            return self._api

    @property
    def work_dir(self) -> Path:
        """Where the jobs' staging directories go."""
        if self._work_dir is None:
            self._work_dir = settings.home_dir() / "work"
        return self._work_dir

    def start(
        self, job: JobSpec, *, job_key: str, extra_env: Mapping[str, str]
    ) -> DockerEnvironment:
        """Resolve the images, start the containers, ask the primary for $HOME."""
        spec = job.executor
        if spec is None or spec.kind != "docker" or not spec.images:
            kind = spec.kind if spec is not None else "no"
            raise ExecutorError(
                f"job {job.name} uses a {kind} executor, not docker images; "
                "run it with --executor host"
            )
        if self.ca_bundle and not os.path.isfile(self.ca_bundle):
            raise ExecutorError(f"CA bundle {self.ca_bundle} does not exist")
        api = self.api
        resolved = [
            images.ensure_image(
                api,
                img.image,
                self.image_map,
                docker_host=self.docker_host,
                pull_timeout=self.pull_timeout,
            )
            for img in spec.images
        ]
        env = DockerEnvironment(self, api, job, job_key)
        try:
            env.start(spec.images, resolved, extra_env, self._system)
        except docker.errors.APIError as exc:
            env.stop()
            raise ExecutorError(
                f"cannot start the containers of job {job.name}: {images.short_reason(exc)}"
            ) from exc
        except BaseException:
            env.stop()
            raise
        return env

    def remove_leftovers(self, job_key_prefix: str) -> int:
        """Remove every container whose ``circlet.job`` starts with the prefix (Ctrl-C).

        Their staging directories go too.
        """
        removed = remove_leftovers(job_key_prefix, api=self.api)
        staging.remove_leftovers(self.work_dir, safe_name(job_key_prefix))
        return removed


class DockerEnvironment:
    """A started docker job: the primary container, its services, and how to exec."""

    info: StartInfo
    staging_dir: Path | None

    def __init__(
        self, executor: DockerExecutor, api: docker.APIClient, job: JobSpec, job_key: str
    ) -> None:
        self._executor = executor
        self._api = api
        self._job = job
        self._job_key = job_key
        self.containers: list[str] = []  # ids, primary first
        self.primary = ""
        self._home = "/root"
        self._path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self._uid = self._gid = 0
        self._stopped = False
        self.info = StartInfo(lines=(), home=self._home)
        self.staging_dir = None
        self._staging: Path | None = None  # created and mounted; staging_dir once confirmed
        self._merged: tuple[Path, tuple[str, ...]] | bool | None = False  # False: not asked yet
        self._created: dict[str, str] = {}  # inside path → its first ancestor host_path created

    # ------------------------------------------------------------------ start

    def start(
        self,
        specs: tuple[DockerImage, ...],
        resolved: list[images.ResolvedImage],
        extra_env: Mapping[str, str],
        system: tuple[str, ...],
    ) -> None:
        """Create and start the containers (called once, by DockerExecutor.start)."""
        started = time.monotonic()
        ex = self._executor
        binds: list[str] = []
        base_env: dict[str, str] = {}
        if ex.ca_bundle:
            binds.append(f"{os.path.abspath(ex.ca_bundle)}:{CA_PATH}:ro")
            base_env.update(dict.fromkeys(CA_BUNDLE_VARIABLES, CA_PATH))
        primary_binds = list(binds)
        if ex.agent_bin is not None:
            primary_binds.append(f"{os.path.abspath(ex.agent_bin)}:{AGENT_BIN}:ro")
        group_add: list[str] = []
        details = {"executor": "docker", "image": specs[0].image, "local_image": resolved[0].local}
        if any(isinstance(step, SetupRemoteDockerStep) for step in self._job.steps):
            sock = ex._socket.address
            if not isinstance(sock, str):
                raise ExecutorError("setup_remote_docker needs a local (unix socket) Docker engine")
            primary_binds.append(f"{sock}:/var/run/docker.sock")
            with contextlib.suppress(OSError):  # let a non-root user use the socket
                group_add.append(str(os.stat(sock).st_gid))
            details["docker_host"] = "unix:///var/run/docker.sock"

        lines = [*system, ""]
        primary_spec, primary_image = specs[0], resolved[0]
        token = self._prepare_staging(primary_spec, primary_image, extra_env)
        if self._staging is not None:
            primary_binds.append(f"{self._staging}:{self._staging}:rw")
        lines += images.image_lines(primary_spec, primary_image)
        created = time.monotonic()
        self.primary = self._create(
            primary_image.local,
            role="primary",
            entrypoint=list(KEEPALIVE),
            command=[],
            user=primary_spec.user,
            environment={**base_env, **primary_spec.environment, **extra_env},
            host_config=self._api.create_host_config(
                binds=primary_binds,
                init=True,
                extra_hosts={s.name: "127.0.0.1" for s in specs[1:] if s.name},
                group_add=group_add or None,
            ),
        )
        self._api.start(self.primary)
        lines.append(f"  time to create container: {time.monotonic() - created:.3f}s")
        for spec, image in zip(specs[1:], resolved[1:], strict=True):
            lines += images.image_lines(spec, image)
            created = time.monotonic()
            service = self._create(
                image.local,
                role="service",
                entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
                command=list(spec.command) if spec.command is not None else None,
                user=spec.user,
                environment={**base_env, **spec.environment},
                host_config=self._api.create_host_config(
                    binds=binds, network_mode=f"container:{self.primary}"
                ),
            )
            self._api.start(service)
            lines.append(f"  time to create container: {time.monotonic() - created:.3f}s")
        self._learn_user(primary_spec, primary_image, extra_env)
        self._confirm_staging(token)
        if ex.agent_bin is not None:
            self._path = f"{AGENT_BIN}:{self._path}"
        self._start_primary_command(primary_spec, primary_image)
        lines.append(f"Time to start containers: {time.monotonic() - started:.3f}s")
        details["container"] = self.primary[:12]
        if self.staging_dir is not None:
            details["staging_dir"] = str(self.staging_dir)
        details["user"] = primary_spec.user or str(primary_image.config.get("User") or "root")
        self.info = StartInfo(lines=tuple(lines), home=self._home, details=details)

    def _create(
        self,
        image: str,
        *,
        role: str,
        entrypoint: list[str] | None,
        command: list[str] | None,
        user: str | None,
        environment: dict[str, str],
        host_config: dict[str, Any],
    ) -> str:
        created = self._api.create_container(
            image,
            entrypoint=entrypoint,
            command=command,
            user=user or "",
            environment=environment,
            labels={LABEL_JOB: self._job_key, LABEL_ROLE: role},
            host_config=host_config,
            detach=True,
        )
        container_id = str(created["Id"])
        self.containers.append(container_id)
        if self._stopped:  # stop() ran meanwhile (Ctrl-C): it may not have seen this one
            with contextlib.suppress(docker.errors.APIError):
                self._api.remove_container(container_id, force=True, v=True)
            raise ExecutorError("the job was stopped while its containers were starting")
        return container_id

    def _prepare_staging(
        self, spec: DockerImage, image: images.ResolvedImage, extra_env: Mapping[str, str]
    ) -> str:
        """Create the staging directory to mount; the token its marker file holds."""
        if not isinstance(self._executor._socket.address, str) or self._executor._remapped:
            # A remote engine mounts another machine's files; with remapped
            # users the root copies inside could not hand files to the host.
            return ""
        env = images.env_dict(image.config.get("Env")) | spec.environment | dict(extra_env)
        user = (spec.user or str(image.config.get("User") or "")).partition(":")[0]
        home = env.get("HOME") or ("/root" if user in ("", "root", "0") else f"/home/{user}")
        working = expand_path(".", home=home, working_directory=self._job.working_directory)
        name = safe_name(self._job_key)
        self._staging = staging.prepare(self._executor.work_dir, name, [home, working])
        if self._staging is None:
            return ""
        token = f"{name} {os.urandom(8).hex()}"
        try:
            (self._staging / staging.MARKER).write_text(token)
        except OSError:
            staging.remove(self._staging)
            self._staging = None
        return token

    def _confirm_staging(self, token: str) -> None:
        """Use the staging directory if the container really sees it, away from the job's files.

        The marker is not found when the engine's filesystem is not ours (a
        socket forwarded from another machine or from the host of this container).
        """
        if self._staging is None:
            return
        marker = self._staging / staging.MARKER
        seen = self._read_file(str(marker))
        with contextlib.suppress(OSError):
            marker.unlink()
        working = self.expand(".")
        if seen == token and not any(
            staging.overlaps(str(self._staging), path) for path in (self._home, working)
        ):
            self.staging_dir = self._staging

    def _learn_user(
        self, spec: DockerImage, image: images.ResolvedImage, extra_env: Mapping[str, str]
    ) -> None:
        """$HOME, $PATH, uid and gid of the primary's user, as ``docker exec`` will see them.

        Read from the image config and the container's /etc/passwd (one archive
        call) rather than asked of a shell: an exec costs several times more.
        """
        env = images.env_dict(image.config.get("Env")) | spec.environment | dict(extra_env)
        self._path = env.get("PATH", self._path)
        user = spec.user or str(image.config.get("User") or "")
        name, _, group = user.partition(":")
        passwd = self._read_file("/etc/passwd")
        if passwd is None:
            self._probe()
            return
        entry = _passwd_entry(passwd, name or "0")
        if entry is None and not (name or "0").isdigit():
            self._probe()  # a user we cannot place; the shell knows
            return
        self._uid = int(name) if entry is None else int(entry[2])
        self._gid = int(entry[3]) if entry is not None else self._uid
        if group:
            if group.isdigit():
                self._gid = int(group)
            else:
                self._probe()
                return
        self._home = env.get("HOME") or (entry[5] if entry is not None and entry[5] else "/")

    def _read_file(self, path: str) -> str | None:
        try:
            stream, _ = self._api.get_archive(self.primary, path)
            data = b"".join(stream)
        except docker.errors.APIError:
            return None
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            member = next((m for m in archive.getmembers() if m.isfile()), None)
            handle = archive.extractfile(member) if member is not None else None
            return handle.read().decode(errors="replace") if handle is not None else None

    def _probe(self) -> None:
        """Ask the primary, as its user, for $HOME, $PATH, uid and gid."""
        chunks: list[bytes] = []
        result = self._exec(["sh", "-c", _PROBE], env={}, cwd=None, on_output=chunks.append)
        fields = b"".join(chunks).decode(errors="replace").splitlines()
        if result.exit_code != 0 or len(fields) < 4:
            raise ExecutorError(
                f"the primary container does not run sh ({result.exit_code}): "
                f"{' '.join(fields)[:200]}"
            )
        self._home, self._path = fields[0] or "/", fields[1] or self._path
        self._uid = int(fields[2]) if fields[2].isdigit() else 0
        self._gid = int(fields[3]) if fields[3].isdigit() else 0

    def _start_primary_command(self, spec: DockerImage, image: images.ResolvedImage) -> None:
        if spec.entrypoint is None and spec.command is None:
            return  # CircleCI ignores the primary image's own ENTRYPOINT and CMD
        entrypoint = spec.entrypoint
        if entrypoint is None:
            entrypoint = tuple(image.config.get("Entrypoint") or ())
        argv = [*entrypoint, *(spec.command or ())]
        if argv:
            exec_id = self._api.exec_create(self.primary, argv, environment=self._env({}))["Id"]
            self._api.exec_start(exec_id, detach=True)

    # ------------------------------------------------------------------- exec

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
        """``docker exec`` into the primary, streamed; kills happen inside the container."""
        if self._stopped:
            raise ExecutorError("the docker environment was stopped")
        return self._exec(
            argv,
            env=env,
            cwd=self.expand(cwd) if cwd is not None else None,
            on_output=on_output,
            stdin=stdin,
            timeout=timeout,
            no_output_timeout=no_output_timeout,
            cancel=cancel,
        )

    def _exec(
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
        user: str = "",
    ) -> ExecResult:
        try:
            exec_id = self._api.exec_create(
                self.primary,
                [*WRAPPER, *argv],
                stdout=True,
                stderr=True,
                stdin=stdin is not None,
                environment=self._env(env),
                workdir=cwd,
                user=user,
            )["Id"]
        except docker.errors.APIError as exc:
            raise ExecutorError(f"docker exec: {images.short_reason(exc)}") from exc
        stream = self._executor._socket.start_exec(
            self._api.api_version, exec_id, stdin=stdin is not None, signal_group=self._signal
        )
        try:
            outcome = process.supervise(
                stream,
                on_output=on_output,
                stdin=stdin,
                timeout=timeout,
                no_output_timeout=no_output_timeout,
                cancel=cancel,
            )
        finally:
            stream.close()
        if outcome.reason is not None:
            return outcome.result(None)
        return ExecResult(exit_code=self._exit_code(exec_id, cancel))

    def _env(self, env: Mapping[str, str]) -> dict[str, str]:
        result = {"PATH": self._path, **env}
        if "PATH" in env and self._executor.agent_bin is not None:
            parts = env["PATH"].split(":")
            if AGENT_BIN not in parts:
                result["PATH"] = ":".join([AGENT_BIN, *parts])
        return result

    def _exit_code(self, exec_id: str, cancel: threading.Event | None) -> int | None:
        # The stream can end a moment before the engine records the exit code.
        for _ in range(200):
            try:
                state = self._api.exec_inspect(exec_id)
            except docker.errors.APIError as exc:
                if self._stopped or (cancel is not None and cancel.is_set()):
                    return None  # the job is being torn down around a background step
                raise ExecutorError(f"docker exec: {images.short_reason(exc)}") from exc
            if not state.get("Running"):
                code = state.get("ExitCode")
                return int(code) if code is not None else None
            time.sleep(0.01)
        return None

    def _signal(self, pgid: int, sig: signal.Signals) -> None:
        """``kill -SIG -PGID`` inside the primary, as root (a step may have used sudo)."""
        name = sig.name.removeprefix("SIG")
        with contextlib.suppress(docker.errors.APIError):
            exec_id = self._api.exec_create(
                self.primary, ["sh", "-c", f"kill -{name} -{pgid} 2>/dev/null"], user="0"
            )["Id"]
            self._api.exec_start(exec_id, detach=True)

    # ------------------------------------------------------------- files, paths

    def expand(self, path: str) -> str:
        """``~`` → the container user's HOME; relative → the job's working directory."""
        return expand_path(path, home=self._home, working_directory=self._job.working_directory)

    def copy_in(self, src: Path, dest: str) -> None:
        """Copy ``src`` (a directory's contents, or a file to the path ``dest``) in.

        From under ``staging_dir``: the files are given to the container's user
        on the host, then one ``cp -a`` inside. Otherwise a tar stream.
        """
        target = self.expand(dest)
        owner = (self._uid, self._gid)
        if self.staging_dir is not None and dockercopy.staged_in(
            self.staging_dir, src, target, owner=owner, run_root=self._run_root
        ):
            return
        dockercopy.tar_in(self._api, self.primary, src, target, owner=owner, mkdir=self._mkdir)

    def copy_out(self, src: str, dest: Path) -> bool:
        """Copy ``src`` out to ``dest`` (a directory's contents, or a file); False if missing.

        Into ``staging_dir``: one ``cp -a`` inside. Otherwise a tar stream.
        """
        source = self.expand(src)
        if self.staging_dir is not None:
            staged = staging.host_path(dest)
            if staging.is_under(staged, self.staging_dir):
                return dockercopy.staged_out(source, staged, run_root=self._run_root)
        return dockercopy.tar_out(self._api, self.primary, source, dest)

    def host_path(self, inside: str) -> Path | None:
        """``inside`` under the container's overlay2 merged directory, or None.

        Only for a local engine whose files are ours (the staging directory was
        confirmed), run as root, and only for a path with no existing symlink
        component and on no bind mount or volume: see :mod:`mergeddir`.
        """
        merged = self._merged_dir()
        if merged is None or self._stopped:
            return None
        found = mergeddir.resolve(merged[0], merged[1], inside)
        if found is None:
            return None
        path, missing = found
        if missing is not None:
            self._created[posixpath.normpath(inside)] = missing
        return path

    def adopt(self, inside: str) -> None:
        """``chown -hR`` to the container's user what was written at ``inside`` (and the
        parent directories it needed), through the merged directory."""
        inside = posixpath.normpath(inside)
        top = self._created.pop(inside, inside)
        path = self.host_path(top)
        if path is not None and os.path.lexists(path):
            mergeddir.chown_tree(path, self._uid, self._gid)

    def _merged_dir(self) -> tuple[Path, tuple[str, ...]] | None:
        if self._merged is False:
            self._merged = None
            if self.staging_dir is not None and os.geteuid() == 0:
                with contextlib.suppress(docker.errors.APIError, KeyError, TypeError):
                    state = self._api.inspect_container(self.primary)
                    driver = state["GraphDriver"]
                    merged = Path(str(driver["Data"]["MergedDir"]))
                    if driver["Name"] == "overlay2" and merged.is_dir():
                        # Besides binds and volumes, the engine's own mounts: /etc/hosts… and tmpfs.
                        mounts = (
                            *_ENGINE_MOUNTS,
                            *(str(m["Destination"]) for m in state.get("Mounts") or ()),
                            *(state.get("HostConfig", {}).get("Tmpfs") or {}),
                        )
                        self._merged = (merged, mounts)
        return self._merged if isinstance(self._merged, tuple) else None

    def _run_root(self, script: str, args: list[str], what: str) -> int:
        """Run a copy script as root in the primary; its exit code (0 or ``MISSING``)."""
        if self._stopped:
            raise ExecutorError("the docker environment was stopped")
        chunks: list[bytes] = []
        result = self._exec(
            ["sh", "-c", script, "sh", *args],
            env={},
            cwd=None,
            on_output=chunks.append,
            user="0",
        )
        if result.exit_code is not None and result.exit_code in (0, staging.MISSING):
            return result.exit_code
        text = b"".join(chunks).decode(errors="replace").strip().replace("\n", "; ")
        raise ExecutorError(f"{what}: {text[-300:] or f'exit code {result.exit_code}'}")

    def _mkdir(self, directory: str) -> None:
        chunks: list[bytes] = []
        result = self._exec(["mkdir", "-p", directory], env={}, cwd=None, on_output=chunks.append)
        if result.exit_code != 0:
            text = b"".join(chunks).decode(errors="replace").strip()
            raise ExecutorError(f"cannot create {directory} in the container: {text[-200:]}")

    # ------------------------------------------------------------------- stop

    def stop(self) -> None:
        """Remove every container of the job (also after a partial start); never raises."""
        if self._stopped:
            return
        self._stopped = True
        if self._staging is not None and self.primary and os.geteuid() != 0:
            # Copies made as root inside may not be ours to delete: take them back first.
            with contextlib.suppress(Exception):
                owner = f"{os.geteuid()}:{os.getegid()}"
                self._exec(
                    ["chown", "-R", owner, str(self._staging)],
                    env={},
                    cwd=None,
                    on_output=lambda _: None,
                    user="0",
                )
        ids = list(self.containers)
        with contextlib.suppress(Exception):  # a create whose answer we never got
            for found in self._api.containers(
                all=True, quiet=True, filters={"label": f"{LABEL_JOB}={self._job_key}"}
            ):
                if found["Id"] not in ids:
                    ids.append(found["Id"])
        for container_id in reversed(ids):  # services first: they use the primary's network
            with contextlib.suppress(Exception):
                self._api.remove_container(container_id, force=True, v=True)
        if self._staging is not None:
            staging.remove(self._staging)
            self._staging = None


def remove_leftovers(job_key_prefix: str, *, api: docker.APIClient | None = None) -> int:
    """Force-remove containers labelled ``circlet.job=<prefix>…``; how many were removed."""
    client = api or images.connect(os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST)[0]
    removed = 0
    for found in client.containers(all=True, filters={"label": LABEL_JOB}):
        if str(found.get("Labels", {}).get(LABEL_JOB, "")).startswith(job_key_prefix):
            with contextlib.suppress(docker.errors.APIError):
                client.remove_container(found["Id"], force=True, v=True)
                removed += 1
    return removed


def _passwd_entry(passwd: str, user: str) -> list[str] | None:
    """The /etc/passwd fields of ``user`` (a name or a uid)."""
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and (fields[0] == user or (user.isdigit() and fields[2] == user)):
            return fields
    return None
