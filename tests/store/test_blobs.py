"""LocalBlobStore: blobs, trees, round trips, isolation of restores, path safety."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from blob_trees import make_tree, snapshot

from circlet.store.blobs import LocalBlobStore, Manifest, UnsafePathError
from circlet.store.blobs.packs import CHUNK_SIZE


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalBlobStore]:
    with LocalBlobStore(tmp_path / "store") as s:
        yield s


def test_blob_round_trip_small_and_chunked(store: LocalBlobStore) -> None:
    small = b"hello blob"
    big = os.urandom(CHUNK_SIZE) + b"x" * (CHUNK_SIZE + 123)
    d1, n1 = store.put_blob(io.BytesIO(small))
    d2, n2 = store.put_blob(io.BytesIO(big))
    assert (n1, n2) == (len(small), len(big))
    assert store.has_blob(d1)
    assert store.has_blob(d2)
    assert store.open_blob(d1).read() == small
    with store.open_blob(d2) as fh:
        assert fh.read(10) == big[:10]
        assert fh.read() == big[10:]
    before = store.stored_bytes()
    assert store.put_blob(io.BytesIO(big)) == (d2, n2)  # idempotent, nothing new
    assert store.stored_bytes() == before
    assert not store.has_blob("0" * 64)
    with pytest.raises(KeyError, match="not in the store"):
        store.open_blob("0" * 64)


def test_tree_round_trip_keeps_bytes_modes_links_mtimes(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src")
    entry = store.put_tree("cache/p", "k1", src, meta={"build_num": 75})
    assert entry.files == 8
    assert entry.meta == {"build_num": 75}
    assert entry.size == sum(
        p.lstat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink()
    )
    stats = store.restore_tree(entry, tmp_path / "out")
    assert stats.files == entry.files
    assert stats.size == entry.size
    assert stats.method == "stream"
    assert snapshot(tmp_path / "out") == snapshot(src)
    (src / "locked").chmod(0o755)
    (tmp_path / "out" / "locked").chmod(0o755)


def test_large_file_round_trip(store: LocalBlobStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    payload = os.urandom(CHUNK_SIZE * 2 + 5)
    (src / "big.bin").write_bytes(payload)
    entry = store.put_tree("cache/p", "big", src)
    store.restore_tree(entry, tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == payload
    # Appending to a big file re-stores only the chunks that changed.
    (src / "big.bin").write_bytes(payload + b"tail")
    second = store.put_tree("cache/p", "big2", src)
    assert second.stored_size < CHUNK_SIZE


def test_existing_key_is_immutable(store: LocalBlobStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    first = store.put_tree("cache/p", "k", src)
    (src / "pkg" / "mod.py").write_text("changed")
    again = store.put_tree("cache/p", "k", src)
    assert again == first
    store.restore_tree(again, tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "mod.py").read_text() == "print('hi')\n" * 50


def test_find_list_delete(store: LocalBlobStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    a = store.put_tree("cache/p", "v1-deps-aaa", src)
    time.sleep(0.01)
    b = store.put_tree("cache/p", "v1-deps-bbb", src, paths=["pkg"])
    store.put_tree("cache/other", "v1-deps-zzz", src, paths=["bin"])
    found = store.find_tree("cache/p", "v1-deps-")
    assert found is not None
    assert found.key == b.key
    assert store.find_tree("cache/p", "v1-deps-aaa") == a
    assert store.find_tree("cache/p", "v2-") is None
    assert [e.key for e in store.list_trees("cache/p")] == ["v1-deps-aaa", "v1-deps-bbb"]
    assert len(store.list_trees()) == 3
    assert store.get_tree("cache/p", "v1-deps-bbb") == b
    assert store.delete_tree("cache/p", "v1-deps-bbb")
    assert not store.delete_tree("cache/p", "v1-deps-bbb")
    assert store.find_tree("cache/p", "v1-deps-") == a


def test_second_save_writes_only_changes_and_skips_unchanged_files(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        (src / f"f{i}.bin").write_bytes(os.urandom(2000))
    time.sleep(1.1)  # files changed within a second of a save are always re-read
    first = store.put_tree("cache/p", "one", src)
    assert store.last_hashed == 200
    time.sleep(1.1)
    (src / "f3.bin").write_bytes(os.urandom(2000))
    (src / "new.bin").write_bytes(os.urandom(2000))
    second = store.put_tree("cache/p", "two", src)
    assert store.last_hashed == 2
    assert second.files == 201
    # Only two new 2 kB blobs plus the manifest were written.
    assert second.stored_size < first.stored_size / 10
    store.restore_tree(second, tmp_path / "out")
    assert snapshot(tmp_path / "out") == snapshot(src)


def test_restored_files_are_copies_not_links(store: LocalBlobStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    entry = store.put_tree("cache/p", "k", src)
    out = tmp_path / "out"
    store.restore_tree(entry, out)
    (out / "pkg" / "mod.py").write_text("job changed me")
    (out / "bin" / "tool").chmod(0o700)
    with (out / "pkg" / "sub" / "data.bin").open("r+b") as fh:
        fh.write(b"\0" * 100)
    assert (out / "pkg" / "mod.py").stat().st_nlink == 1
    store.restore_tree(entry, tmp_path / "again")
    assert snapshot(tmp_path / "again") == snapshot(src)
    # Restoring over the modified target puts the saved bytes back.
    store.restore_tree(entry, out)
    assert (out / "pkg" / "mod.py").read_text() == "print('hi')\n" * 50
    (src / "locked").chmod(0o755)


def test_restore_replaces_a_hardlink_instead_of_writing_through(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("from cache")
    entry = store.put_tree("cache/p", "k", src)
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    os.link(outside, out / "f.txt")
    store.restore_tree(entry, out)
    assert (out / "f.txt").read_text() == "from cache"
    assert outside.read_text() == "precious"


def test_restore_refuses_a_target_symlink_leading_outside(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f.txt").write_text("x")
    entry = store.put_tree("cache/p", "k", src)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / "a")
    with pytest.raises(UnsafePathError, match="symlink leading outside"):
        store.restore_tree(entry, out)
    assert list(elsewhere.iterdir()) == []


def test_put_tree_paths_globs_and_absolute(store: LocalBlobStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    entry = store.put_tree("cache/p", "g", src, paths=["pkg/*.py", str(src / "bin"), "nope"])
    man = store.read_manifest(entry.manifest)
    assert man.paths == [
        "bin",
        "bin/python",
        "bin/tool",
        "pkg/__init__.py",
        "pkg/mod.py",
        "pkg/same.py",
    ]
    assert store.last_scan is not None
    assert store.last_scan.missing == ["nope"]
    store.restore_tree(entry, tmp_path / "out")
    assert (tmp_path / "out" / "bin" / "tool").stat().st_mode & 0o777 == 0o755
    assert os.readlink(tmp_path / "out" / "bin" / "python") == "/usr/bin/python3"
    (src / "locked").chmod(0o755)


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc", "/"])
def test_put_tree_refuses_paths_outside_root(
    store: LocalBlobStore, tmp_path: Path, bad: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(UnsafePathError, match="outside the root"):
        store.put_tree("cache/p", "k", src, paths=[bad])
    assert store.list_trees() == []


def test_put_tree_never_follows_symlinks(store: LocalBlobStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(outside, src / "out-link")
    os.mkfifo(src / "fifo")
    entry = store.put_tree("cache/p", "k", src)
    man = store.read_manifest(entry.manifest)
    assert man.paths == ["out-link"]
    assert man.kinds == ["l"]
    assert store.last_scan is not None
    assert store.last_scan.skipped == ["fifo"]
    with pytest.raises(UnsafePathError, match="symlink 'out-link' that points outside"):
        store.put_tree("cache/p", "k2", src, paths=["out-link/secret.txt"])


def test_manifest_validation_refuses_escapes() -> None:
    for bad in ("../x", "/abs", "a/./b", "a//b", ""):
        man = Manifest()
        man.add(bad, "f", 0o644, 0, digest="d")
        with pytest.raises(UnsafePathError):
            man.validate()
    through = Manifest()
    through.add("link", "l", 0o777, 0, digest="/etc")
    through.add("link/passwd", "f", 0o644, 0, digest="d")
    with pytest.raises(UnsafePathError, match="below symlink 'link'"):
        through.validate()
    ok = Manifest()
    ok.add("link", "l", 0o777, 0, digest="/etc")
    ok.add("link-2/x", "f", 0o644, 0, digest="d")
    ok.validate()
    with pytest.raises(ValueError, match="not a circlet tree manifest"):
        Manifest.decode(b'{"format": "other"}')


def test_open_blob_survives_concurrent_reads(store: LocalBlobStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    entry = store.put_tree("cache/p", "k", src)
    man = store.read_manifest(entry.manifest)
    i = man.paths.index("pkg/sub/data.bin")
    assert store.open_blob(man.digests[i]).read() == (src / "pkg/sub/data.bin").read_bytes()
    (src / "locked").chmod(0o755)


def test_many_packs_per_save(
    store: LocalBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from circlet.store.blobs import packs

    monkeypatch.setattr(packs, "PACK_LIMIT", 50_000)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"f{i}").write_bytes(os.urandom(30_000))
    entry = store.put_tree("cache/p", "k", src)
    names = sorted(p.name for p in store.packs_dir.iterdir())
    assert len(names) >= 6
    assert all(n.endswith(".pack") for n in names)
    assert store.prune() == 0
    store.restore_tree(entry, tmp_path / "out")
    assert snapshot(tmp_path / "out") == snapshot(src)
