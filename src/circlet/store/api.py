"""The narrow interfaces of the stores, as the engine (and later the server and
remote runners over HTTP) see them. Implementations: ``store.blobs.LocalBlobStore``
and ``store.records.RecordStore``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol


@dataclass(frozen=True)
class TreeEntry:
    """A saved directory tree (a cache, or one workspace layer) known by key."""

    namespace: str  # "cache/<project>", "workspace/<workflow_id>", …
    key: str
    manifest: str  # digest of the manifest blob
    size: int  # uncompressed bytes of file contents
    files: int
    created_at: float
    stored_size: int = 0  # compressed bytes newly written by this save
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"build_num": 75}


@dataclass(frozen=True)
class RestoreStats:
    files: int
    size: int
    seconds: float
    method: str  # "stream" (files extracted) | "overlay" (copy-on-write mount)


class BlobStore(Protocol):
    """Content-addressed blobs plus named trees. Everything streams."""

    # -- raw blobs (artifacts, logs)
    def put_blob(self, stream: BinaryIO) -> tuple[str, int]:
        """Store the bytes of ``stream``; return (digest, size). Idempotent."""
        ...

    def open_blob(self, digest: str) -> BinaryIO:
        """Read a blob back (decompressed). KeyError if unknown."""
        ...

    def has_blob(self, digest: str) -> bool: ...

    # -- trees (caches, workspace layers)
    def put_tree(
        self,
        namespace: str,
        key: str,
        root: Path,
        paths: Sequence[str] = (".",),
        meta: dict[str, Any] | None = None,
    ) -> TreeEntry:
        """Snapshot ``paths`` (relative to ``root``, globs allowed) under ``key``.

        Atomic: readers see the old entry or the new one, never a half. If the key
        exists already the existing entry is returned unchanged (CircleCI's caches
        are immutable); callers check :meth:`get_tree` first to report "skipping".
        """
        ...

    def get_tree(self, namespace: str, key: str) -> TreeEntry | None: ...

    def find_tree(self, namespace: str, prefix: str) -> TreeEntry | None:
        """The newest entry whose key starts with ``prefix`` (CircleCI's restore rule)."""
        ...

    def list_trees(self, namespace: str | None = None) -> list[TreeEntry]: ...

    def restore_tree(self, entry: TreeEntry, target: Path) -> RestoreStats:
        """Materialize ``entry`` under ``target`` (created). Later writes to ``target``
        never change the store. Paths keep modes, symlinks and mtimes."""
        ...

    def delete_tree(self, namespace: str, key: str) -> bool: ...

    def prune(self, *, max_bytes: int | None = None, max_age_days: float | None = None) -> int:
        """Drop old trees and unreferenced blobs; return bytes freed."""
        ...


class RecordsReader(Protocol):
    """What the engine reads back from records (timings for test splitting, numbers)."""

    def next_build_num(self, project: str) -> int: ...

    def next_pipeline_number(self, project: str) -> int: ...

    def test_timings(self, project: str, job_name: str) -> dict[str, float]:
        """Seconds per test file and per classname from the newest recorded run."""
        ...


def iter_chunks(stream: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    """Read ``stream`` in chunks of ``size`` bytes until EOF."""
    while chunk := stream.read(size):
        yield chunk
