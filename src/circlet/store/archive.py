"""Trees as tar streams (optionally zstd- or gzip-compressed): the wire format for
remote runners and ``persist_to_workspace`` over HTTP, and the way into a container
(Docker's put_archive takes a plain tar).

Every member read is checked before anything is written: no absolute paths, no
``..``, no member below a symlink or a file of the same archive, no hard link to
something not already in the archive, no devices or fifos, and (unless
``external_symlinks``) no symlink pointing outside the root. A refused archive
raises :class:`UnsafeArchiveError` with one line naming the member and the reason.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from circlet.store.api import RestoreStats, TreeEntry
from circlet.store.blobs.manifest import DIR, FILE, SYMLINK, link_escapes
from circlet.store.blobs.packs import PackReader
from circlet.store.blobs.restore import SafeTarget
from circlet.store.blobs.store import BlobNotFoundError, LocalBlobStore
from circlet.store.blobs.walk import scan

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
_COPY = 1 << 20


class UnsafeArchiveError(ValueError):
    """An archive member that could write outside the target, or is not a plain
    file, directory or symlink."""


@dataclass(frozen=True)
class Member:
    """A checked archive member. ``link`` is a symlink's target or, for kind "h"
    (hard link), the path of the earlier member it repeats."""

    rel: str
    kind: str  # FILE, DIR, SYMLINK or "h"
    mode: int
    mtime_ns: int
    link: str
    info: tarfile.TarInfo


def _refuse(name: str, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"refusing archive member {name!r}: {reason}")


def _clean_name(name: str, raw: str) -> str:
    """Normalize a member name; refuse absolute paths and '..'."""
    if name.startswith("/"):
        raise _refuse(raw, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(raw, "path contains '..'")
    return "/".join(parts)


def _mtime_ns(info: tarfile.TarInfo) -> int:
    exact = info.pax_headers.get("mtime")
    if exact is not None:
        try:
            return int(Decimal(exact) * 1_000_000_000)
        except InvalidOperation:
            pass
    return int(info.mtime * 1_000_000_000)


class MemberChecker:
    """Validates members in archive order, remembering what came before."""

    def __init__(self, *, external_symlinks: bool = False) -> None:
        self.external_symlinks = external_symlinks
        self.kinds: dict[str, str] = {}

    def check(self, info: tarfile.TarInfo) -> Member | None:
        """The checked member, or None for the root directory entry itself."""
        raw = info.name
        rel = _clean_name(raw, raw)
        if not rel:
            if info.isdir():
                return None
            raise _refuse(raw, "empty path")
        parent = rel.rpartition("/")[0]
        while parent:
            above = self.kinds.get(parent)
            if above == SYMLINK:
                raise _refuse(raw, f"lies below symlink {parent!r} (would write through it)")
            if above is not None and above != DIR:
                raise _refuse(raw, f"lies below file {parent!r}")
            parent = parent.rpartition("/")[0]
        link = ""
        if info.isreg():
            kind = FILE
        elif info.isdir():
            kind = DIR
        elif info.issym():
            kind, link = SYMLINK, info.linkname
            if not link:
                raise _refuse(raw, "symlink with an empty target")
            if not self.external_symlinks and link_escapes(rel, link):
                raise _refuse(raw, f"symlink to {link!r} points outside the root")
        elif info.islnk():
            kind = "h"
            link = _clean_name(info.linkname, raw)
            if self.kinds.get(link) not in (FILE, "h"):
                raise _refuse(
                    raw, f"hard link to {info.linkname!r}, not a file earlier in the archive"
                )
        elif info.ischr() or info.isblk():
            raise _refuse(raw, "device file")
        elif info.isfifo():
            raise _refuse(raw, "fifo")
        else:
            raise _refuse(raw, f"unsupported member type {info.type!r}")
        before = self.kinds.get(rel)
        if before is not None and (SYMLINK in (before, kind) or (before == DIR) != (kind == DIR)):
            raise _refuse(raw, "appears twice with different types")
        self.kinds[rel] = kind
        mode = info.mode & 0o7777 if kind != SYMLINK else 0o777
        return Member(rel, kind, mode, _mtime_ns(info), link, info)


class _Prefixed(io.RawIOBase):
    """A stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def open_tar(stream: BinaryIO) -> tarfile.TarFile:
    """A streaming tar reader over plain, gzip or zstd data (detected by magic)."""
    head = stream.read(4)
    source = io.BufferedReader(_Prefixed(head, stream), 1 << 20)
    if head.startswith(ZSTD_MAGIC):
        reader = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
        return tarfile.open(fileobj=reader, mode="r|")
    if head.startswith(GZIP_MAGIC):
        return tarfile.open(fileobj=source, mode="r|gz")
    return tarfile.open(fileobj=source, mode="r|")


def import_tree(
    store: LocalBlobStore,
    namespace: str,
    key: str,
    stream: BinaryIO,
    *,
    meta: dict[str, Any] | None = None,
    external_symlinks: bool = False,
) -> TreeEntry:
    """Store the tar(.zst|.gz) ``stream`` as tree ``key``, streaming member by member.
    Nothing is indexed if a member is refused."""
    existing = store.get_tree(namespace, key)
    if existing is not None:
        return existing
    checker = MemberChecker(external_symlinks=external_symlinks)
    files: dict[str, tuple[str, int, int]] = {}
    with store.tree_builder() as builder, open_tar(stream) as tar:
        for info in tar:
            member = checker.check(info)
            if member is None:
                continue
            if member.kind == FILE:
                fh = tar.extractfile(info)
                assert fh is not None  # a regular file always has data
                digest, size = builder.add_file(member.rel, member.mode, member.mtime_ns, fh.read)
                files[member.rel] = (digest, size, member.mode)
            elif member.kind == "h":
                digest, size, _ = files[member.link]
                builder.add_file_digest(member.rel, member.mode, member.mtime_ns, size, digest)
                files[member.rel] = (digest, size, member.mode)
            elif member.kind == DIR:
                builder.add_dir(member.rel, member.mode, member.mtime_ns)
            else:
                builder.add_symlink(member.rel, member.link, member.mtime_ns)
        builder.manifest.sort()
        return builder.commit(namespace, key, meta)


