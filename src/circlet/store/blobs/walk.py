"""Walking the paths of a save: globs, paths relative to or absolute under a root,
and the safety rules (never leave the root, never follow a symlink)."""

from __future__ import annotations

import glob
import operator
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from circlet.store.blobs.manifest import DIR, FILE, SYMLINK, UnsafePathError

_GLOB_CHARS = frozenset("*?[")
_FMT, _REG, _DIR, _LNK = 0o170000, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK
_by_name = operator.attrgetter("name")
_new = tuple.__new__


class Item(NamedTuple):
    """One filesystem entry found by :func:`scan`."""

    rel: str  # POSIX path relative to the root
    kind: str  # FILE, DIR or SYMLINK
    mode: int  # permission bits (& 0o7777)
    mtime_ns: int
    size: int
    ino: int
    ctime_ns: int
    target: str  # symlink target, else ""
    abspath: str


@dataclass
class Scan:
    """What :func:`scan` found: entries in path order, requested paths that did not
    exist, and special files (sockets, fifos, devices) that were left out."""

    root: str
    items: list[Item] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def resolve_root(root: Path) -> Path:
    """The real path of ``root``; ValueError if it is not a directory."""
    real = Path(os.path.realpath(root))
    if not real.is_dir():
        raise NotADirectoryError(f"root {str(root)!r} is not a directory")
    return real


def relative_path(root: Path, path: str) -> str:
    """``path`` (relative to ``root``, or absolute under it) as a normalized relative
    POSIX path; "." for the root itself. UnsafePathError if it leaves the root."""
    if path == "~" or path.startswith("~/"):
        path = os.path.expanduser(path)
    if os.path.isabs(path):
        norm = os.path.normpath(path)
        for base in {str(root), os.path.normpath(os.path.abspath(root))}:
            if norm == base:
                return "."
            if norm.startswith(base.rstrip("/") + "/"):
                return norm[len(base.rstrip("/")) + 1 :]
        raise UnsafePathError(f"path {path!r} is outside the root {str(root)!r}")
    norm = os.path.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise UnsafePathError(f"path {path!r} leads outside the root {str(root)!r}")
    return norm


def _check_ancestors(root: Path, rel: str) -> None:
    """Refuse ``rel`` if one of its parent directories is a symlink leading out of root."""
    parts = rel.split("/")[:-1]
    current = str(root)
    root_prefix = str(root).rstrip("/") + "/"
    for i, part in enumerate(parts):
        current = f"{current}/{part}"
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(current)
            if real != str(root) and not real.startswith(root_prefix):
                link = "/".join(parts[: i + 1])
                raise UnsafePathError(
                    f"path {rel!r} goes through symlink {link!r} that points outside the root"
                )


def expand(root: Path, paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Relative paths to walk (globs expanded) and the literal paths that are missing."""
    found: list[str] = []
    missing: list[str] = []
    for raw in paths:
        rel = relative_path(root, raw)
        if _GLOB_CHARS.intersection(rel):
            matches = sorted(glob.glob(rel, root_dir=root, recursive=True, include_hidden=True))
            if not matches:
                missing.append(raw)
            found.extend(os.path.normpath(m) for m in matches)
            continue
        if rel != "." and not os.path.lexists(root / rel):
            missing.append(raw)
            continue
        found.append(rel)
    for rel in found:
        if rel != ".":
            _check_ancestors(root, rel)
    return found, missing


def scan(root: Path, paths: Sequence[str] = (".",)) -> Scan:
    """Walk ``paths`` under ``root`` without following symlinks.

    Entries come out in path order (parents first; siblings sorted), each path once.
    A symlink, even one pointing outside the root, is recorded as a symlink.
    """
    real_root = resolve_root(root)
    result = Scan(root=str(real_root))
    rels, result.missing = expand(real_root, paths)
    seen: set[str] = set()
    track = len(rels) > 1  # overlapping requests need de-duplication
    items = result.items
    skipped = result.skipped
    root_str = str(real_root)

    def add(rel: str, abspath: str, st: os.stat_result) -> bool:
        mode = st.st_mode
        fmt = mode & _FMT
        if fmt == _REG:
            kind, target, size = FILE, "", st.st_size
        elif fmt == _DIR:
            kind, target, size = DIR, "", 0
        elif fmt == _LNK:
            kind, target, size = SYMLINK, os.readlink(abspath), 0
        else:
            skipped.append(rel)
            return False
        if track:
            seen.add(rel)
        # tuple.__new__ skips NamedTuple's Python-level constructor: this loop
        # runs once per entry and dominates an incremental save.
        items.append(
            _new(
                Item,
                (
                    rel,
                    kind,
                    mode & 0o7777,
                    st.st_mtime_ns,
                    size,
                    st.st_ino,
                    st.st_ctime_ns,
                    target,
                    abspath,
                ),
            )
        )
        return fmt == _DIR

    def walk(prefix: str, abspath: str) -> None:
        with os.scandir(abspath) as it:
            entries = sorted(it, key=_by_name)
        for entry in entries:
            rel = prefix + entry.name
            if track and rel in seen:
                continue
            path = entry.path
            if add(rel, path, entry.stat(follow_symlinks=False)):
                walk(rel + "/", path)

    for rel in sorted(rels, key=lambda r: r.split("/")):
        if rel == ".":
            walk("", root_str)
            continue
        if rel in seen:
            continue
        abspath = f"{root_str}/{rel}"
        try:
            st = os.lstat(abspath)
        except FileNotFoundError:
            result.missing.append(rel)
            continue
        if add(rel, abspath, st):
            walk(rel + "/", abspath)
    if len(rels) > 1:
        # Overlapping requests ("a", "a/b") or globs can interleave; restore order.
        items.sort(key=lambda i: i.rel.split("/"))
    return result
