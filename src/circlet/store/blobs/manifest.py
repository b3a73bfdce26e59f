"""Tree manifests: the list of entries of one saved tree, stored as a blob.

Stored column-wise (one section per field) behind a JSON header line: it
encodes and parses far faster than JSON records, which matters because an
incremental save reads the previous manifest and writes a new one as long.
"""

from __future__ import annotations

import array
import bisect
import itertools
import json
import posixpath
import sys
from dataclasses import dataclass, field
from typing import Any

FORMAT = "circlet-tree/2"

FILE, DIR, SYMLINK = "f", "d", "l"


class UnsafePathError(ValueError):
    """A path that would land outside the tree's root (or is not a plain path)."""


def check_rel_path(path: str, what: str = "path") -> str:
    """Return ``path`` if it is a clean relative POSIX path inside the root, else raise."""
    if not path or path.startswith("/") or "\0" in path:
        raise UnsafePathError(f"{what} {path!r} is absolute or empty")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise UnsafePathError(f"{what} {path!r} is not a normalized path inside the root")
    return path


# The sections of an encoded manifest, in order.
_SECTION_COLUMNS = ("paths", "kinds", "digests", "modes", "mtimes", "sizes", "inos", "ctimes")


def _pack_ints(values: list[int]) -> bytes:
    arr = array.array("q", values)
    if sys.byteorder == "big":  # pragma: no cover - the format is little-endian
        arr.byteswap()
    return arr.tobytes()


def _unpack_ints(raw: bytes | memoryview) -> list[int]:
    arr = array.array("q")
    arr.frombytes(raw)
    if sys.byteorder == "big":  # pragma: no cover
        arr.byteswap()
    return arr.tolist()


def _str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def link_escapes(path: str, target: str) -> bool:
    """Whether symlink ``path`` (relative to the root) pointing at ``target`` resolves
    outside the root (lexically; the link is never followed)."""
    if target.startswith("/"):
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return resolved == ".." or resolved.startswith("../")


