"""Walking the paths of a save: globs, paths relative to or absolute under a root,
and the safety rules (never leave the root, never follow a symlink)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import itertools
import operator
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from circlet.store.blobs.manifest import DIR, FILE, SYMLINK, UnsafePathError

_GLOB_CHARS = frozenset("*?[")
_FMT, _REG, _DIR, _LNK = 0o170000, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK
_new = tuple.__new__
# One record per entry, fields NUL-terminated: path, type, mode, size, mtime, inode,
# ctime, link target. %T@/%C@ print seconds with 10 fractional digits (exact ns).
_FIND_FORMAT = "%p\\0%y\\0%m\\0%s\\0%T@\\0%i\\0%C@\\0%l\\0"
_FIND_FIELDS = 8
_KINDS = frozenset((FILE, DIR, SYMLINK))  # find's %y letters are the manifest's kinds
_TIMES = re.compile(r"(?:-?[0-9]+\.[0-9]{9}0\0)*")  # NUL-terminated %T@ values


class Item(NamedTuple):
    """One filesystem entry found by :func:`scan`."""

    rel: str  # POSIX path relative to the root
    kind: str  # FILE, DIR or SYMLINK
    mode: int  # permission bits (& 0o7777); 0o777 for a symlink
    mtime_ns: int
    size: int
    ino: int
    ctime_ns: int
    target: str  # symlink target, else ""
    abspath: str


@dataclass
class Scan:
    """What :func:`scan` found: entries in path order, requested paths that did not
    exist, and special files (sockets, fifos, devices) that were left out.

    ``incremental``: the save stat'ed the previous save's entries again instead of
    walking (:mod:`~circlet.store.blobs.rescan`); ``items`` is then empty and
    ``listed`` counts the directories it had to list again (the changed ones)."""

    root: str
    items: list[Item] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    incremental: bool = False
    listed: int = 0


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

    Entries come out parents first (siblings in directory order), each path once.
    A symlink, even one pointing outside the root, is recorded as a symlink.
    """
    real_root = resolve_root(root)
    rels, missing = expand(real_root, paths)
    return scan_expanded(real_root, rels, missing)


def scan_expanded(real_root: Path, rels: Sequence[str], missing: Sequence[str]) -> Scan:
    """:func:`scan` of what :func:`expand` returned for the real root ``real_root``."""
    result = Scan(root=str(real_root), missing=list(missing))
    if rels and _find_scan(result, list(rels)):
        return result
    walk_python(result, rels)
    return result


def walk_python(result: Scan, rels: Sequence[str]) -> None:
    """Add the entries at and under ``rels`` (relative to ``result.root``, which is
    not an entry itself) to ``result`` with one lstat per entry in Python; a start
    that does not exist goes to ``result.missing``."""
    seen: set[str] = set()
    track = len(rels) > 1  # overlapping requests need de-duplication
    items = result.items
    skipped = result.skipped
    root_str = result.root

    def add(rel: str, abspath: str, st: os.stat_result) -> bool:
        mode = st.st_mode
        fmt = mode & _FMT
        if fmt == _REG:
            kind, target, size = FILE, "", st.st_size
        elif fmt == _DIR:
            kind, target, size = DIR, "", 0
        elif fmt == _LNK:
            # A symlink's own mode means nothing on Linux: always 0o777.
            kind, target, size = SYMLINK, os.readlink(abspath), 0
            mode = 0o777
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
        # Directory order, not sorted: DFS already puts parents first, and an
        # incremental save spends most of its time in this loop.
        with os.scandir(abspath) as it:
            entries = list(it)
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


@functools.cache
def _find_binary() -> str | None:
    """GNU find, or None (then the walk happens in Python)."""
    path = shutil.which("find")
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, check=False).stdout
    except OSError:
        return None
    return path if b"GNU findutils" in out else None


def _find_scan(result: Scan, rels: list[str]) -> bool:
    """Fill ``result`` from one GNU ``find -P -printf`` run: the lstat of every
    entry happens in C (in another process, on another core) instead of one
    Python call per entry, which dominated an incremental save. False (nothing
    filled) if find is missing or reports any error (a vanished or unreadable
    entry): the Python walk then gives the exact same result or exception."""
    find = _find_binary()
    if find is None:
        return False
    root_str = result.root
    prefix = root_str.rstrip("/") + "/"
    # Deepest-last order and de-duplication are applied below for overlapping starts.
    starts = [root_str if rel == "." else prefix + rel for rel in rels]
    items: list[Item] = []
    skipped: list[str] = []
    # Chunks are parsed while find still walks the rest (on the other core).
    chunks = _find_chunks(find, starts)
    try:
        for fields in chunks:
            chunk = _parse_records(fields, root_str, prefix, skipped)
            if chunk is None:
                return False
            items.extend(chunk)
    except _FindFailedError:
        return False
    finally:
        chunks.close()  # on an early return: stop find now
    result.skipped.extend(skipped)
    if len(rels) > 1:
        # Overlapping starts ("a", "a/b") list entries twice: keep the first of each.
        unique = {item.rel: item for item in reversed(items)}
        items = sorted(unique.values(), key=lambda i: i.rel.split("/"))
    result.items = items
    return True


