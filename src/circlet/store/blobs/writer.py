"""Writing content into the store: chunking, hashing, deduplication, compression,
and building a tree entry that is committed atomically."""

from __future__ import annotations

import itertools
import operator
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import blake3

from circlet.store.api import TreeEntry
from circlet.store.blobs.manifest import DIR, FILE, SYMLINK, Manifest, check_rel_path
from circlet.store.blobs.packs import CHUNK_SIZE, PackWriter, compressor, digest_of
from circlet.store.blobs.walk import Item

if TYPE_CHECKING:
    from circlet.store.blobs.rescan import Rescan
    from circlet.store.blobs.store import LocalBlobStore

# Past this many files to hash, load every known digest once instead of asking
# the index per file.
_PRELOAD_FILES = 512
_BATCH_FILES = 128
_BATCH_BYTES = 8 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def workers() -> int:
    """Threads for hashing/compressing (zstd and blake3 release the GIL)."""
    return max(2, min(4, os.cpu_count() or 2))


class Ingest:
    """Stores byte content as deduplicated, compressed chunks (thread-safe)."""

    def __init__(self, store: LocalBlobStore) -> None:
        self._index = store.index
        self.pack = PackWriter(store.packs_dir)
        self._lock = threading.Lock()
        self._known: set[str] | None = None
        self._claimed: set[str] = set()
        self.composites: list[tuple[str, int, list[str]]] = []

    def preload(self) -> None:
        """Fetch every indexed digest now (cheaper than one query per file)."""
        self._known = self._index.all_chunk_digests()

    def _claim(self, digest: str) -> bool:
        """True if the caller must store this chunk (nobody has, nobody is)."""
        with self._lock:
            if digest in self._claimed:
                return False
            self._claimed.add(digest)
            if self._known is not None:
                return digest not in self._known
        return not self._index.has_chunk(digest)

    def put_chunk(self, data: bytes | memoryview) -> str:
        """Store one chunk (≤ CHUNK_SIZE bytes) unless known; return its digest."""
        digest = digest_of(data)
        if self._claim(digest):
            self.pack.append(digest, compressor().compress(data), len(data))
        return digest

    def put_reader(self, read: Callable[[int], bytes], first: bytes = b"") -> tuple[str, int]:
        """Store everything ``read`` returns until EOF, chunked; return (digest, size)."""
        data = first
        if len(data) < CHUNK_SIZE:
            data += _read_full(read, CHUNK_SIZE - len(data))
        if len(data) < CHUNK_SIZE:
            return self.put_chunk(data), len(data)
        following = _read_full(read, CHUNK_SIZE)
        if not following:
            return self.put_chunk(data), len(data)
        whole = blake3.blake3(data)
        parts = [self.put_chunk(data)]
        size = len(data)
        while following:
            whole.update(following)
            parts.append(self.put_chunk(following))
            size += len(following)
            following = _read_full(read, CHUNK_SIZE)
        digest = str(whole.hexdigest())
        with self._lock:
            self.composites.append((digest, size, parts))
        return digest, size

    def put_bytes(self, data: bytes) -> str:
        """Store an in-memory blob of any size; return its digest."""
        view = memoryview(data)
        pos = 0

        def read(n: int) -> bytes:
            nonlocal pos
            piece = bytes(view[pos : pos + n])
            pos += len(piece)
            return piece

        return self.put_reader(read)[0]

    def put_parts(self, parts: Sequence[bytes | memoryview]) -> str:
        """Store the concatenation of ``parts`` as one blob whose chunks end where
        the parts do (and every CHUNK_SIZE bytes within one); return its digest."""
        whole = blake3.blake3()
        chunks: list[str] = []
        size = 0
        for part in parts:
            view = memoryview(part)
            for start in range(0, len(view), CHUNK_SIZE):
                piece = view[start : start + CHUNK_SIZE]
                whole.update(piece)
                chunks.append(self.put_chunk(piece))
                size += len(piece)
        if len(chunks) <= 1:  # one chunk: the blob is that chunk
            return chunks[0] if chunks else self.put_chunk(b"")
        digest = str(whole.hexdigest())
        with self._lock:
            self.composites.append((digest, size, chunks))
        return digest

    def put_file(self, abspath: str, size_hint: int) -> tuple[str, int]:
        """Store one regular file (never following a symlink); return (digest, size)."""
        fd = os.open(abspath, _OPEN_FLAGS)
        try:
            if size_hint < CHUNK_SIZE:
                # One read of the expected size (+1 to notice growth) avoids
                # allocating a chunk-sized buffer per small file.
                data = os.read(fd, size_hint + 1)
                if len(data) <= size_hint:
                    return self.put_chunk(data), len(data)
                return self.put_reader(lambda n: os.read(fd, n), first=data)
            return self.put_reader(lambda n: os.read(fd, n))
        finally:
            os.close(fd)


