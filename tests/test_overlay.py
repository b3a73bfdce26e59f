"""circlet.overlay: real overlay mounts (the tests run as root with overlayfs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circlet import overlay


def test_this_machine_can_overlay() -> None:
    assert overlay.available()


def test_mount_is_copy_on_write_and_release_detaches(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "sub").mkdir(parents=True)
    (lower / "sub" / "f").write_text("stored")
    os.chmod(lower, 0o750)
    os.utime(lower, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    area = overlay.CowArea(tmp_path / "scratch")
    target = tmp_path / "job" / "out"
    area.mount(lower, target)

    assert overlay.mounts_under(tmp_path) == [target]
    assert overlay.lower_dirs_in_use() >= {str(lower)}
    st = target.stat()
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o750, 1_600_000_000_000_000_000)
    (target / "sub" / "f").write_text("changed by the job")
    (target / "new").write_text("x")
    assert (lower / "sub" / "f").read_text() == "stored"
    assert not (lower / "new").exists()

    area.release()
    assert overlay.mounts_under(tmp_path) == []
    assert not (tmp_path / "scratch").exists()
    assert target.is_dir()
    assert list(target.iterdir()) == []


def test_release_from_undoes_only_later_mounts(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    area = overlay.CowArea(tmp_path / "scratch")
    area.mount(lower, tmp_path / "a")
    area.mount(lower, tmp_path / "b")
    area.release_from(1)
    assert overlay.mounts_under(tmp_path) == [tmp_path / "a"]
    assert overlay.unmount_under(tmp_path) == 1
    assert overlay.mounts_under(tmp_path) == []


def test_unsafe_option_characters_are_refused(tmp_path: Path) -> None:
    lower = tmp_path / "low,er"
    lower.mkdir()
    with pytest.raises(OSError, match="holds"):
        overlay.mount_overlay(lower, tmp_path / "t", tmp_path / "s")


def test_fresh_targets_and_the_off_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert overlay.is_fresh(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert overlay.is_fresh(tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert not overlay.is_fresh(tmp_path / "full")
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    assert not overlay.is_fresh(tmp_path / "link")
    monkeypatch.setenv("CIRCLET_CACHE_COW", "off")
    assert not overlay.available()


def test_mountinfo_escapes_are_decoded() -> None:
    assert overlay._unescape("/a\\040b\\134c") == "/a b\\c"
    assert overlay._unescape("/plain") == "/plain"