def _times_ns(raw: list[str]) -> list[int] | None:
    """find's ``%T@`` values ("SECONDS.FRACTION", 10 digits whose last is always 0
    for a nanosecond clock) as integer nanoseconds, or None if one is not so.
    Whole-column string operations and ``map(int)`` run in C: a per-value Python
    expression cost as much as the rest of the parse."""
    if not raw:
        return []
    joined = "\0".join(raw) + "\0"
    if _TIMES.fullmatch(joined) is None:
        return None
    # Validated: each "0\0" is the last digit of exactly one value.
    digits = joined.replace(".", "").replace("0\0", "\0").split("\0")
    digits.pop()  # after the last terminator
    return list(map(int, digits))


def _parse_records(
    fields: list[str], root_str: str, prefix: str, skipped: list[str]
) -> list[Item] | None:
    """Items of complete find records (``_FIND_FIELDS`` fields each); special files
    go to ``skipped``. None if a value is not in the expected format."""
    paths = fields[0::_FIND_FIELDS]
    kinds = fields[1::_FIND_FIELDS]
    if paths and paths[0] == root_str:  # the root itself is not an entry
        del fields[:_FIND_FIELDS]
        paths, kinds = paths[1:], kinds[1:]
    mtimes_raw = fields[4::_FIND_FIELDS]
    ctimes_raw = fields[6::_FIND_FIELDS]
    if not _KINDS.issuperset(kinds):
        # Sockets, fifos, devices: skipped, as in the Python walk.
        keep = [i for i, k in enumerate(kinds) if k in _KINDS]
        skipped.extend(paths[i][len(prefix) :] for i, k in enumerate(kinds) if k not in _KINDS)
        rows = [fields[i * _FIND_FIELDS : (i + 1) * _FIND_FIELDS] for i in keep]
        fields = [f for row in rows for f in row]
        paths = fields[0::_FIND_FIELDS]
        kinds = fields[1::_FIND_FIELDS]
        mtimes_raw = fields[4::_FIND_FIELDS]
        ctimes_raw = fields[6::_FIND_FIELDS]
    cut = len(prefix)
    # Whole-column map() calls run in C: a Python expression per entry and column
    # was most of the parse, which runs on every save.
    rel_paths = list(map(operator.itemgetter(slice(cut, None)), paths))
    # %m prints the permission bits only (<= 0o7777).
    modes = list(map(int, fields[2::_FIND_FIELDS], itertools.repeat(8, len(paths))))
    # find prints a directory's or symlink's own size; the manifest says 0 (int * bool).
    sizes = list(map(operator.mul, map(int, fields[3::_FIND_FIELDS]), map(FILE.__eq__, kinds)))
    mtimes = _times_ns(mtimes_raw)
    ctimes = _times_ns(ctimes_raw)
    if mtimes is None or ctimes is None:
        return None
    inos = list(map(int, fields[5::_FIND_FIELDS]))
    targets = fields[7::_FIND_FIELDS]
    make = functools.partial(_new, Item)
    return list(
        map(
            make,
            zip(rel_paths, kinds, modes, mtimes, sizes, inos, ctimes, targets, paths, strict=True),
        )
    )


class _FindFailedError(Exception):
    """find could not run, reported an error or printed a truncated record."""


# Parse find's output in pieces of about this size while it keeps walking; the
# pipe is enlarged so find does not wait for the parse in between.
_CHUNK_BYTES = 256 << 10
_PIPE_BYTES = 1 << 20


def _find_chunks(find: str, starts: Sequence[str]) -> Generator[list[str], None, None]:
    """The ``-printf`` listing of ``starts`` as lists of fields, each holding
    complete records; _FindFailedError (after or instead of some lists) if find
    failed. Consumers must discard everything on that error."""
    carry: list[str] = []  # fields of a record cut by a chunk boundary
    pending = b""
    try:
        # stderr is not needed: any error means falling back to the Python walk.
        with subprocess.Popen(
            [find, "-P", *starts, "-printf", _FIND_FORMAT],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")},
        ) as proc:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            with contextlib.suppress(OSError):  # only a speed-up
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
            while data := os.read(fd, _PIPE_BYTES):  # the GIL is released meanwhile
                pending += data
                if len(pending) < _CHUNK_BYTES:
                    continue
                cut = pending.rfind(b"\0") + 1  # NUL never occurs inside a UTF-8 char
                fields = carry + pending[:cut].decode("utf-8", "surrogateescape").split("\0")
                fields.pop()  # after the last terminator
                pending = pending[cut:]
                whole = len(fields) - len(fields) % _FIND_FIELDS
                carry = fields[whole:]
                del fields[whole:]
                yield fields
    except OSError as exc:
        raise _FindFailedError from exc
    if proc.returncode != 0 or (pending and not pending.endswith(b"\0")):
        raise _FindFailedError
    fields = carry + pending.decode("utf-8", "surrogateescape").split("\0")
    fields.pop()  # after the last terminator ("" if there was no output left)
    if len(fields) % _FIND_FIELDS:
        raise _FindFailedError
    yield fields
