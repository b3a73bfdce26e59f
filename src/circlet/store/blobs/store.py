"""``LocalBlobStore``: the :class:`~circlet.store.api.BlobStore` on a local folder.

Layout of the store folder::

    index.sqlite   digests → pack locations, (namespace, key) → manifest (WAL)
    packs/         NAME.pack: concatenated zstd frames, one per chunk
    lock           flock: shared while saving/reading, exclusive while pruning
"""

from __future__ import annotations

import fcntl
import gc
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from circlet import overlay as cow_mod
from circlet.overlay import CowArea
from circlet.store.api import RestoreStats, TreeEntry
from circlet.store.blobs.index import Index
from circlet.store.blobs.manifest import DIR, FILE, Manifest
from circlet.store.blobs.packs import ChunkStream, PackReader
from circlet.store.blobs.rescan import rescan, root_key
from circlet.store.blobs.restore import SafeTarget, run_parallel, write_chunks
from circlet.store.blobs.walk import Scan, expand, resolve_root, scan_expanded
from circlet.store.blobs.writer import Ingest, TreeBuilder, known_digests


class BlobNotFoundError(KeyError):
    """A digest the store does not hold."""

    def __str__(self) -> str:
        return f"blob {self.args[0]} is not in the store"


class LocalBlobStore:
    """Content-addressed (blake3), zstd-compressed, deduplicated blobs and trees."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.packs_dir = self.path / "packs"
        self.packs_dir.mkdir(parents=True, exist_ok=True)
        self.materialized_dir = self.path / "materialized"
        self.materialized_dir.mkdir(exist_ok=True)
        lock_path = self.path / "lock"
        lock_path.touch(exist_ok=True)
        self._lock_path = lock_path
        self.index = Index(self.path / "index.sqlite")
        # What the newest put_tree of this object walked and how many files it read.
        self.last_scan: Scan | None = None
        self.last_hashed = 0

    def close(self) -> None:
        """Release the index connection."""
        self.index.close()

    def __enter__(self) -> LocalBlobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- locking: pruning rewrites packs, so it excludes every reader and writer
    @contextmanager
    def shared_lock(self) -> Iterator[None]:
        """Held while a save or a read relies on packs staying where they are."""
        with self._flock(fcntl.LOCK_SH):
            yield

    @contextmanager
    def exclusive_lock(self) -> Iterator[None]:
        """Held by garbage collection."""
        with self._flock(fcntl.LOCK_EX):
            yield

    @contextmanager
    def _flock(self, how: int) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, how)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    # -- raw blobs
    def put_blob(self, stream: BinaryIO) -> tuple[str, int]:
        """Store the bytes of ``stream``; return (digest, size). Idempotent. The blob is
        kept by :meth:`prune` until it is older than the age limit."""
        with self.shared_lock():
            ingest = Ingest(self)
            digest, size = ingest.put_reader(stream.read)
            ingest.pack.finish()
            self.index.commit(ingest.pack.chunks, ingest.composites, blob_ref=digest)
        return digest, size

    def open_blob(self, digest: str) -> BinaryIO:
        """Read a blob back (decompressed, streamed chunk by chunk)."""
        with self.shared_lock():
            return self.open_blob_unlocked(digest)

    def open_blob_unlocked(self, digest: str) -> BinaryIO:
        """:meth:`open_blob` for callers already holding a store lock."""
        locs = self.index.locate([digest]).get(digest)
        if locs is None:
            raise BlobNotFoundError(digest)
        return _buffered(ChunkStream(self.packs_dir, locs))

    def has_blob(self, digest: str) -> bool:
        """Whether the store holds ``digest``."""
        return self.index.has_blob(digest)

    def read_manifest(self, digest: str, *, locked: bool = False) -> Manifest:
        """The manifest blob ``digest``, parsed (``locked``: the caller holds a lock)."""
        if not locked:
            with self.shared_lock():
                return self.read_manifest(digest, locked=True)
        with self.open_blob_unlocked(digest) as fh:
            return Manifest.decode(fh.read())

    # -- trees
    def put_tree(
        self,
        namespace: str,
        key: str,
        root: Path,
        paths: Sequence[str] = (".",),
        meta: dict[str, Any] | None = None,
    ) -> TreeEntry:
        """Snapshot ``paths`` under ``root`` as ``key`` (see the protocol). Files
        unchanged since the newest save of ``namespace`` from the same root are
        not read again."""
        existing = self.index.get_tree(namespace, key)
        if existing is not None:
            return existing
        real_root = resolve_root(Path(root))
        root_str = str(real_root)
        # A save makes a few objects per entry and frees none of them until it
        # ends: the cyclic collector would only walk them again and again (a
        # third of an incremental save's Python time on 17k entries).
        with _gc_paused(), TreeBuilder(self, root=root_str) as builder:
            with ThreadPoolExecutor(1, thread_name_prefix="circlet-prev") as pool:
                prev = pool.submit(self._previous_manifest, namespace, root_str)
                root_stat = root_key(root_str)
                rels, missing = expand(real_root, paths)
                previous = prev.result()
                # Same paths saved from this root before: re-stat those entries and
                # list only the changed directories instead of walking everything.
                fresh = None if previous is None else rescan(root_str, rels, previous, root_stat)
                if fresh is None:
                    # The digests to reuse are indexed on the thread while find walks.
                    known = pool.submit(known_digests, previous)
                    found = scan_expanded(real_root, rels, missing)
                    builder.add_items(found.items, previous, known.result())
                else:
                    found = Scan(root_str, missing=missing, skipped=fresh.skipped)
                    found.incremental, found.listed = True, fresh.listed
                    builder.add_rescan(fresh, root_str)
            self.last_scan = found
            self.last_hashed = builder.hashed
            builder.manifest.walk = list(rels)
            builder.manifest.skipped = list(found.skipped)
            builder.manifest.root_key = root_stat
            return builder.commit(namespace, key, meta)

    def tree_builder(self, root: str = "") -> TreeBuilder:
        """A builder for trees that do not come from a local walk (archive import)."""
        return TreeBuilder(self, root=root)

    def _previous_manifest(self, namespace: str, root: str) -> Manifest | None:
        """The newest manifest saved in ``namespace`` from ``root`` (caller holds a
        lock), None if there is none or it cannot be read."""
        digest = self.index.newest_manifest(namespace, root)
        if digest is None:
            return None
        try:
            locs = self.index.locate([digest]).get(digest)
            if locs is None:
                return None
            # Straight from the mapped packs: a manifest is megabytes, which the
            # buffered stream of read_manifest would copy piece by piece.
            reader = PackReader(self.packs_dir)
            try:
                data = b"".join([reader.read(loc) for loc in locs])
            finally:
                reader.close()
            return Manifest.decode(data)
        except (KeyError, ValueError, OSError):
            return None  # only an optimization: walk and hash everything instead

    def get_tree(self, namespace: str, key: str) -> TreeEntry | None:
        """The entry stored under exactly ``key``."""
        return self.index.get_tree(namespace, key)

    def find_tree(self, namespace: str, prefix: str) -> TreeEntry | None:
        """The newest entry whose key starts with ``prefix``."""
        return self.index.find_tree(namespace, prefix)

    def list_trees(self, namespace: str | None = None) -> list[TreeEntry]:
        """Entries of ``namespace`` (or all), oldest first."""
        return self.index.list_trees(namespace)

    def delete_tree(self, namespace: str, key: str) -> bool:
        """Forget an entry; its blobs go at the next :meth:`prune`."""
        return self.index.delete_tree(namespace, key)

    def restore_tree(
        self, entry: TreeEntry, target: Path, *, cow: CowArea | None = None
    ) -> RestoreStats:
        """Materialize ``entry`` under ``target``.

        With ``cow`` (and where :mod:`circlet.overlay` says it works, into
        a fresh ``target``): an overlay mount of the store's materialized copy
        (method "overlay"; made by streaming the first time), released with
        ``cow``. Otherwise fresh files decompressed from the packs (method
        "stream"). Either way, writes to ``target`` never reach the store.
        """
        start = time.perf_counter()
        if cow is not None and cow_mod.available() and cow_mod.is_fresh(Path(target)):
            try:
                cow.mount(self.materialize(entry), Path(target))
            except OSError:
                pass  # an optimization only: extract instead
            else:
                return RestoreStats(entry.files, entry.size, time.perf_counter() - start, "overlay")
        return self._stream_tree(entry, Path(target), start)

    def materialize(self, entry: TreeEntry) -> Path:
        """The store's complete copy of ``entry``'s files, made once per manifest (by
        a streaming restore into a temporary folder renamed into place) and shared
        read-only by overlay restores. A copy made before the last reboot is made
        again: its newest writes may not have reached the disk."""
        with self.shared_lock():
            final = self.materialized_dir / entry.manifest
            stamp = self.materialized_dir / f"{entry.manifest}.boot"
            boot = _boot_id()
            if final.is_dir():
                if _read(stamp) == boot:
                    return final
                stale = final.with_name(f".stale-{os.urandom(6).hex()}")
                final.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
            tmp = self.materialized_dir / f".tmp-{os.urandom(6).hex()}"
            try:
                self._stream_tree(entry, tmp, time.perf_counter())
                try:
                    tmp.rename(final)
                except OSError:
                    if not final.is_dir():  # else another save made it first
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            stamp_tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}")
            stamp_tmp.write_text(boot)
            stamp_tmp.rename(stamp)
            return final

    def _stream_tree(self, entry: TreeEntry, target: Path, start: float) -> RestoreStats:
        with self.shared_lock():
            man = self.read_manifest(entry.manifest, locked=True)
            man.validate()
            files = [i for i, k in enumerate(man.kinds) if k == FILE]
            locs = self.index.locate({man.digests[i] for i in files})
            missing = {man.digests[i] for i in files} - locs.keys()
            if missing:
                raise BlobNotFoundError(sorted(missing)[0])
            out = SafeTarget(Path(target))
            for i, kind in enumerate(man.kinds):
                if kind == DIR:
                    out.add_dir(man.paths[i], man.modes[i], man.mtimes[i])
                elif kind != FILE:
                    out.add_symlink(man.paths[i], man.digests[i], man.mtimes[i])
            reader = PackReader(self.packs_dir)
            try:

                def restore_one(i: int) -> None:
                    fd = out.create_file(man.paths[i], man.modes[i])
                    try:
                        write_chunks(fd, reader, locs[man.digests[i]])
                    except BaseException:
                        os.close(fd)
                        raise
                    out.close_file(fd, man.modes[i], man.mtimes[i])

                run_parallel(files, man.sizes, restore_one)
            finally:
                reader.close()
            out.finish()
        return RestoreStats(
            files=len(files),
            size=man.content_size(),
            seconds=time.perf_counter() - start,
            method="stream",
        )

    def prune(self, *, max_bytes: int | None = None, max_age_days: float | None = None) -> int:
        """Drop trees older than ``max_age_days``, then the oldest until the store
        holds at most ``max_bytes``; delete what no tree references; return bytes freed."""
        from circlet.store.blobs.gc import collect

        return collect(self, max_bytes=max_bytes, max_age_days=max_age_days).freed

    def stored_bytes(self) -> int:
        """Bytes the packs take on disk."""
        return sum(p.stat().st_size for p in self.packs_dir.iterdir() if p.is_file())


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _buffered(raw: ChunkStream) -> BinaryIO:
    import io

    return io.BufferedReader(raw, buffer_size=1 << 20)
