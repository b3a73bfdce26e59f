"""Copy-on-write restores: an overlay mount of a materialized, read-only copy.

Creating files is the whole cost of a restore on a filesystem without reflinks
(ext4 here: ~40 µs a file, tar's and ``cp -a``'s floor as well as ours). So the
store can keep one *materialized* copy of a tree (``LocalBlobStore.materialize``)
and restore it into a fresh directory as an overlay mount: the copy is the
read-only lower layer, the job's writes land in a private upper layer, and the
stored copy never changes whatever the job does. A restore is then one mount(2),
whatever the size of the cache.

Used only where it works: as root (CAP_SYS_ADMIN), with overlayfs in the
kernel, on a target that does not exist yet (or is an empty directory), for an
environment whose processes share the host's mount namespace (the host
executor; a docker container does not see mounts made after it started, so
docker jobs stream through the container's merged directory instead).
CIRCLET_CACHE_COW=off turns it off. Every failure falls back to streaming.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
from pathlib import Path

from circlet import settings

MNT_DETACH = 2
_UNSAFE_OPTION_CHARS = frozenset(",:\\\n\t ")


@functools.cache
def _lib() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def available() -> bool:
    """Whether overlay restores can be tried here (root, overlayfs, not turned off)."""
    if settings.CACHE_COW.get().strip().lower() in ("0", "off", "false", "no"):
        return False
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/filesystems", encoding="ascii") as fh:
            return any(line.split()[-1:] == ["overlay"] for line in fh)
    except OSError:
        return False


def is_fresh(target: Path) -> bool:
    """Whether ``target`` is missing or an empty real directory (a mount may go there)."""
    try:
        if target.is_symlink():
            return False
        if not target.exists():
            return True
        if not target.is_dir():
            return False
        with os.scandir(target) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def mount_overlay(lower: Path, target: Path, scratch: Path) -> None:
    """Mount ``lower`` read-only under a fresh upper layer in ``scratch`` at ``target``.

    ``target`` is created if missing (it must be fresh, see :func:`is_fresh`); its
    mode and mtime are those of ``lower``. OSError if the mount is refused.
    """
    paths = [str(lower), str(target), str(scratch)]
    if any(_UNSAFE_OPTION_CHARS & set(p) for p in paths):
        raise OSError(f"cannot overlay-mount {target}: a path holds , : \\ or a space")
    upper, work = scratch / "upper", scratch / "work"
    upper.mkdir(parents=True)
    work.mkdir()
    st = os.stat(lower)
    os.chmod(upper, st.st_mode & 0o7777)
    os.chown(upper, st.st_uid, st.st_gid)
    os.utime(upper, ns=(st.st_atime_ns, st.st_mtime_ns))
    target.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    rc = _lib().mount(b"overlay", str(target).encode(), b"overlay", 0, options.encode())
    if rc != 0:
        errno = ctypes.get_errno()
        shutil.rmtree(scratch, ignore_errors=True)
        raise OSError(errno, f"cannot overlay-mount {target}: {os.strerror(errno)}")


def unmount(target: Path) -> bool:
    """Detach the mount at ``target``; False if none was there."""
    rc: int = _lib().umount2(str(target).encode(), MNT_DETACH)
    return rc == 0


def _mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, super options) of every mount, from
    /proc/self/mountinfo; [] if it cannot be read."""
    mounts: list[tuple[str, str, str]] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                head, _, tail = line.partition(" - ")
                fields = tail.split(" ")
                options = fields[2].strip() if len(fields) > 2 else ""
                mounts.append((_unescape(head.split(" ", 5)[4]), fields[0], options))
    except OSError:
        return []
    return mounts


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or under ``path`` (deepest first)."""
    prefix = os.path.realpath(path)
    found = [
        Path(point)
        for point, _, _ in _mountinfo()
        if point == prefix or point.startswith(prefix.rstrip("/") + "/")
    ]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def lower_dirs_in_use() -> set[str]:
    """Lower directories of every overlay mounted now (kept by garbage collection)."""
    used: set[str] = set()
    for _, fstype, options in _mountinfo():
        if fstype != "overlay":
            continue
        for option in options.split(","):
            if option.startswith("lowerdir="):
                used.update(_unescape(lower) for lower in option[len("lowerdir=") :].split(":"))
    return used


def unmount_under(path: Path) -> int:
    """Detach every mount at or under ``path``; how many were detached."""
    return sum(unmount(point) for point in mounts_under(path))


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


class CowArea:
    """Overlay mounts made for one job, with their upper layers under ``scratch``;
    :meth:`release` detaches them all and removes the layers."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.targets: list[Path] = []

    def mount(self, lower: Path, target: Path) -> None:
        """Overlay-mount ``lower`` at ``target`` (see :func:`mount_overlay`)."""
        layer = self.scratch / str(len(self.targets))
        mount_overlay(lower, target, layer)
        self.targets.append(target)

    def release_from(self, count: int) -> None:
        """Detach the mounts made after the first ``count`` (undo a partial restore)."""
        while len(self.targets) > count:
            unmount(self.targets.pop())

    def release(self) -> None:
        """Detach every mount (newest first) and delete the upper layers."""
        for target in reversed(self.targets):
            unmount(target)
        self.targets.clear()
        shutil.rmtree(self.scratch, ignore_errors=True)
