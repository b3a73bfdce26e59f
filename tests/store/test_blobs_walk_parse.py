"""The column-wise parse of find's listing: exact values, same entries and order as
the Python walk on a venv-shaped tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circlet.store.blobs import walk


def _venv_like(root: Path) -> None:
    """A tree whose bulk sits a few levels down, like a venv's site-packages."""
    site = root / "lib" / "python3.11" / "site-packages"
    for p in range(12):
        pkg = site / f"pkg{p}"
        (pkg / "sub" / "deeper").mkdir(parents=True)
        for f in range(p + 1):
            (pkg / f"m{f}.py").write_text("x" * f)
            (pkg / "sub" / "deeper" / f"d{f}.txt").write_text("d")
        (pkg / "link").symlink_to("m0.py")
    (root / "bin").mkdir()
    (root / "bin" / "python").symlink_to("/usr/bin/python3")
    (root / "lib64").symlink_to("lib")
    (root / "pyvenv.cfg").write_text("home = /usr\n")
    os.chmod(root / "pyvenv.cfg", 0o2640)
    os.mkfifo(site / "pkg3" / "fifo")
    os.utime(site / "pkg0" / "m0.py", ns=(1, 5))  # 5 ns after the epoch


def _python_scan(root: Path, paths: tuple[str, ...]) -> walk.Scan:
    saved = walk._find_binary
    walk._find_binary = lambda: None  # type: ignore[assignment]
    try:
        return walk.scan(root, paths)
    finally:
        walk._find_binary = saved  # type: ignore[assignment]


@pytest.mark.parametrize("chunk", [1, 333, 1 << 20])
@pytest.mark.parametrize("start", [".", "lib"])
def test_find_parse_equals_python_walk(
    tmp_path: Path, start: str, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if walk._find_binary() is None:
        pytest.fail("GNU find is required on this machine")
    _venv_like(tmp_path)
    # Small chunks cut records (and UTF-8 names) at every possible place.
    monkeypatch.setattr(walk, "_CHUNK_BYTES", chunk)
    (tmp_path / "lib" / "caf\xe9-\u00fc\u4e2d").write_text("utf8")
    fast = walk.scan(tmp_path, (start,))
    slow = _python_scan(tmp_path, (start,))
    assert len(fast.items) > 100
    assert fast.items == slow.items
    assert fast.skipped == slow.skipped == ["lib/python3.11/site-packages/pkg3/fifo"]
    by_rel = {i.rel: i for i in fast.items}
    m0 = by_rel["lib/python3.11/site-packages/pkg0/m0.py"]
    assert (m0.mtime_ns, m0.size) == (5, 0)
    assert by_rel["lib/python3.11/site-packages/pkg5/m4.py"].size == 4
    assert by_rel["lib/python3.11/site-packages/pkg5"].size == 0  # not the dir's 4096
    assert by_rel["lib/python3.11/site-packages/pkg5/link"].size == 0
    if start == ".":
        assert by_rel["pyvenv.cfg"].mode == 0o2640
        assert by_rel["lib64"].kind == "l"


def test_times_ns_parses_exactly_and_rejects_other_formats() -> None:
    assert walk._times_ns([]) == []
    assert walk._times_ns(["1700000000.1234567890", "0.0000000050"]) == [
        1_700_000_000_123_456_789,
        5,
    ]
    assert walk._times_ns(["1.1234567891"]) is None  # not a nanosecond clock
    assert walk._times_ns(["1.123"]) is None  # another precision
    assert walk._times_ns(["1"]) is None
