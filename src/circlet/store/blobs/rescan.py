"""The incremental walk: re-stat what the previous save from the same root found
instead of walking the tree again.

A walk lists every directory and stats every entry; with GNU find that is most
of an incremental save. The previous manifest already lists every entry with its
lstat data (type and mode, inode, size, mtime, ctime), so this:

1. stats each previous entry by its path relative to the root (one ``lstat``
   per entry, keeping only the compared fields; no directory is opened or read);
2. compares those keys with the manifest's, column-wise in C: unchanged entries
   keep their manifest row, digest included;
3. lists again only the directories whose own key changed. Creating, removing or
   renaming an entry updates its directory's mtime and ctime (POSIX), and no
   call sets a ctime back, so an unchanged directory holds the same names (the
   root's key is in the manifest's header: it has no row);
4. walks what is new (in Python), drops what is gone (with everything below a
   directory that is gone or no longer a directory), and hands the files whose
   key changed to the hashing.

Entries whose ctime is within a second of the previous save are treated as
changed (a change right after they were read may have kept the same timestamps),
as :func:`~circlet.store.blobs.writer.known_digests` does for files.

Anything unexpected (an unreadable directory, a previous manifest from other
paths or with unknown kinds) returns None: the caller then walks the whole tree,
which gives the exact result or error of a first save.
"""

from __future__ import annotations

import errno
import itertools
import operator
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from circlet.store.blobs.manifest import DIR, FILE, SYMLINK, Manifest
from circlet.store.blobs.walk import Scan, walk_python