def extract_archive(
    stream: BinaryIO, target: Path, *, external_symlinks: bool = False
) -> RestoreStats:
    """Unpack the tar(.zst|.gz) ``stream`` under ``target`` with the same checks;
    existing files are replaced, never written through."""
    start = time.perf_counter()
    checker = MemberChecker(external_symlinks=external_symlinks)
    out = SafeTarget(Path(target))
    count = size = 0
    with open_tar(stream) as tar:
        for info in tar:
            member = checker.check(info)
            if member is None:
                continue
            if member.kind == DIR:
                out.add_dir(member.rel, member.mode, member.mtime_ns)
            elif member.kind == SYMLINK:
                out.add_symlink(member.rel, member.link, member.mtime_ns)
            else:
                if member.kind == FILE:
                    source = tar.extractfile(info)
                    assert source is not None
                else:  # a hard link: copy the earlier member's bytes
                    fd_in = os.open(out.path(member.link), os.O_RDONLY | os.O_NOFOLLOW)
                    source = os.fdopen(fd_in, "rb")
                with source:
                    fd = out.create_file(member.rel, member.mode)
                    try:
                        while data := source.read(_COPY):
                            view = memoryview(data)
                            while view:
                                view = view[os.write(fd, view) :]
                            size += len(data)
                    except BaseException:
                        os.close(fd)
                        raise
                out.close_file(fd, member.mode, member.mtime_ns)
                count += 1
    out.finish()
    return RestoreStats(count, size, time.perf_counter() - start, "stream")


class _ChunkFile:
    """Reads one file's chunks from mapped packs, a chunk at a time."""

    def __init__(self, reader: PackReader, locs: list[Any]) -> None:
        self._reader = reader
        self._locs = list(locs)
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while len(self._buf) < n or n < 0:
            if not self._locs:
                break
            self._buf += self._reader.read(self._locs.pop(0))
        if n < 0:
            n = len(self._buf)
        data, self._buf = self._buf[:n], self._buf[n:]
        return data


def _tar_writer(out: BinaryIO, compress: bool) -> tuple[tarfile.TarFile, Any]:
    if compress:
        sink = zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(out, closefd=False)
        return tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT), sink
    return tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT), None


def _info(
    rel: str, kind: str, *, mode: int, mtime_ns: int, size: int, link: str
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mode = mode
    seconds, nanos = divmod(mtime_ns, 1_000_000_000)
    info.mtime = seconds
    if nanos:
        info.pax_headers = {"mtime": f"{seconds}.{nanos:09d}"}
    if kind == DIR:
        info.type = tarfile.DIRTYPE
    elif kind == SYMLINK:
        info.type = tarfile.SYMTYPE
        info.linkname = link
    else:
        info.size = size
    return info


def export_tree(
    store: LocalBlobStore, entry: TreeEntry, out: BinaryIO, *, compress: bool = True
) -> int:
    """Write ``entry`` to ``out`` as a tar stream (zstd-compressed unless
    ``compress`` is False); return the bytes of file content written."""
    total = 0
    with store.shared_lock():
        man = store.read_manifest(entry.manifest, locked=True)
        man.validate()
        locs = store.index.locate(man.file_digests())
        reader = PackReader(store.packs_dir)
        tar, sink = _tar_writer(out, compress)
        try:
            for i, rel in enumerate(man.paths):
                kind = man.kinds[i]
                info = _info(
                    rel,
                    kind,
                    mode=man.modes[i],
                    mtime_ns=man.mtimes[i],
                    size=man.sizes[i],
                    link=man.digests[i],
                )
                if kind == FILE:
                    chunks = locs.get(man.digests[i])
                    if chunks is None:
                        raise BlobNotFoundError(man.digests[i])
                    tar.addfile(info, _ChunkFile(reader, chunks))
                    total += man.sizes[i]
                else:
                    tar.addfile(info)
            tar.close()
            if sink is not None:
                sink.close()
        finally:
            reader.close()
    return total


def create_archive(
    root: Path, out: BinaryIO, paths: Sequence[str] = (".",), *, compress: bool = True
) -> tuple[int, int]:
    """Write ``paths`` under ``root`` to ``out`` as a tar stream (same walk and
    rules as a save: symlinks kept, never followed); return (files, bytes)."""
    found = scan(root, paths)
    tar, sink = _tar_writer(out, compress)
    files = size = 0
    for item in found.items:
        info = _info(
            item.rel,
            item.kind,
            mode=item.mode,
            mtime_ns=item.mtime_ns,
            size=item.size,
            link=item.target,
        )
        if item.kind == FILE:
            fd = os.open(item.abspath, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as fh:
                info.size = os.fstat(fd).st_size
                tar.addfile(info, fh)
            files += 1
            size += info.size
        else:
            tar.addfile(info)
    tar.close()
    if sink is not None:
        sink.close()
    return files, size
