"""Copies between the host and a docker job's primary container.

Two ways: a tar stream through the engine's archive API (any host path, any
engine), and one ``cp -a`` run as root inside the container when the host
side is in the job's staging directory, which is mounted at the same path
(see :mod:`circlet.executors.staging`). The second is a local copy, several
times faster for trees of many files.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors

from circlet.executors import images, process, staging
from circlet.executors.base import ExecutorError

_MODE_DIR = 1 << 31  # Go's os.ModeDir in the archive API's stat header
_CHUNK = 1 << 20

# Runs a shell script with arguments as root in the primary: (script, args,
# what for messages) → its exit code, 0 or ``staging.MISSING`` (raises otherwise).
RunRoot = Callable[[str, list[str], str], int]


def tar_in(
    api: docker.APIClient,
    container: str,
    src: Path,
    target: str,
    *,
    owner: tuple[int, int],
    mkdir: Callable[[str], None],
) -> None:
    """Stream ``src`` (a directory's contents, or a file to the path ``target``) in.

    The tar headers carry ``owner`` (uid, gid); ``mkdir`` creates a directory
    inside as the job's user.
    """
    flags = [f"--owner={owner[0]}", f"--group={owner[1]}", "--numeric-owner"]
    if src.is_dir():
        directory, argv = target, ["tar", "-c", *flags, "-C", str(src), "."]
    elif src.exists() or src.is_symlink():
        directory = posixpath.dirname(target)
        name = posixpath.basename(target)
        # --transform renames the one member to the destination's name.
        rename = f"--transform=s|.*|{_sed_escape(name)}|S"
        argv = ["tar", "-c", *flags, rename, "-C", str(src.parent), src.name]
    else:
        raise ExecutorError(f"cannot copy {src}: no such file or directory")
    mkdir(directory)
    with process.open_pipe(argv, mode="r", what=f"copy {src}") as tar:
        try:
            api.put_archive(container, directory, _chunks(tar))
        except docker.errors.APIError as exc:
            raise ExecutorError(f"copy to {target}: {images.short_reason(exc)}") from exc


def tar_out(api: docker.APIClient, container: str, source: str, dest: Path) -> bool:
    """Stream ``source`` out to ``dest`` (a directory's contents, or a file); False if missing."""
    try:
        stream, stat = api.get_archive(container, source, chunk_size=_CHUNK)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        raise ExecutorError(f"copy from {source}: {images.short_reason(exc)}") from exc
    if int(stat.get("mode", 0)) & _MODE_DIR:
        dest.mkdir(parents=True, exist_ok=True)
        _untar(stream, dest, strip=1)
        return True
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".circlet-") as tmp:
        _untar(stream, Path(tmp), strip=0)
        os.replace(Path(tmp) / posixpath.basename(source.rstrip("/")), dest)
    return True


def staged_in(
    staging_dir: Path, src: Path, target: str, *, owner: tuple[int, int], run_root: RunRoot
) -> bool:
    """``cp -a`` from the mounted staging directory; False to use :func:`tar_in` instead.

    The copy, and the directories it creates, belong to ``owner`` (the job's
    uid, gid) inside; the host files are not changed.
    """
    source = staging.host_path(src)
    if not staging.is_under(source, staging_dir):
        return False
    if not os.path.lexists(source):
        raise ExecutorError(f"cannot copy {src}: no such file or directory")
    kind = "dir" if source.is_dir() else "file"
    chown = f"{owner[0]}:{owner[1]}"
    run_root(staging.COPY_IN_SCRIPT, [str(source), target, chown, kind], f"copy to {target}")
    return True


def staged_out(source: str, dest: Path, *, run_root: RunRoot) -> bool:
    """``cp -a`` into the mounted staging directory (``dest`` is in it); False if missing."""
    # Root on the host reads anything as it is; another user is given the copy.
    euid = os.geteuid()
    chown = "" if euid == 0 else f"{euid}:{os.getegid()}"
    code = run_root(staging.COPY_OUT_SCRIPT, [source, str(dest), chown], f"copy from {source}")
    return code != staging.MISSING


def _chunks(stream: Any) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


def _untar(stream: Iterator[bytes], dest: Path, *, strip: int) -> None:
    argv = ["tar", "-x", "--no-same-owner", "-C", str(dest)]
    if strip:
        argv.append(f"--strip-components={strip}")
    with process.open_pipe(argv, mode="w", what=f"copy to {dest}") as tar:
        for chunk in stream:
            tar.write(chunk)


def _sed_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("&", "\\&")
