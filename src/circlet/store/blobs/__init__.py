"""The local blob store: content-addressed (blake3), zstd-compressed, deduplicated
blobs and named trees (caches, workspace layers). See docs/blob-store.md."""

from circlet.store.blobs.gc import PruneResult, collect
from circlet.store.blobs.manifest import Manifest, UnsafePathError
from circlet.store.blobs.store import BlobNotFoundError, LocalBlobStore
from circlet.store.blobs.writer import TreeBuilder

__all__ = [
    "BlobNotFoundError",
    "LocalBlobStore",
    "Manifest",
    "PruneResult",
    "TreeBuilder",
    "UnsafePathError",
    "collect",
]
