"""Shared by the blob-store tests: a tree with every kind of entry, and a snapshot
of everything a restore must keep."""

from __future__ import annotations

import os
import stat
from pathlib import Path

MTIME = 1_600_000_000_123_456_789


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a restore must keep: type, mode, mtime (ns), bytes / link target."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(full), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                out[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_mtime_ns, full.read_bytes())
    return out


def make_tree(root: Path) -> Path:
    """A small tree with every kind of entry a cache holds."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "mod.py").write_text("print('hi')\n" * 50)
    (root / "pkg" / "same.py").write_text("print('hi')\n" * 50)  # duplicate content
    (root / "pkg" / "sub" / "data.bin").write_bytes(os.urandom(70_000))
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "secret").write_text("s")
    (root / "secret").chmod(0o600)
    (root / "readonly.txt").write_text("ro")
    (root / "readonly.txt").chmod(0o444)
    (root / "empty" / "deeper").mkdir(parents=True)
    (root / "private").mkdir(mode=0o700)
    (root / "private").chmod(0o700)
    (root / "locked").mkdir()
    (root / "locked" / "inside.txt").write_text("in a read-only dir")
    os.symlink("pkg/mod.py", root / "link-inside")
    os.symlink("/usr/bin/python3", root / "bin" / "python")  # outside the root, like venvs
    os.symlink("does-not-exist", root / "dangling")
    os.symlink("pkg", root / "dirlink")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, ns=(MTIME, MTIME), follow_symlinks=False)
    (root / "locked").chmod(0o555)
    os.utime(root / "locked", ns=(MTIME, MTIME))
    return root
