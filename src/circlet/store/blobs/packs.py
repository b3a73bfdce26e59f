"""Pack files: append-only files of independent zstd frames, one frame per chunk.

Thousands of small blobs per save would cost a file creation each (slow on a busy
ext4: 50-800 µs here), so a save appends its new chunks to packs of its own and
the index records (pack, offset, length). A pack is written as ``NAME.pack.tmp``,
fsynced and renamed before the index may point at it; a process killed mid-save
leaves only a ``.tmp`` file that garbage collection removes.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import secrets
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import blake3
import zstandard

from circlet.store.blobs.index import ChunkLoc, NewChunk

CHUNK_SIZE = 4 << 20  # files above this are split into chunks of this size
# Start a new pack past this many compressed bytes. Full packs are fsynced in the
# background while the save goes on, so the commit waits only for the last one.
PACK_LIMIT = 32 << 20
ZSTD_LEVEL = 1

_local = threading.local()


def digest_of(data: bytes | memoryview) -> str:
    """The blake3 hex digest of ``data``."""
    return str(blake3.blake3(data).hexdigest())


def compressor() -> zstandard.ZstdCompressor:
    """A per-thread compressor (zstd contexts are not thread-safe but are reusable)."""
    comp = getattr(_local, "comp", None)
    if comp is None:
        comp = _local.comp = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False)
    return comp


def decompressor() -> zstandard.ZstdDecompressor:
    """A per-thread decompressor."""
    dec = getattr(_local, "dec", None)
    if dec is None:
        dec = _local.dec = zstandard.ZstdDecompressor()
    return dec


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PackWriter:
    """Appends compressed chunks to this writer's own pack files (thread-safe)."""

    def __init__(self, packs_dir: Path) -> None:
        self._dir = packs_dir
        self._lock = threading.Lock()
        self._fd = -1
        self._name = ""
        self._offset = 0
        self._open_names: list[str] = []
        self._sealing: list[threading.Thread] = []
        self._seal_error: BaseException | None = None
        self.chunks: list[NewChunk] = []
        self.stored_bytes = 0

    def _rotate(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            sealer = threading.Thread(target=self._seal, args=(fd,), daemon=True)
            sealer.start()
            self._sealing.append(sealer)
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        self._name = f"{stamp}-{os.getpid()}-{secrets.token_hex(6)}"
        self._fd = os.open(
            self._dir / f"{self._name}.pack.tmp",
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
            0o644,
        )
        self._offset = 0
        self._open_names.append(self._name)

    def _seal(self, fd: int) -> None:
        try:
            os.fsync(fd)
        except BaseException as exc:  # reported by finish(): the commit must not happen
            self._seal_error = exc
        finally:
            os.close(fd)

    def _seal_current(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            self._seal(fd)
        for sealer in self._sealing:
            sealer.join()
        self._sealing = []
        if self._seal_error is not None:
            raise OSError(f"cannot make a pack durable: {self._seal_error}")

    def append(self, digest: str, frame: bytes, size: int) -> None:
        """Append one compressed frame holding ``size`` bytes whose digest is ``digest``."""
        with self._lock:
            if self._fd < 0 or self._offset >= PACK_LIMIT:
                self._rotate()
            view = memoryview(frame)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            self.chunks.append(NewChunk(digest, self._name, self._offset, len(frame), size))
            self._offset += len(frame)
            self.stored_bytes += len(frame)

    def finish(self) -> None:
        """fsync and publish every pack written (rename ``.tmp`` away)."""
        with self._lock:
            if self._fd >= 0 or self._sealing:
                self._seal_current()
            for name in self._open_names:
                os.replace(self._dir / f"{name}.pack.tmp", self._dir / f"{name}.pack")
            if self._open_names:
                fsync_dir(self._dir)
            self._open_names = []

    def discard(self) -> None:
        """Remove everything this writer wrote (its chunks are not indexed)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            for sealer in self._sealing:
                sealer.join()
            self._sealing = []
            for name in {c.pack for c in self.chunks} | set(self._open_names):
                for suffix in (".pack.tmp", ".pack"):
                    (self._dir / f"{name}{suffix}").unlink(missing_ok=True)
            self._open_names = []


class PackReader:
    """Memory-maps packs on demand; close() releases them all."""

    def __init__(self, packs_dir: Path) -> None:
        self._dir = packs_dir
        self._maps: dict[str, mmap.mmap] = {}
        self._lock = threading.Lock()

    def view(self, loc: ChunkLoc) -> memoryview:
        """The compressed bytes of one chunk (zero-copy)."""
        mm = self._maps.get(loc.pack)
        if mm is None:
            with self._lock:
                mm = self._maps.get(loc.pack)
                if mm is None:
                    mm = self._map(loc.pack)
        if loc.offset + loc.clen > len(mm):
            raise OSError(f"pack {loc.pack} is truncated (store damaged)")
        return memoryview(mm)[loc.offset : loc.offset + loc.clen]

    def _map(self, pack: str) -> mmap.mmap:
        with open(self._dir / f"{pack}.pack", "rb") as fh:
            mm = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
        mm.madvise(mmap.MADV_SEQUENTIAL)
        self._maps[pack] = mm
        return mm

    def read(self, loc: ChunkLoc) -> bytes:
        """The decompressed bytes of one chunk."""
        data: bytes = decompressor().decompress(self.view(loc), max_output_size=loc.size)
        if len(data) != loc.size:
            raise OSError(f"chunk in pack {loc.pack} decompressed to a wrong size")
        return data

    def close(self) -> None:
        """Unmap every pack. Views handed out must be released first."""
        for mm in self._maps.values():
            # A caller may still hold a view; the garbage collector unmaps it then.
            with contextlib.suppress(BufferError):
                mm.close()
        self._maps.clear()


class ChunkStream(io.RawIOBase):
    """A readable stream over a blob's chunks; the packs are opened up front so a
    later repack (which unlinks the old pack) cannot pull them away."""

    def __init__(self, packs_dir: Path, chunks: Sequence[ChunkLoc]) -> None:
        super().__init__()
        self._chunks = list(chunks)
        self._fds: dict[str, int] = {}
        for loc in self._chunks:
            if loc.pack not in self._fds:
                self._fds[loc.pack] = os.open(
                    packs_dir / f"{loc.pack}.pack", os.O_RDONLY | os.O_CLOEXEC
                )
        self._buf = b""
        self._pos = 0
        self._next = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._pos >= len(self._buf):
            if self._next >= len(self._chunks):
                return 0
            loc = self._chunks[self._next]
            self._next += 1
            frame = os.pread(self._fds[loc.pack], loc.clen, loc.offset)
            self._buf = decompressor().decompress(frame, max_output_size=loc.size)
            if len(frame) != loc.clen or len(self._buf) != loc.size:
                raise OSError(f"chunk in pack {loc.pack} is damaged")
            self._pos = 0
        n = min(len(buffer), len(self._buf) - self._pos)
        buffer[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
        super().close()
