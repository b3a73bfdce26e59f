"""Copy-on-write restores of stored trees: materialized copies and overlay mounts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from blob_trees import make_tree, snapshot

from circlet import overlay
from circlet.store.blobs import LocalBlobStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalBlobStore]:
    with LocalBlobStore(tmp_path / "store") as s:
        yield s


@pytest.fixture
def area(tmp_path: Path) -> Iterator[overlay.CowArea]:
    cow = overlay.CowArea(tmp_path / "cow")
    yield cow
    cow.release()


def test_overlay_restore_equals_a_streamed_one(
    store: LocalBlobStore, area: overlay.CowArea, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src")
    entry = store.put_tree("cache/p", "k", src)
    first = store.restore_tree(entry, tmp_path / "a", cow=area)
    again = store.restore_tree(entry, tmp_path / "b", cow=area)
    streamed = store.restore_tree(entry, tmp_path / "c")
    assert (first.method, again.method, streamed.method) == ("overlay", "overlay", "stream")
    assert (again.files, again.size) == (entry.files, entry.size)
    assert snapshot(tmp_path / "a") == snapshot(src)
    assert snapshot(tmp_path / "b") == snapshot(src)
    assert snapshot(tmp_path / "c") == snapshot(src)
    (src / "locked").chmod(0o755)


def test_writes_through_an_overlay_never_reach_the_store(
    store: LocalBlobStore, area: overlay.CowArea, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src")
    (src / "locked").chmod(0o755)
    entry = store.put_tree("cache/p", "k", src)
    out = tmp_path / "out"
    store.restore_tree(entry, out, cow=area)
    (out / "pkg" / "mod.py").write_text("tampered")
    (out / "pkg" / "sub" / "data.bin").unlink()
    (out / "bin" / "new").write_text("new")
    with open(out / "pkg" / "same.py", "r+b") as fh:  # in place, as a hardlink would not survive
        fh.write(b"XX")
    area.release()
    assert snapshot(store.materialize(entry)) == snapshot(src)
    store.restore_tree(entry, tmp_path / "again")
    assert snapshot(tmp_path / "again") == snapshot(src)


def test_a_full_target_or_the_off_switch_streams(
    store: LocalBlobStore,
    area: overlay.CowArea,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = make_tree(tmp_path / "src")
    entry = store.put_tree("cache/p", "k", src)
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine").write_text("keep")
    assert store.restore_tree(entry, full, cow=area).method == "stream"
    assert (full / "mine").read_text() == "keep"
    monkeypatch.setenv("CIRCLET_CACHE_COW", "off")
    assert store.restore_tree(entry, tmp_path / "fresh", cow=area).method == "stream"
    assert area.targets == []
    (src / "locked").chmod(0o755)
    (full / "locked").chmod(0o755)
    (tmp_path / "fresh" / "locked").chmod(0o755)


def test_a_copy_from_before_a_reboot_is_made_again(store: LocalBlobStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    (src / "locked").chmod(0o755)
    entry = store.put_tree("cache/p", "k", src)
    copy = store.materialize(entry)
    assert store.materialize(entry) == copy
    (copy / "pkg" / "mod.py").write_text("")  # what a lost write-back would leave
    stamp = store.materialized_dir / f"{entry.manifest}.boot"
    stamp.write_text("another-boot")
    assert snapshot(store.materialize(entry)) == snapshot(src)
    assert [p.name for p in store.materialized_dir.iterdir() if p.name.startswith(".")] == []


def test_prune_drops_copies_of_deleted_trees_unless_mounted(
    store: LocalBlobStore, area: overlay.CowArea, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src")
    (src / "locked").chmod(0o755)
    one = store.put_tree("cache/p", "one", src)
    (src / "pkg" / "extra.py").write_text("x = 1\n")
    two = store.put_tree("cache/p", "two", src)
    store.restore_tree(one, tmp_path / "mounted", cow=area)
    store.materialize(two)
    (store.materialized_dir / ".tmp-leftover").mkdir()
    store.delete_tree("cache/p", "one")
    store.delete_tree("cache/p", "two")
    store.prune()
    left = sorted(p.name for p in store.materialized_dir.iterdir())
    assert left == sorted([one.manifest, f"{one.manifest}.boot"])  # in use by the mount
    assert (tmp_path / "mounted" / "pkg" / "mod.py").exists()
    area.release()
    store.prune()
    assert list(store.materialized_dir.iterdir()) == []
