"""Garbage collection: by age, by size (oldest first), unreferenced blobs only."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from blob_trees import snapshot

from circlet.store.blobs import LocalBlobStore, collect


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalBlobStore]:
    with LocalBlobStore(tmp_path / "store") as s:
        yield s


def tree(root: Path, shared: bytes, unique_kb: int) -> Path:
    """A tree with one file shared between trees and one incompressible unique file."""
    root.mkdir(parents=True)
    (root / "shared.bin").write_bytes(shared)
    (root / "unique.bin").write_bytes(os.urandom(unique_kb * 1024))
    return root


def test_prune_by_age_drops_only_old_trees(store: LocalBlobStore, tmp_path: Path) -> None:
    shared = os.urandom(50_000)
    old_src = tree(tmp_path / "old", shared, 100)
    old = store.put_tree("cache/p", "old", old_src)
    time.sleep(0.5)
    new_src = tree(tmp_path / "new", shared, 100)
    new = store.put_tree("cache/p", "new", new_src)
    before = store.stored_bytes()
    # The age limit falls between the two saves however long they took (a loaded
    # machine may take longer than the sleep to save the second tree).
    midpoint = (old.created_at + new.created_at) / 2
    result = collect(store, max_age_days=(time.time() - midpoint) / 86400)
    assert result.trees_removed == [("cache/p", "old")]
    assert [e.key for e in store.list_trees()] == ["new"]
    # The old tree's unique 100 kB went; the shared file did not.
    assert 100_000 <= result.freed <= before - new.stored_size + 5000
    assert store.stored_bytes() == before - result.freed
    store.restore_tree(new, tmp_path / "out")
    assert snapshot(tmp_path / "out") == snapshot(new_src)


def test_prune_by_size_drops_oldest_first(store: LocalBlobStore, tmp_path: Path) -> None:
    shared = os.urandom(30_000)
    entries = []
    for i in range(3):
        entries.append(store.put_tree("cache/p", f"k{i}", tree(tmp_path / f"s{i}", shared, 200)))
        time.sleep(0.01)
    # Room for two trees' unique files plus the shared one, not three.
    freed = store.prune(max_bytes=2 * 205_000 + 40_000)
    assert freed >= 200_000
    assert [e.key for e in store.list_trees()] == ["k1", "k2"]
    assert store.stored_bytes() <= 2 * 205_000 + 40_000
    for i in (1, 2):
        store.restore_tree(entries[i], tmp_path / f"out{i}")
        assert snapshot(tmp_path / f"out{i}") == snapshot(tmp_path / f"s{i}")


def test_unreferenced_blobs_go_referenced_stay(store: LocalBlobStore, tmp_path: Path) -> None:
    shared = os.urandom(40_000)
    a_src = tree(tmp_path / "a", shared, 150)
    a = store.put_tree("cache/p", "a", a_src)
    b = store.put_tree("workspace/w", "b", tree(tmp_path / "b", shared, 150))
    digest, _ = store.put_blob(io.BytesIO(b"an artifact"))
    assert store.prune() == 0  # nothing is garbage yet
    assert store.delete_tree("workspace/w", "b")
    freed = store.prune()
    assert 150_000 <= freed < 200_000  # b's unique file; the shared one is a's too
    assert not store.has_blob(b.manifest)
    assert store.has_blob(a.manifest)
    assert store.open_blob(digest).read() == b"an artifact"
    store.restore_tree(a, tmp_path / "out")
    assert snapshot(tmp_path / "out") == snapshot(a_src)


def test_prune_removes_stray_temp_packs_and_old_blobs(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    (store.packs_dir / "leftover.pack.tmp").write_bytes(b"x" * 5000)
    digest, _ = store.put_blob(io.BytesIO(os.urandom(20_000)))
    time.sleep(0.3)
    result = collect(store, max_age_days=0.2 / 86400)
    assert not (store.packs_dir / "leftover.pack.tmp").exists()
    assert result.blobs_removed == 1
    assert not store.has_blob(digest)
    assert store.stored_bytes() == 0