def _read_full(read: Callable[[int], bytes], n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at EOF."""
    first = read(n)
    if len(first) == n or not first:
        return first
    parts = [first]
    got = len(first)
    while got < n:
        piece = read(n - got)
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


Known = dict[tuple[str, str, int, int, int, int], str]


def known_digests(previous: Manifest | None) -> Known:
    """(path, FILE, size, mtime, inode, ctime) → digest for the files of ``previous``
    whose digest may be reused when a new scan finds the same values. The whole
    key is the dict key so the lookup for every scanned entry is one C-level
    ``map(dict.get, zip(...))`` instead of a Python loop."""
    if previous is None:
        return {}
    # ctime within a second of the previous save may hide a later write
    # with the same timestamp ("racily clean"): re-hash those.
    racy_ns = int((previous.created_at - 1.0) * 1e9)
    return {
        (path, kind, size, mtime, ino, ctime): digest
        for path, kind, size, mtime, ino, ctime, digest in zip(
            previous.paths,
            previous.kinds,
            previous.sizes,
            previous.mtimes,
            previous.inos,
            previous.ctimes,
            previous.digests,
            strict=True,
        )
        if kind == FILE and ctime < racy_ns
    }


class TreeBuilder:
    """Collects the entries of one tree, stores their content, commits it atomically.

    Use as a context manager: the store's shared lock is held until commit or
    abort, so garbage collection cannot remove chunks this tree relies on."""

    def __init__(self, store: LocalBlobStore, root: str = "") -> None:
        self._store = store
        self._lock_cm = store.shared_lock()
        self._lock_cm.__enter__()
        self.ingest = Ingest(store)
        self.manifest = Manifest(root=root, created_at=time.time())
        self._done = False
        self.hashed = 0  # files read and hashed (not reused from the previous save)

    def __enter__(self) -> TreeBuilder:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.abort()

    def add_dir(self, rel: str, mode: int, mtime_ns: int) -> None:
        """Record a directory."""
        self.manifest.add(check_rel_path(rel), DIR, mode & 0o7777, mtime_ns)

    def add_symlink(self, rel: str, target: str, mtime_ns: int) -> None:
        """Record a symlink (its target is not checked or followed here)."""
        self.manifest.add(check_rel_path(rel), SYMLINK, 0o777, mtime_ns, digest=target)

    def add_file(
        self, rel: str, mode: int, mtime_ns: int, read: Callable[[int], bytes]
    ) -> tuple[str, int]:
        """Store a file's content from ``read`` (streamed, chunked) and record it."""
        check_rel_path(rel)
        digest, size = self.ingest.put_reader(read)
        self.manifest.add(rel, FILE, mode & 0o7777, mtime_ns, size=size, digest=digest)
        return digest, size

    def add_file_digest(self, rel: str, mode: int, mtime_ns: int, size: int, digest: str) -> None:
        """Record a file whose content is already stored under ``digest``."""
        self.manifest.add(
            check_rel_path(rel), FILE, mode & 0o7777, mtime_ns, size=size, digest=digest
        )

    def add_items(
        self,
        items: Sequence[Item],
        previous: Manifest | None,
        known: Known | None = None,
    ) -> None:
        """Record scanned items, hashing in parallel only files that changed since
        ``previous`` (same size, mtime, inode and ctime: the digest is reused).
        ``known``: :func:`known_digests` of ``previous``, if already computed."""
        if known is None:
            known = known_digests(previous)
        if not items:
            return
        # Column-wise (zip(*items) transposes in C): this runs per entry on
        # every save, incremental ones included.
        rels, kinds, modes, mtimes, sizes_t, inos, ctimes, targets, _ = zip(*items, strict=True)
        sizes: list[int] = list(sizes_t)
        # One C-level dict lookup per entry, no Python code per entry: an unchanged
        # file gets its old digest, anything else its "target" (a symlink's target
        # is its "digest"; "" for a directory or a file to hash).
        keys = zip(rels, kinds, sizes_t, mtimes, inos, ctimes, strict=True)
        get: Callable[[tuple[str, str, int, int, int, int], str], str] = known.get
        digests: list[str] = list(map(get, keys, targets))
        missing = map(operator.and_, map(FILE.__eq__, kinds), map(operator.not_, digests))
        todo = list(itertools.compress(range(len(digests)), missing))
        self._hash_files(lambda i: items[i].abspath, todo, digests, sizes)
        man = self.manifest
        man.paths.extend(rels)
        man.kinds.extend(kinds)
        man.modes.extend(modes)
        man.mtimes.extend(mtimes)
        man.sizes.extend(sizes)
        man.digests.extend(digests)
        man.inos.extend(inos)
        man.ctimes.extend(ctimes)

    def add_rescan(self, found: Rescan, root: str) -> None:
        """Record the entries of an incremental walk (:func:`~circlet.store.blobs.
        rescan.rescan`) of the real root ``root``, hashing the files it lists as
        changed."""
        columns = found.columns
        paths = columns.paths
        prefix = root.rstrip("/") + "/"
        self._hash_files(lambda i: prefix + paths[i], found.todo, columns.digests, columns.sizes)
        man = self.manifest
        if man.paths:
            raise ValueError("an incremental walk must be the only entries of a tree")
        # The columns are this builder's now (no copy).
        for name in ("paths", "kinds", "modes", "mtimes", "sizes", "digests", "inos", "ctimes"):
            setattr(man, name, getattr(columns, name))
        man.based_on = columns.based_on

    def _hash_files(
        self, path_of: Callable[[int], str], todo: list[int], digests: list[str], sizes: list[int]
    ) -> None:
        """Store the files of rows ``todo`` (``sizes`` holds the size the walk saw),
        setting their digest and actual size."""
        ingest = self.ingest
        self.hashed += len(todo)
        if len(todo) > _PRELOAD_FILES:
            ingest.preload()

        def run(batch: list[int]) -> None:
            for i in batch:
                digests[i], sizes[i] = ingest.put_file(path_of(i), sizes[i])

        if len(todo) <= 16:
            run(todo)
            return
        batches: list[list[int]] = []
        current: list[int] = []
        current_bytes = 0
        for i in todo:
            current.append(i)
            current_bytes += sizes[i]
            if len(current) >= _BATCH_FILES or current_bytes >= _BATCH_BYTES:
                batches.append(current)
                current, current_bytes = [], 0
        if current:
            batches.append(current)
        with ThreadPoolExecutor(workers(), thread_name_prefix="circlet-save") as pool:
            for _ in pool.map(run, batches):
                pass

    def commit(self, namespace: str, key: str, meta: dict[str, Any] | None = None) -> TreeEntry:
        """Store the manifest and index the tree; if ``key`` was taken meanwhile, drop
        what this builder wrote and return the existing entry."""
        man = self.manifest
        ingest = self.ingest
        try:
            manifest_digest = ingest.put_parts(man.encode_parts())
            ingest.pack.finish()
            entry = TreeEntry(
                namespace=namespace,
                key=key,
                manifest=manifest_digest,
                size=man.content_size(),
                files=man.file_count(),
                created_at=man.created_at,
                stored_size=ingest.pack.stored_bytes,
                meta=dict(meta or {}),
            )
            # On any failure from here on the packs stay for garbage collection:
            # deleting one the index might already point at would lose data.
            existing = self._store.index.commit(
                ingest.pack.chunks,
                ingest.composites,
                tree=(
                    namespace,
                    key,
                    manifest_digest,
                    man.root,
                    entry.size,
                    entry.files,
                    entry.created_at,
                    entry.stored_size,
                    entry.meta,
                ),
            )
            if existing is not None:
                # The transaction was rolled back: nothing points at our packs.
                ingest.pack.discard()
                return existing
            return entry
        finally:
            self._release()

    def abort(self) -> None:
        """Drop everything written; nothing was indexed."""
        try:
            self.ingest.pack.discard()
        finally:
            self._release()

    def _release(self) -> None:
        if not self._done:
            self._done = True
            self._lock_cm.__exit__(None, None, None)
