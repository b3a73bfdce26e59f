"""Tar export/import/extract: round trips, and every unsafe member refused."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from blob_trees import make_tree, snapshot

from circlet.store.archive import (
    UnsafeArchiveError,
    create_archive,
    export_tree,
    extract_archive,
    import_tree,
)
from circlet.store.blobs import LocalBlobStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalBlobStore]:
    with LocalBlobStore(tmp_path / "store") as s:
        yield s


@pytest.mark.parametrize("compress", [True, False])
def test_export_import_round_trip(store: LocalBlobStore, tmp_path: Path, compress: bool) -> None:
    src = make_tree(tmp_path / "src")
    entry = store.put_tree("cache/p", "k", src)
    buf = io.BytesIO()
    written = export_tree(store, entry, buf, compress=compress)
    assert written == entry.size
    assert buf.getvalue()[:4] == (b"\x28\xb5\x2f\xfd" if compress else buf.getvalue()[:4])
    buf.seek(0)
    # Venvs hold absolute symlinks (bin/python): importing them needs the opt-in.
    imported = import_tree(store, "workspace/w", "layer", buf, external_symlinks=True)
    assert imported.files == entry.files
    assert imported.size == entry.size
    store.restore_tree(imported, tmp_path / "out")
    assert snapshot(tmp_path / "out") == snapshot(src)
    # Same content: the import stored nothing but its manifest.
    assert imported.stored_size < 2000
    (src / "locked").chmod(0o755)


def test_export_extract_and_create_extract(store: LocalBlobStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    entry = store.put_tree("cache/p", "k", src)
    buf = io.BytesIO()
    export_tree(store, entry, buf)
    buf.seek(0)
    stats = extract_archive(buf, tmp_path / "x1", external_symlinks=True)
    assert stats.files == entry.files
    assert snapshot(tmp_path / "x1") == snapshot(src)
    buf2 = io.BytesIO()
    files, size = create_archive(src, buf2, ["."])
    assert (files, size) == (entry.files, entry.size)
    buf2.seek(0)
    extract_archive(buf2, tmp_path / "x2", external_symlinks=True)
    assert snapshot(tmp_path / "x2") == snapshot(src)
    (src / "locked").chmod(0o755)


def _tar(build: Callable[[tarfile.TarFile], None], fmt: str = "plain") -> io.BytesIO:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    data = raw.getvalue()
    if fmt == "gz":
        data = gzip.compress(data)
    return io.BytesIO(data)


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"evil") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    tar.addfile(info)


def _dir(tar: tarfile.TarFile, name: str) -> None:
    _special(tar, name, tarfile.DIRTYPE)


UNSAFE: dict[str, tuple[Callable[[tarfile.TarFile], None], str]] = {
    "dotdot": (lambda t: _file(t, "../evil.txt"), "contains '..'"),
    "dotdot-inner": (lambda t: _file(t, "a/../../evil.txt"), "contains '..'"),
    "absolute": (lambda t: _file(t, "/tmp/evil.txt"), "absolute path"),
    "symlink-absolute": (
        lambda t: _special(t, "link", tarfile.SYMTYPE, "/etc"),
        "points outside the root",
    ),
    "symlink-up": (
        lambda t: _special(t, "a/link", tarfile.SYMTYPE, "../../x"),
        "points outside the root",
    ),
    "symlink-then-file": (
        lambda t: (_special(t, "link", tarfile.SYMTYPE, "sub"), _file(t, "link/x.txt")),
        "below symlink 'link'",
    ),
    "hardlink-outside": (
        lambda t: _special(t, "h", tarfile.LNKTYPE, "/etc/passwd"),
        "absolute path",
    ),
    "hardlink-dotdot": (
        lambda t: _special(t, "h", tarfile.LNKTYPE, "../secret"),
        "contains '..'",
    ),
    "hardlink-unknown": (
        lambda t: _special(t, "h", tarfile.LNKTYPE, "later.txt"),
        "not a file earlier in the archive",
    ),
    "chardev": (lambda t: _special(t, "dev", tarfile.CHRTYPE), "device file"),
    "blockdev": (lambda t: _special(t, "dev", tarfile.BLKTYPE), "device file"),
    "fifo": (lambda t: _special(t, "pipe", tarfile.FIFOTYPE), "fifo"),
    "below-file": (lambda t: (_file(t, "a"), _file(t, "a/b")), "below file 'a'"),
    "symlink-replaced": (
        lambda t: (_special(t, "s", tarfile.SYMTYPE, "x"), _file(t, "s")),
        "appears twice",
    ),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_members_are_refused_on_extract(tmp_path: Path, case: str) -> None:
    build, reason = UNSAFE[case]
    target = tmp_path / "deep" / "target"
    with pytest.raises(UnsafeArchiveError, match=reason) as err:
        extract_archive(_tar(build), target)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("refusing archive member ")
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "deep" / "evil.txt").exists()
    assert not list(target.rglob("x.txt"))


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_members_are_refused_on_import(
    store: LocalBlobStore, tmp_path: Path, case: str
) -> None:
    build, reason = UNSAFE[case]
    with pytest.raises(UnsafeArchiveError, match=reason):
        import_tree(store, "workspace/w", "k", _tar(build, "gz"))
    assert store.list_trees() == []
    assert list(store.packs_dir.iterdir()) == []


def test_symlink_through_is_refused_even_when_external_links_are_allowed(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()

    def build(t: tarfile.TarFile) -> None:
        _special(t, "link", tarfile.SYMTYPE, str(outside))
        _file(t, "link/owned.txt")

    with pytest.raises(UnsafeArchiveError, match="would write through it"):
        extract_archive(_tar(build), tmp_path / "t", external_symlinks=True)
    assert list(outside.iterdir()) == []


def test_external_symlink_allowed_on_request_and_hardlink_copied(tmp_path: Path) -> None:
    def build(t: tarfile.TarFile) -> None:
        _dir(t, "./")
        _file(t, "./a.txt", b"content")
        _special(t, "b.txt", tarfile.LNKTYPE, "a.txt")
        _special(t, "py", tarfile.SYMTYPE, "/usr/bin/python3")

    target = tmp_path / "t"
    stats = extract_archive(_tar(build, "gz"), target, external_symlinks=True)
    assert stats.files == 2
    assert (target / "b.txt").read_bytes() == b"content"
    assert (target / "a.txt").stat().st_nlink == 1
    assert os.readlink(target / "py") == "/usr/bin/python3"


def test_extract_never_writes_through_existing_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    target = tmp_path / "t"
    target.mkdir()
    os.link(outside, target / "a.txt")
    extract_archive(_tar(lambda t: _file(t, "a.txt", b"new")), target)
    assert (target / "a.txt").read_bytes() == b"new"
    assert outside.read_text() == "precious"
