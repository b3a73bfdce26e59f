"""Direct host access to a docker container's files through overlay2's merged directory.

With the overlay2 driver and a local engine, a running container's root
filesystem is mounted on the host (``GraphDriver.Data.MergedDir``). Caches
and workspaces restored (or read) through it skip a whole copy. A path is
only handed out when every existing component of it is a real directory
(never a symlink: the job controls them, and on the host they would point
at the host's files) and it lies on no bind mount or volume of the container
(those are other host directories, not the container's own filesystem).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Sequence
from pathlib import Path


def resolve(merged: Path, mounts: Sequence[str], inside: str) -> tuple[Path, str | None] | None:
    """The host path of ``inside`` under ``merged``, and its first missing ancestor (or None).

    None when ``inside`` is not absolute, overlaps a mount destination (at,
    under or above it) or passes through an existing symlink or non-directory.
    """
    if not posixpath.isabs(inside):
        return None
    inside = posixpath.normpath(inside)
    if inside.startswith("//"):
        inside = "/" + inside.lstrip("/")
    if any(_overlaps(inside, posixpath.normpath(mount)) for mount in mounts):
        return None
    parts = [p for p in inside.split("/") if p]
    path = merged
    missing: str | None = None
    for depth, part in enumerate(parts):
        if part == "..":  # normpath keeps a leading "/.." only
            return None
        path = path / part
        if missing is not None:
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            missing = "/" + "/".join(parts[: depth + 1])
            continue
        except OSError:
            return None
        last = depth == len(parts) - 1
        if stat.S_ISLNK(st.st_mode) or (not last and not stat.S_ISDIR(st.st_mode)):
            return None
    return path, missing


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """``chown -hR uid:gid`` without following symlinks; set-id bits are kept."""
    _chown(path, uid, gid)
    if not path.is_symlink() and path.is_dir():
        for top, dirs, files in os.walk(path):
            for name in dirs + files:
                _chown(Path(top, name), uid, gid)


def _chown(path: Path, uid: int, gid: int) -> None:
    st = os.lstat(path)
    if (st.st_uid, st.st_gid) == (uid, gid):
        return
    os.lchown(path, uid, gid)
    # chown clears set-id bits of regular files; put them back as cp -a + chmod did.
    if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(st.st_mode))


def move_into(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest`` (same filesystem), merging into an existing directory as
    ``cp -a src/. dest/`` would: files and symlinks replace, directories merge."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dest)
        return
    src_st = os.lstat(src)
    if stat.S_ISDIR(src_st.st_mode) and stat.S_ISDIR(st.st_mode):
        for child in os.listdir(src):
            move_into(src / child, dest / child)
        os.chmod(dest, stat.S_IMODE(src_st.st_mode))
        os.utime(dest, ns=(src_st.st_atime_ns, src_st.st_mtime_ns))
        os.rmdir(src)
        return
    if stat.S_ISDIR(st.st_mode):
        raise OSError(f"cannot overwrite directory {dest} with a non-directory")
    if stat.S_ISDIR(src_st.st_mode):
        os.unlink(dest)  # a file or symlink in the way of a directory: never followed
    os.replace(src, dest)


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")
