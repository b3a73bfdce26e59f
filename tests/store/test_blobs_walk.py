"""The walk of a save: GNU find's listing and the Python walk agree exactly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circlet.store.blobs import walk


def _tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f.txt").write_bytes(b"x" * 1000)
    (root / "a" / "g").write_bytes(b"")
    os.chmod(root / "a" / "g", 0o4751)
    (root / "top").write_text("t")
    (root / "caf\xe9").write_text("latin")  # non-ASCII name
    (root / "a" / "link").symlink_to("b/f.txt")
    (root / "out").symlink_to("/usr/bin")
    os.mkfifo(root / "a" / "fifo")
    os.utime(root / "top", ns=(1, 1_700_000_000_123_456_789))


def _python_scan(root: Path, paths: tuple[str, ...]) -> walk.Scan:
    saved = walk._find_binary
    walk._find_binary = lambda: None  # type: ignore[assignment]
    try:
        return walk.scan(root, paths)
    finally:
        walk._find_binary = saved  # type: ignore[assignment]


@pytest.mark.parametrize("paths", [(".",), ("a", "a/b", "top"), ("a/b/f.txt",), ("*",)])
def test_find_scan_equals_python_scan(tmp_path: Path, paths: tuple[str, ...]) -> None:
    if walk._find_binary() is None:
        pytest.fail("GNU find is required on this machine")
    _tree(tmp_path)
    fast = walk.scan(tmp_path, paths)
    slow = _python_scan(tmp_path, paths)
    assert fast.items == slow.items
    assert fast.skipped == slow.skipped
    assert fast.missing == slow.missing
    assert len({i.rel for i in fast.items}) == len(fast.items)


def test_find_scan_exact_fields(tmp_path: Path) -> None:
    _tree(tmp_path)
    items = {i.rel: i for i in walk.scan(tmp_path).items}
    st = os.lstat(tmp_path / "top")
    top = items["top"]
    assert (top.kind, top.size, top.mtime_ns, top.ino, top.ctime_ns) == (
        "f",
        1,
        1_700_000_000_123_456_789,
        st.st_ino,
        st.st_ctime_ns,
    )
    assert items["a/g"].mode == 0o4751
    assert items["a/link"].target == "b/f.txt"
    assert items["a/link"].size == 0
    assert items["out"].kind == "l"
    assert items["out"].target == "/usr/bin"
    assert items["a"].kind == "d"
    assert items["a"].size == 0
    assert "a/fifo" not in items
    assert walk.scan(tmp_path).skipped == ["a/fifo"]
    order = list(items)
    assert order.index("a") < order.index("a/b") < order.index("a/b/f.txt")
