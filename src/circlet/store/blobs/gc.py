"""Garbage collection: expire trees by age and by total size (oldest first), then
drop chunks no remaining tree or pinned blob references, repacking packs that are
mostly dead. Runs under the store's exclusive lock, so no save or restore is in
flight; each step is ordered so that a kill at any point loses nothing live:
new packs are written and indexed before old ones are deleted."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from circlet.store.blobs.index import ChunkLoc, NewChunk
from circlet.store.blobs.packs import PackWriter

if TYPE_CHECKING:
    from circlet.store.blobs.store import LocalBlobStore

REPACK_DEAD_FRACTION = 0.25


@dataclass
class PruneResult:
    """What :func:`collect` did."""

    freed: int = 0
    trees_removed: list[tuple[str, str]] = field(default_factory=list)
    blobs_removed: int = 0
    chunks_removed: int = 0
    packs_removed: int = 0
    packs_rewritten: int = 0
    materialized_removed: int = 0


@dataclass
class _Holder:
    """A tree or a pinned blob, and the chunks it keeps alive."""

    created_at: float
    tree: tuple[str, str] | None
    ref: str | None
    roots: set[str]  # digests named directly (blobs, possibly composites)
    chunks: set[str] = field(default_factory=set)


def collect(
    store: LocalBlobStore, *, max_bytes: int | None = None, max_age_days: float | None = None
) -> PruneResult:
    """Prune ``store`` (see :meth:`LocalBlobStore.prune`)."""
    result = PruneResult()
    index = store.index
    with store.exclusive_lock():
        before = store.stored_bytes()
        trees, refs = index.gc_snapshot()
        chunks = index.all_chunks()
        composites = index.all_composites()
        cutoff = time.time() - max_age_days * 86400 if max_age_days is not None else None
        holders: list[_Holder] = []
        for namespace, key, manifest, created_at in trees:
            if cutoff is not None and created_at < cutoff:
                result.trees_removed.append((namespace, key))
                continue
            try:
                man = store.read_manifest(manifest, locked=True)
            except (KeyError, ValueError, OSError):
                # A tree whose manifest cannot be read cannot be restored either.
                result.trees_removed.append((namespace, key))
                continue
            holders.append(
                _Holder(created_at, (namespace, key), None, {manifest, *man.file_digests()})
            )
        dropped_refs: list[str] = []
        for digest, created_at in refs:
            if cutoff is not None and created_at < cutoff:
                dropped_refs.append(digest)
            else:
                holders.append(_Holder(created_at, None, digest, {digest}))
        # Expand composite digests to their chunks.
        recipes = index.composites_of(composites)
        for holder in holders:
            for digest in holder.roots:
                holder.chunks.update(recipes.get(digest, [digest]))
        refcount: Counter[str] = Counter()
        for holder in holders:
            refcount.update(holder.chunks)
        live_bytes = sum(chunks[d].clen for d in refcount if d in chunks)
        if max_bytes is not None:
            holders.sort(key=lambda h: h.created_at)
            while holders and live_bytes > max_bytes:
                oldest = holders.pop(0)
                if oldest.tree is not None:
                    result.trees_removed.append(oldest.tree)
                else:
                    assert oldest.ref is not None
                    dropped_refs.append(oldest.ref)
                for digest in oldest.chunks:
                    refcount[digest] -= 1
                    if refcount[digest] == 0:
                        del refcount[digest]
                        if digest in chunks:
                            live_bytes -= chunks[digest].clen
        live_composites = {d for h in holders for d in h.roots if d in recipes}
        dead_chunks = [d for d in chunks if d not in refcount]
        dead_composites = [d for d in composites if d not in live_composites]
        moved, doomed = _repack(store, chunks, refcount)
        index.apply_gc(result.trees_removed, dropped_refs, dead_chunks, dead_composites, moved)
        result.blobs_removed = len(dropped_refs)
        result.chunks_removed = len(dead_chunks)
        result.packs_rewritten = len(doomed) - _count_empty(chunks, refcount, doomed)
        result.packs_removed = len(doomed)
        for name in doomed:
            (store.packs_dir / f"{name}.pack").unlink(missing_ok=True)
        for stray in store.packs_dir.glob("*.pack.tmp"):
            stray.unlink(missing_ok=True)
        removed = set(result.trees_removed)
        kept = {m for (ns, key, m, _) in trees if (ns, key) not in removed}
        result.materialized_removed = _drop_materialized(store, kept)
        result.freed = max(0, before - store.stored_bytes())
    return result


def _drop_materialized(store: LocalBlobStore, kept: set[str]) -> int:
    """Delete materialized copies of trees no longer stored (and leftovers of
    interrupted ones), except those an overlay mount still uses. Returns how many."""
    from circlet.overlay import lower_dirs_in_use

    in_use = lower_dirs_in_use()
    removed = 0
    for path in store.materialized_dir.iterdir():
        name = path.name
        digest = name.removesuffix(".boot")
        if digest in kept or str(store.materialized_dir / digest) in in_use:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed += not name.startswith(".")
        else:
            path.unlink(missing_ok=True)
    return removed


def _count_empty(chunks: dict[str, ChunkLoc], refcount: Counter[str], packs: list[str]) -> int:
    live_packs = {chunks[d].pack for d in refcount if d in chunks}
    return sum(1 for p in packs if p not in live_packs)


def _repack(
    store: LocalBlobStore, chunks: dict[str, ChunkLoc], refcount: Counter[str]
) -> tuple[list[NewChunk], list[str]]:
    """Copy live chunks out of mostly-dead packs into a new pack. Returns the moved
    chunks' new locations and the packs to delete once the index is updated."""
    by_pack: dict[str, list[tuple[str, ChunkLoc]]] = {}
    for digest, loc in chunks.items():
        by_pack.setdefault(loc.pack, []).append((digest, loc))
    on_disk = {p.name[: -len(".pack")]: p.stat().st_size for p in store.packs_dir.glob("*.pack")}
    doomed: list[str] = []
    to_move: list[tuple[str, ChunkLoc]] = []
    for pack, size in on_disk.items():
        entries = by_pack.get(pack, [])
        live = [(d, loc) for d, loc in entries if d in refcount]
        live_bytes = sum(loc.clen for _, loc in live)
        if not live:
            doomed.append(pack)
        elif size - live_bytes > REPACK_DEAD_FRACTION * size:
            doomed.append(pack)
            to_move.extend(live)
    if not to_move:
        return [], doomed
    writer = PackWriter(store.packs_dir)
    fds: dict[str, int] = {}
    try:
        for digest, loc in sorted(to_move, key=lambda x: (x[1].pack, x[1].offset)):
            fd = fds.get(loc.pack)
            if fd is None:
                fd = fds[loc.pack] = os.open(store.packs_dir / f"{loc.pack}.pack", os.O_RDONLY)
            frame = os.pread(fd, loc.clen, loc.offset)
            writer.append(digest, frame, loc.size)
    finally:
        for fd in fds.values():
            os.close(fd)
    writer.finish()
    return writer.chunks, doomed
