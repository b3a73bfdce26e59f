"""Materializing entries under a target directory, safely and fast.

Safety: every file is created fresh (an existing one is unlinked first, never
written through, so a hardlink into the store or elsewhere cannot be modified),
with O_NOFOLLOW; directories that already exist as symlinks must resolve inside
the target; symlinks from the tree are created last, so no entry is ever written
through a symlink the restore itself made.

Speed: on ext4 (no reflink) the cost is in creating files, not in zstd, so the
files are spread over a few threads that decompress straight from memory-mapped
packs into fresh files.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from circlet.store.blobs.index import ChunkLoc
from circlet.store.blobs.manifest import UnsafePathError
from circlet.store.blobs.packs import PackReader, decompressor

# setuid/setgid bits are not restored: a cache must not mint privileged binaries.
MODE_MASK = 0o1777
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class SafeTarget:
    """Creates entries under ``target`` (created if missing) without ever leaving it."""

    def __init__(self, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        self.root = os.path.realpath(target)
        self._prefix = self.root.rstrip("/") + "/"
        # Bits that os.open(..., mode) sets by itself: a file created with its
        # final mode needs no fchmod (one syscall less per file).
        self._created_mask = 0o777 & ~_umask()
        self._dirs: set[str] = {""}
        self._lock = threading.Lock()
        self._dir_meta: list[tuple[str, int, int]] = []
        self._links: list[tuple[str, str, int]] = []

    def path(self, rel: str) -> str:
        """Absolute path of ``rel``."""
        return f"{self._prefix}{rel}"

    def ensure_dir(self, rel: str) -> None:
        """Make directory ``rel`` and its missing parents; refuse existing non-dirs
        and symlinks leading out of the target."""
        if rel in self._dirs:
            return
        parent = rel.rpartition("/")[0]
        if parent not in self._dirs:
            self.ensure_dir(parent)
        full = self.path(rel)
        try:
            os.mkdir(full, 0o755)
        except FileExistsError:
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(full)
                if not (real.startswith(self._prefix) and os.path.isdir(real)):
                    raise UnsafePathError(
                        f"{rel!r} in the target is a symlink leading outside it"
                    ) from None
            elif not stat.S_ISDIR(st.st_mode):
                raise FileExistsError(
                    f"cannot restore directory {rel!r}: a file is in the way"
                ) from None
        with self._lock:
            self._dirs.add(rel)

    def add_dir(self, rel: str, mode: int, mtime_ns: int) -> None:
        """Create a directory now; its mode and mtime are applied by :meth:`finish`."""
        self.ensure_dir(rel)
        self._dir_meta.append((rel, mode, mtime_ns))

    def add_symlink(self, rel: str, target: str, mtime_ns: int) -> None:
        """Queue a symlink; created by :meth:`finish` after every file and directory."""
        self._links.append((rel, target, mtime_ns))

    def create_file(self, rel: str, mode: int = 0o600) -> int:
        """Open a fresh file ``rel`` for writing, created with ``mode`` (as far as
        the umask allows); the caller writes, then :meth:`close_file`."""
        parent = rel.rpartition("/")[0]
        if parent not in self._dirs:
            self.ensure_dir(parent)
        full = self.path(rel)
        perm = mode & 0o777
        try:
            return os.open(full, _CREATE, perm)
        except FileExistsError:
            if stat.S_ISDIR(os.lstat(full).st_mode):
                raise FileExistsError(
                    f"cannot restore file {rel!r}: a directory is in the way"
                ) from None
            os.unlink(full)  # replace, never write through an existing (hard)link
            return os.open(full, _CREATE, perm)

    def close_file(self, fd: int, mode: int, mtime_ns: int) -> None:
        """Apply mode (unless creation already gave it) and mtime, then close."""
        try:
            mode &= MODE_MASK
            if mode & ~self._created_mask:
                os.fchmod(fd, mode)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)

    def write_file(self, rel: str, mode: int, mtime_ns: int, chunks: Sequence[bytes]) -> None:
        """Create ``rel`` holding ``chunks``."""
        fd = self.create_file(rel, mode)
        try:
            for data in chunks:
                _write_all(fd, data)
        except BaseException:
            os.close(fd)
            raise
        self.close_file(fd, mode, mtime_ns)

    def finish(self) -> None:
        """Create the queued symlinks, then set directory modes and mtimes deepest
        first (a read-only directory must be filled before it is locked)."""
        for rel, target, mtime_ns in self._links:
            parent = rel.rpartition("/")[0]
            if parent not in self._dirs:
                self.ensure_dir(parent)
            full = self.path(rel)
            try:
                os.symlink(target, full)
            except FileExistsError:
                if stat.S_ISDIR(os.lstat(full).st_mode):
                    raise FileExistsError(
                        f"cannot restore symlink {rel!r}: a directory is in the way"
                    ) from None
                os.unlink(full)
                os.symlink(target, full)
            os.utime(full, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        for rel, mode, mtime_ns in sorted(
            self._dir_meta, key=lambda d: d[0].count("/"), reverse=True
        ):
            full = self.path(rel)
            os.chmod(full, mode & MODE_MASK, follow_symlinks=False)
            os.utime(full, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        self._links.clear()
        self._dir_meta.clear()


def write_chunks(fd: int, reader: PackReader, locs: Sequence[ChunkLoc]) -> None:
    """Decompress ``locs`` from mapped packs straight into ``fd``."""
    dec = decompressor()
    for loc in locs:
        data = dec.decompress(reader.view(loc), max_output_size=loc.size)
        if len(data) != loc.size:
            raise OSError(f"damaged chunk in pack {loc.pack}")
        _write_all(fd, data)


def _umask() -> int:
    """The process umask, read without changing it (other threads may be creating
    files); 0o777 (always fchmod) if it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def run_parallel(jobs: Sequence[int], weights: Sequence[int], work: Callable[[int], None]) -> None:
    """Run ``work(i)`` for every i in ``jobs`` on a few threads, in contiguous slices
    of similar total weight (contiguous keeps pack reads sequential)."""
    if len(jobs) < 64:
        for i in jobs:
            work(i)
        return
    slices = 16
    total = sum(weights[i] + 4096 for i in jobs)  # a file costs more than its bytes
    bounds: list[list[int]] = [[]]
    acc = 0
    for i in jobs:
        bounds[-1].append(i)
        acc += weights[i] + 4096
        if acc >= total * len(bounds) / slices and len(bounds) < slices:
            bounds.append([])

    def run(part: list[int]) -> None:
        for i in part:
            work(i)

    threads = _restore_threads()
    with ThreadPoolExecutor(threads, thread_name_prefix="circlet-restore") as pool:
        for _ in pool.map(run, [b for b in bounds if b]):
            pass


def _restore_threads() -> int:
    """Threads for a restore: more than the cores, since file creation waits in the
    kernel (CIRCLET_RESTORE_THREADS overrides, for measuring)."""
    env = os.environ.get("CIRCLET_RESTORE_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(2, min(4, os.cpu_count() or 2))