_TYPE_BITS = {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, SYMLINK: stat.S_IFLNK}
_KIND_OF = {bits: kind for kind, bits in _TYPE_BITS.items()}
# The key of a previous entry whose path no longer resolves (equals no other key).
_GONE = (-1, -1, -1, -1, -1)
_GONE_ERRNOS = frozenset((errno.ENOENT, errno.ENOTDIR, errno.ELOOP))
# What is compared: (type + mode bits, inode, size, mtime, ctime) of each entry.
Key = tuple[int, int, int, int, int]
_KEY = operator.attrgetter("st_mode", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
_SIZE = operator.itemgetter(2)
# Past this many vanished directories, find what lies below them with a set of
# ancestors instead of one startswith() per entry and directory.
_PREFIX_SCAN_LIMIT = 64


@dataclass
class Rescan:
    """The new tree: manifest columns (``columns``; its root and time are unused),
    the rows whose file content must be read (digest "" until then), special files
    left out, and how many directories were listed."""

    columns: Manifest
    todo: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    listed: int = 0


class _FallbackError(Exception):
    """The incremental walk cannot decide: walk the whole tree instead."""


def root_key(root: str) -> list[int]:
    """What :func:`rescan` compares of the root directory itself (taken before
    walking: a change during the walk then shows at the next save)."""
    st = os.lstat(root)
    return [st.st_mode, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def rescan(
    root: str, rels: Sequence[str], previous: Manifest, root_now: list[int] | None = None
) -> Rescan | None:
    """The entries under ``rels`` (as :func:`~circlet.store.blobs.walk.expand`
    returned them) of the real root ``root``, from ``previous`` (the newest save
    from this root) and the changes since; None if a full walk is needed.
    ``root_now``: :func:`root_key` of ``root`` now (None: list the root again)."""
    if previous.walk is None or previous.walk != list(rels) or previous.root != root:
        return None
    # Every start other than the root must be a row: its parent is not listed.
    starts = set(rels) - {"."}
    if starts and not starts.issubset(previous.paths):
        return None
    try:
        return _rescan(root, rels, previous, root_now)
    except _FallbackError:
        return None


def _rescan(root: str, rels: Sequence[str], prev: Manifest, root_now: list[int] | None) -> Rescan:
    return _rescan_stats(root, rels, prev, _stat_all(root, prev.paths), root_now)


def _rescan_stats(
    root: str, rels: Sequence[str], prev: Manifest, keys: list[Key], root_now: list[int] | None
) -> Rescan:
    paths, kinds = prev.paths, prev.kinds
    prefix = root.rstrip("/") + "/"

    # -- 1. which rows changed: whole-column operations, no Python code per entry
    try:
        old_modes = map(operator.or_, map(_TYPE_BITS.__getitem__, kinds), prev.modes)
        # The manifest says size 0 for a directory or symlink: theirs is not compared
        # (any change of a directory's size changes its times too).
        old_sizes = map(
            operator.add,
            prev.sizes,
            map(operator.mul, map(_SIZE, keys), map(FILE.__ne__, kinds)),
        )
        old_keys = zip(old_modes, prev.inos, old_sizes, prev.mtimes, prev.ctimes, strict=True)
        differs = map(operator.ne, keys, old_keys)
        changed = list(itertools.compress(itertools.count(), differs))
    except KeyError:  # an unknown kind
        raise _FallbackError from None
    racy_ns = int((prev.created_at - 1.0) * 1e9)
    if prev.ctimes and max(prev.ctimes) >= racy_ns:
        racy = map(operator.le, itertools.repeat(racy_ns), prev.ctimes)
        changed = sorted({*changed, *itertools.compress(itertools.count(), racy)})

    # -- 2. sort the changed rows out
    removed: set[int] = set()
    gone_dirs: list[str] = []  # previous directories that are not directories now
    new_starts: list[str] = []  # changed type: walked again as new entries
    kept: list[int] = []
    relist: list[str] = []  # directories to list again ("" for the root)
    for i in changed:
        key = keys[i]
        kind = kinds[i]
        if key is _GONE or _KIND_OF.get(stat.S_IFMT(key[0])) != kind:
            removed.add(i)
            if kind == DIR:
                gone_dirs.append(paths[i])
            if key is not _GONE:
                new_starts.append(paths[i])
            continue
        kept.append(i)
        if kind == DIR:
            relist.append(paths[i])
    # The root as any directory: listed if its key changed or is racily clean.
    if "." in rels and (root_now is None or root_now != prev.root_key or root_now[3] >= racy_ns):
        relist.append("")

    # -- 3. list the changed directories
    added: list[str] = []
    if relist:
        children = _children(paths, relist)
        for rel in relist:
            try:
                names = os.listdir(prefix + rel if rel else root)
            except OSError:
                raise _FallbackError from None
            before = children.get(rel, {})
            base = rel + "/" if rel else ""
            new = [name for name in names if name not in before]
            added.extend(base + name for name in new)
            # (A row whose path did not resolve but is listed was replaced meanwhile.)
            added.extend(base + name for name in names if before.get(name, -1) in removed)
            if len(names) - len(new) != len(before):  # some names are gone
                now = set(names)
                for name, i in before.items():
                    if name not in now and i not in removed:
                        removed.add(i)
                        if kinds[i] == DIR:
                            gone_dirs.append(paths[i])

    # -- 4. drop everything below what is gone
    if gone_dirs:
        under = _below(paths, gone_dirs)
        removed.update(under)
        cut = tuple(d + "/" for d in gone_dirs)
        kept = [i for i in kept if i not in removed]
        added = [a for a in added if not a.startswith(cut)]
        new_starts = [a for a in new_starts if not a.startswith(cut)]
    else:
        cut = ()

    # -- 5. the new columns: previous rows, patched, minus the removed ones
    out = Manifest(
        paths=list(paths),
        kinds=list(kinds),
        modes=list(prev.modes),
        mtimes=list(prev.mtimes),
        sizes=list(prev.sizes),
        digests=list(prev.digests),
        inos=list(prev.inos),
        ctimes=list(prev.ctimes),
        based_on=prev,
    )
    todo: set[int] = set()
    for i in kept:
        mode, out.inos[i], size, out.mtimes[i], out.ctimes[i] = keys[i]
        kind = kinds[i]
        if kind == FILE:
            out.modes[i] = mode & 0o7777
            out.sizes[i] = size
            out.digests[i] = ""
            todo.add(i)
        elif kind == DIR:
            out.modes[i] = mode & 0o7777
        else:
            try:
                out.digests[i] = os.readlink(prefix + paths[i])
            except OSError:
                raise _FallbackError from None
    if removed:
        every = range(len(paths))
        keep = list(itertools.compress(every, map(operator.not_, map(removed.__contains__, every))))
        for name in ("paths", "kinds", "modes", "mtimes", "sizes", "digests", "inos", "ctimes"):
            column = getattr(out, name)
            setattr(out, name, list(map(column.__getitem__, keep)))
        rows = list(itertools.compress(itertools.count(), map(todo.__contains__, keep)))
    else:
        rows = sorted(todo)

    # -- 6. walk what is new
    listed = set(relist)
    skipped = [
        s for s in prev.skipped if s.rpartition("/")[0] not in listed and not s.startswith(cut)
    ]
    if added or new_starts:
        fresh = Scan(root=root)
        walk_python(fresh, sorted(set(added + new_starts), key=lambda r: r.split("/")))
        skipped.extend(fresh.skipped)
        for item in fresh.items:
            if item.kind == FILE:
                rows.append(len(out.paths))
            out.add(
                item.rel,
                item.kind,
                item.mode,
                item.mtime_ns,
                size=item.size,
                digest=item.target,
                ino=item.ino,
                ctime_ns=item.ctime_ns,
            )
    return Rescan(columns=out, todo=rows, skipped=skipped, listed=len(relist))


def _stat_all(root: str, paths: list[str]) -> list[Key]:
    """The key of every path (relative to ``root``, not followed if a symlink),
    _GONE where it does not resolve. Only the keys are kept: a whole stat result
    per entry is three times the memory, paid for in page faults."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _FallbackError from exc
    try:
        lstat = os.lstat
        key = _KEY
        out: list[Key] = []
        rest = iter(paths)
        while len(out) < len(paths):
            try:
                # extend() keeps what came before an error, and the failing path
                # was taken from ``rest``: go on after it. (A generator, not
                # map(partial(...)): partial copies its keywords at every call.)
                out.extend(key(lstat(path, dir_fd=fd)) for path in rest)
            except OSError as exc:
                if exc.errno not in _GONE_ERRNOS:
                    raise _FallbackError from exc
                out.append(_GONE)
        return out
    finally:
        os.close(fd)


def _children(paths: list[str], dirs: Iterable[str]) -> dict[str, dict[str, int]]:
    """name -> row of the rows directly in each of ``dirs`` ("" for the root)."""
    wanted = set(dirs)
    out: dict[str, dict[str, int]] = {}
    if "" in wanted:  # the rows without a "/"
        wanted.discard("")
        top = map(operator.not_, map(str.__contains__, paths, itertools.repeat("/")))
        out[""] = {paths[i]: i for i in itertools.compress(itertools.count(), top)}
    if not wanted:
        return out
    # Candidates first (one C-level test per row), then their parents.
    if len(wanted) <= _PREFIX_SCAN_LIMIT:
        cut = tuple(d + "/" for d in wanted)
        rows: Iterable[int] = itertools.compress(
            itertools.count(), map(str.startswith, paths, itertools.repeat(cut))
        )
    else:
        rows = range(len(paths))
    for i in rows:
        parent, _, name = paths[i].rpartition("/")
        if parent in wanted:
            out.setdefault(parent, {})[name] = i
    return out


def _below(paths: list[str], dirs: list[str]) -> list[int]:
    """Rows strictly below any of ``dirs``."""
    if len(dirs) <= _PREFIX_SCAN_LIMIT:
        cut = tuple(d + "/" for d in dirs)
        return list(
            itertools.compress(itertools.count(), map(str.startswith, paths, itertools.repeat(cut)))
        )
    gone = set(dirs)
    out = []
    for i, path in enumerate(paths):
        parent = path.rpartition("/")[0]
        while parent:
            if parent in gone:
                out.append(i)
                break
            parent = parent.rpartition("/")[0]
    return out