@dataclass
class Manifest:
    """Entries, parents before children. ``digests`` holds a file's content digest,
    a symlink's target, or "" for a directory. ``inos``/``ctimes`` let the next save
    from the same root skip re-hashing unchanged files. ``walk``: the paths (relative
    to the root, globs expanded) a save walked, None if the tree does not come from
    a walk; ``skipped``: special files (sockets, fifos, devices) that walk left out;
    ``root_key``: (mode, inode, mtime, ctime) of the root directory before the walk.
    With both, the next save of the same paths from the same root re-stats these
    entries instead of walking again (:mod:`~circlet.store.blobs.rescan`)."""

    root: str = ""
    created_at: float = 0.0
    paths: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    modes: list[int] = field(default_factory=list)
    mtimes: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    inos: list[int] = field(default_factory=list)
    ctimes: list[int] = field(default_factory=list)
    walk: list[str] | None = None
    skipped: list[str] = field(default_factory=list)
    root_key: list[int] | None = None
    # A decoded manifest whose sections :meth:`encode_parts` may reuse for the
    # columns equal to this one's (an incremental save changes a few rows).
    based_on: Manifest | None = field(default=None, repr=False, compare=False)
    _sections: list[memoryview] | None = field(default=None, init=False, repr=False, compare=False)

    def add(
        self,
        path: str,
        kind: str,
        mode: int,
        mtime_ns: int,
        *,
        size: int = 0,
        digest: str = "",
        ino: int = 0,
        ctime_ns: int = 0,
    ) -> None:
        """Append one entry."""
        self.paths.append(path)
        self.kinds.append(kind)
        self.modes.append(mode)
        self.mtimes.append(mtime_ns)
        self.sizes.append(size)
        self.digests.append(digest)
        self.inos.append(ino)
        self.ctimes.append(ctime_ns)

    def __len__(self) -> int:
        return len(self.paths)

    def sort(self) -> None:
        """Order entries by path (parents before children) and drop duplicate paths,
        keeping the last one added."""
        last = {p: i for i, p in enumerate(self.paths)}
        order = sorted(last.values(), key=lambda i: self.paths[i].split("/"))
        for name in ("paths", "kinds", "modes", "mtimes", "sizes", "digests", "inos", "ctimes"):
            column = getattr(self, name)
            setattr(self, name, [column[i] for i in order])

    def file_count(self) -> int:
        """Number of regular files."""
        return self.kinds.count(FILE)

    def content_size(self) -> int:
        """Uncompressed bytes of all regular files."""
        return sum(itertools.compress(self.sizes, map(FILE.__eq__, self.kinds)))

    def file_digests(self) -> set[str]:
        """Distinct content digests referenced."""
        return {d for k, d in zip(self.kinds, self.digests, strict=True) if k == FILE}

    def encode(self) -> bytes:
        """The manifest as bytes: a JSON header line, then one section per column
        (text columns NUL-separated, numbers as little-endian int64 arrays), which
        encodes and parses several times faster than JSON lists."""
        return b"".join(self.encode_parts())

    def encode_parts(self) -> list[bytes | memoryview]:
        """:meth:`encode` in pieces: the header line, then each section. Stored as
        one chunk each, the sections an incremental save leaves alone (paths,
        digests, ...) are deduplicated instead of compressed and written again."""
        base = self.based_on
        old = base._sections if base is not None else None
        sections: list[bytes | memoryview] = []
        for i, name in enumerate(_SECTION_COLUMNS):
            column = getattr(self, name)
            if old is not None and column == getattr(base, name):
                sections.append(old[i])
            elif name == "kinds":
                sections.append("".join(column).encode("ascii"))
            elif name in ("paths", "digests"):
                sections.append("\0".join(column).encode("utf-8", "surrogateescape"))
            else:
                sections.append(_pack_ints(column))
        header = {
            "format": FORMAT,
            "root": self.root,
            "created_at": self.created_at,
            "count": len(self.paths),
            "sections": [len(section) for section in sections],
        }
        if self.walk is not None:
            header["walk"] = self.walk
            header["skipped"] = self.skipped
            if self.root_key is not None:
                header["root_key"] = self.root_key
        return [json.dumps(header).encode() + b"\n", *sections]

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse bytes written by :meth:`encode`; ValueError if they are not a manifest."""
        end = data.find(b"\n")
        try:
            header: dict[str, Any] = json.loads(data[:end]) if end >= 0 else {}
        except ValueError:
            header = {}
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError("blob is not a circlet tree manifest")
        count = int(header["count"])
        # Views, not copies: a manifest is megabytes and is read on every save.
        body = memoryview(data)[end + 1 :]
        sections: list[memoryview] = []
        pos = 0
        for length in header["sections"]:
            sections.append(body[pos : pos + length])
            pos += length
        if len(sections) != 8 or pos != len(body):
            raise ValueError("tree manifest is truncated or damaged")

        def text(raw: memoryview) -> list[str]:
            return str(raw, "utf-8", "surrogateescape").split("\0") if count else []

        man = cls(
            root=str(header.get("root", "")),
            created_at=float(header.get("created_at", 0.0)),
            paths=text(sections[0]),
            kinds=list(str(sections[1], "ascii")),
            digests=text(sections[2]),
            modes=_unpack_ints(sections[3]),
            mtimes=_unpack_ints(sections[4]),
            sizes=_unpack_ints(sections[5]),
            inos=_unpack_ints(sections[6]),
            ctimes=_unpack_ints(sections[7]),
        )
        walk, skipped = header.get("walk"), header.get("skipped", [])
        if _str_list(walk) and _str_list(skipped):
            man.walk, man.skipped = walk, skipped
            root_key = header.get("root_key")
            if isinstance(root_key, list) and all(type(v) is int for v in root_key):
                man.root_key = root_key
        man._sections = sections
        columns = (
            man.paths,
            man.kinds,
            man.modes,
            man.mtimes,
            man.sizes,
            man.digests,
            man.inos,
            man.ctimes,
        )
        if any(len(c) != count for c in columns):
            raise ValueError("tree manifest columns differ in length")
        return man

    def validate(self) -> None:
        """Refuse manifests whose entries could write outside a restore target:
        unsafe paths, unknown kinds, or an entry below a symlink entry."""
        links: set[str] = set()
        for path, kind in zip(self.paths, self.kinds, strict=True):
            check_rel_path(path, "manifest entry")
            if kind not in (FILE, DIR, SYMLINK):
                raise ValueError(f"manifest entry {path!r} has unknown type {kind!r}")
            if kind == SYMLINK:
                links.add(path)
        if links:
            # A descendant "L/..." of link L sorts right at bisect(L + "/").
            ordered = sorted(self.paths)
            for link in links:
                at = bisect.bisect_left(ordered, link + "/")
                if at < len(ordered) and ordered[at].startswith(link + "/"):
                    raise UnsafePathError(
                        f"manifest entry {ordered[at]!r} lies below symlink {link!r}"
                    )
