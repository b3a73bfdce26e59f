"""Incremental saves (a second put_tree of the same paths from the same root): the
previous entries are re-stated and only changed directories are listed again, and
the tree saved must be exactly what a full walk of the same files gives."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from blob_trees import snapshot

from circlet.store.blobs import LocalBlobStore, Manifest
from circlet.store.blobs.rescan import rescan

NS = "cache/p"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalBlobStore]:
    with LocalBlobStore(tmp_path / "store") as s:
        yield s


def _settle() -> None:
    """Entries changed within a second before a save are re-checked by the next one
    whatever their stat says; wait so that only real changes count."""
    time.sleep(1.1)


def _rows(man: Manifest) -> dict[str, tuple[object, ...]]:
    return {
        p: (k, m, t, s, d, i, c)
        for p, k, m, t, s, d, i, c in zip(
            man.paths,
            man.kinds,
            man.modes,
            man.mtimes,
            man.sizes,
            man.digests,
            man.inos,
            man.ctimes,
            strict=True,
        )
    }


def _full_walk_rows(
    tmp_path: Path, src: Path, paths: tuple[str, ...] = (".",)
) -> dict[str, tuple[object, ...]]:
    """The manifest rows a first save (a full walk) of ``src`` gives."""
    with LocalBlobStore(tmp_path / f"fresh-{time.monotonic_ns()}") as fresh:
        entry = fresh.put_tree(NS, "full", src, paths=paths)
        assert fresh.last_scan is not None
        assert not fresh.last_scan.incremental
        return _rows(fresh.read_manifest(entry.manifest))


def _assert_parents_first(man: Manifest) -> None:
    seen: set[str] = set()
    for path in man.paths:
        parent = path.rpartition("/")[0]
        assert parent == "" or parent in seen, f"{path} comes before its directory"
        seen.add(path)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_every_kind_of_change_is_saved(store: LocalBlobStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    outside = tmp_path / "outside"
    _write(outside / "f.txt", b"outside the root: never saved")
    # Many untouched entries, so that a wrong reuse cannot hide among changes.
    for i in range(60):
        _write(src / "keep" / f"d{i % 6}" / f"k{i}.txt", f"keep {i}\n".encode())
    names = [
        "same-size",
        "same-mtime",
        "grown",
        "chmod",
        "new-inode",
        "touched",
        "removed",
        "renamed",
        "moved",
        "to-dir",
    ]
    for name in names:
        _write(src / "files" / name, f"{name} v1\n".encode())
    _write(src / "deep" / "a" / "b" / "c" / "leaf.txt", b"leaf v1")
    _write(src / "gone" / "sub" / "x.txt", b"x")
    _write(src / "to-file" / "y.txt", b"y")
    _write(src / "to-link" / "f.txt", b"inside v1")
    (src / "empty-gone").mkdir()
    for name in ("a", "b"):
        _write(src / "swap" / name / "same.txt", f"in {name}\n".encode())
        _write(src / "swap" / name / f"only-{name}.txt", name.encode())
    (src / "links").mkdir()
    (src / "links" / "retarget").symlink_to("../files/touched")
    (src / "links" / "to-file").symlink_to("nowhere")
    (src / "links" / "removed").symlink_to("nowhere")
    (src / "dirmode").mkdir()
    _settle()
    first = store.put_tree(NS, "one", src)
    assert store.last_scan is not None
    assert not store.last_scan.incremental

    files = src / "files"
    (files / "same-size").write_bytes(b"same-size v2\n")
    st = os.lstat(files / "same-mtime")
    (files / "same-mtime").write_bytes(b"same-mtime v2\n")
    os.utime(files / "same-mtime", ns=(st.st_atime_ns, st.st_mtime_ns))  # only ctime moves
    with (files / "grown").open("ab") as fh:
        fh.write(b"more\n")
    (files / "chmod").chmod(0o751)
    st = os.lstat(files / "new-inode")
    (files / "tmp").write_bytes(b"new-inode v2\n")
    os.utime(files / "tmp", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(files / "tmp", files / "new-inode")  # same size and mtime, new inode
    os.utime(files / "touched")
    (files / "removed").unlink()
    (files / "renamed").rename(files / "renamed-now")
    (files / "moved").rename(src / "deep" / "a" / "moved")
    (files / "to-dir").unlink()
    _write(files / "to-dir" / "inner.txt", b"was a file")
    _write(files / "added.txt", b"added")
    _write(src / "new-dir" / "n1" / "n2.txt", b"nested new")
    (src / "new-dir" / "link").symlink_to("n1/n2.txt")
    (src / "new-empty").mkdir()
    _write(src / "top-added", b"top")
    (src / "deep" / "a" / "b" / "c" / "leaf.txt").write_bytes(b"leaf v2")  # dirs untouched
    shutil.rmtree(src / "gone")
    (src / "empty-gone").rmdir()
    shutil.rmtree(src / "to-file")
    (src / "to-file").write_bytes(b"was a directory")
    shutil.rmtree(src / "to-link")
    (src / "to-link").symlink_to(outside)  # "to-link/f.txt" now resolves outside
    (src / "swap" / "a").rename(src / "swap" / "tmp")
    (src / "swap" / "b").rename(src / "swap" / "a")
    (src / "swap" / "tmp").rename(src / "swap" / "b")
    (src / "links" / "retarget").unlink()
    (src / "links" / "retarget").symlink_to("../files/grown")
    (src / "links" / "to-file").unlink()
    (src / "links" / "to-file").write_bytes(b"was a symlink")
    (src / "links" / "removed").unlink()
    (src / "dirmode").chmod(0o700)

    second = store.put_tree(NS, "two", src)
    assert store.last_scan is not None
    assert store.last_scan.incremental
    man = store.read_manifest(second.manifest)
    man.validate()
    _assert_parents_first(man)
    rows = _rows(man)
    assert rows == _full_walk_rows(tmp_path, src)
    assert rows["to-link"][0] == "l"
    assert not any(p.startswith("to-link/") for p in rows)
    before = _rows(store.read_manifest(first.manifest))
    assert rows["files/touched"][4] == before["files/touched"][4]  # same content
    # Read again: 7 files changed in place, 8 new ones, and in the swapped
    # directories 2 files of the same name and 2 new to each; nothing else.
    assert store.last_hashed == 19

    store.restore_tree(second, tmp_path / "out")
    assert snapshot(tmp_path / "out") == snapshot(src)
    # And the first tree is intact.
    store.restore_tree(first, tmp_path / "out-first")
    assert (tmp_path / "out-first" / "files" / "same-size").read_bytes() == b"same-size v1\n"
    assert (tmp_path / "out-first" / "to-link" / "f.txt").read_bytes() == b"inside v1"


def test_only_changed_directories_are_listed(store: LocalBlobStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(40):
        _write(src / f"d{i}" / "sub" / "f.txt", f"{i}".encode())
    _settle()
    store.put_tree(NS, "one", src)
    (src / "d7" / "sub" / "f.txt").write_bytes(b"changed in place")
    _settle()  # (else the next save checks it again, see the test below)
    store.put_tree(NS, "two", src)
    assert store.last_scan is not None
    assert store.last_scan.incremental
    assert store.last_scan.listed == 0
    assert store.last_hashed == 1
    _write(src / "d3" / "sub" / "new.txt", b"new")
    _settle()
    entry = store.put_tree(NS, "three", src)
    assert store.last_scan.incremental
    assert store.last_scan.listed == 1  # d3/sub
    assert store.last_hashed == 1
    store.restore_tree(entry, tmp_path / "out")
    assert snapshot(tmp_path / "out") == snapshot(src)
    _write(src / "top.txt", b"top")  # the root has no row: its key is in the header
    shutil.rmtree(src / "d5")
    entry = store.put_tree(NS, "four", src)
    assert store.last_scan.incremental
    assert store.last_scan.listed == 1
    assert store.last_hashed == 1
    assert _rows(store.read_manifest(entry.manifest)) == _full_walk_rows(tmp_path, src)


def test_entries_changed_just_before_a_save_are_checked_again(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    for i in range(5):
        _write(src / f"d{i}" / "f.txt", b"x")
    store.put_tree(NS, "one", src)  # everything is less than a second old
    entry = store.put_tree(NS, "two", src)
    assert store.last_scan is not None
    assert store.last_scan.incremental
    assert store.last_hashed == 5
    assert store.last_scan.listed == 6
    store.restore_tree(entry, tmp_path / "out")
    assert snapshot(tmp_path / "out") == snapshot(src)


def test_other_paths_or_globs_walk_everything(store: LocalBlobStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src / "pkg" / "a.py", b"a")
    _write(src / "pkg" / "b.py", b"b")
    _write(src / "bin" / "tool", b"tool")
    _write(src / "other" / "o.txt", b"o")
    _settle()
    paths = ("pkg/*.py", "bin")
    store.put_tree(NS, "one", src, paths=paths)
    (src / "pkg" / "a.py").write_bytes(b"a2")
    _write(src / "bin" / "more", b"more")
    entry = store.put_tree(NS, "two", src, paths=paths)
    assert store.last_scan is not None
    assert store.last_scan.incremental
    assert _rows(store.read_manifest(entry.manifest)) == _full_walk_rows(tmp_path, src, paths)
    assert store.last_hashed == 2
    _write(src / "pkg" / "c.py", b"c")  # the glob now matches another file
    entry = store.put_tree(NS, "three", src, paths=paths)
    assert not store.last_scan.incremental
    assert _rows(store.read_manifest(entry.manifest)) == _full_walk_rows(tmp_path, src, paths)
    entry = store.put_tree(NS, "four", src, paths=("pkg",))
    assert not store.last_scan.incremental
    assert sorted(store.read_manifest(entry.manifest).paths) == [
        "pkg",
        "pkg/a.py",
        "pkg/b.py",
        "pkg/c.py",
    ]


def test_special_files_stay_skipped(store: LocalBlobStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src / "sub" / "f.txt", b"f")
    os.mkfifo(src / "sub" / "fifo")
    _settle()
    store.put_tree(NS, "one", src)
    assert store.last_scan is not None
    assert store.last_scan.skipped == ["sub/fifo"]
    (src / "sub" / "f.txt").write_bytes(b"f2")
    entry = store.put_tree(NS, "two", src)
    assert store.last_scan.incremental
    assert store.last_scan.skipped == ["sub/fifo"]  # its directory was not listed
    os.mkfifo(src / "fifo2")
    (src / "sub" / "fifo").unlink()
    (src / "sub" / "fifo").mkdir()  # a fifo replaced by a directory
    entry = store.put_tree(NS, "three", src)
    assert store.last_scan.incremental
    assert store.last_scan.skipped == ["fifo2"]
    man = store.read_manifest(entry.manifest)
    assert sorted(man.paths) == ["sub", "sub/f.txt", "sub/fifo"]
    assert man.skipped == ["fifo2"]


def test_manifest_sections_left_alone_are_not_stored_again(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    for i in range(300):
        _write(src / f"d{i % 10}" / f"f{i}.txt", os.urandom(64))
    _settle()
    first = store.put_tree(NS, "one", src)
    os.utime(src / "d1" / "f1.txt")
    second = store.put_tree(NS, "two", src)
    assert store.last_scan is not None
    assert store.last_scan.incremental
    one = store.index.locate([first.manifest])[first.manifest]
    two = store.index.locate([second.manifest])[second.manifest]
    shared = {(c.pack, c.offset) for c in one} & {(c.pack, c.offset) for c in two}
    # header, mtimes and ctimes changed; paths, kinds, digests, modes, sizes, inodes did not
    assert len(two) == 9
    assert len(shared) == 6
    assert second.stored_size < sum(c.clen for c in two) / 2
    assert store.read_manifest(second.manifest).paths == store.read_manifest(first.manifest).paths


def test_rescan_needs_a_walked_manifest_of_the_same_paths(tmp_path: Path) -> None:
    root = str(tmp_path)
    man = Manifest(root=root, created_at=0.0)
    assert rescan(root, ["."], man) is None  # not from a walk (an archive import)
    man.walk = ["a"]
    assert rescan(root, ["."], man) is None
    assert rescan(root, ["a"], man) is None  # the start "a" has no row
    man.add("a", "d", 0o755, 0)
    gone = rescan(root, ["a"], man)  # (the caller's expand() would report it missing)
    assert gone is not None
    assert gone.columns.paths == []
    (tmp_path / "a").mkdir()
    found = rescan(root, ["a"], man)
    assert found is not None
    assert found.columns.paths == ["a"]
    assert found.todo == []


def test_reused_sections_encode_exactly_like_fresh_ones() -> None:
    man = Manifest(root="/r", created_at=1.5, walk=["."])
    for i in range(50):
        man.add(f"d/f{i}", "f", 0o644, i * 7, size=i, digest=f"{i:064x}", ino=i + 9, ctime_ns=i)
    old = Manifest.decode(man.encode())
    new = Manifest(
        root="/r",
        created_at=2.5,
        paths=list(old.paths),
        kinds=list(old.kinds),
        modes=list(old.modes),
        mtimes=list(old.mtimes),
        sizes=list(old.sizes),
        digests=list(old.digests),
        inos=list(old.inos),
        ctimes=list(old.ctimes),
        walk=["."],
        based_on=old,
    )
    new.mtimes[3] = 123
    new.digests[7] = "e" * 64
    fresh = Manifest.decode(new.encode())
    assert fresh.based_on is None
    fresh.created_at = 2.5
    assert new.encode() == fresh.encode()
    assert fresh.mtimes[3] == 123
    assert fresh.digests[7] == "e" * 64
    assert fresh.paths == man.paths
    new.paths.append("extra")  # any change to a column is encoded, never reused
    for column in ("kinds", "modes", "mtimes", "sizes", "digests", "inos", "ctimes"):
        getattr(new, column).append(getattr(new, column)[0])
    assert Manifest.decode(new.encode()).paths[-1] == "extra"
