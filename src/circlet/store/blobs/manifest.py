"""Tree manifests: the list of entries of one saved tree, stored as a blob.

Stored as column-wise JSON (one list per field): it encodes and parses faster
than a list of records, which matters because an incremental save reads the
previous manifest and writes a new one of the same length.
"""

from __future__ import annotations

import bisect
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

FORMAT = "circlet-tree/1"

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


def link_escapes(path: str, target: str) -> bool:
    """Whether symlink ``path`` (relative to the root) pointing at ``target`` resolves
    outside the root (lexically; the link is never followed)."""
    if target.startswith("/"):
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return resolved == ".." or resolved.startswith("../")


@dataclass
class Manifest:
    """Entries in path order. ``digests`` holds a file's content digest, a symlink's
    target, or "" for a directory. ``inos``/``ctimes`` let the next save from the
    same root skip re-hashing unchanged files."""

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
        return sum(s for k, s in zip(self.kinds, self.sizes, strict=True) if k == FILE)

    def file_digests(self) -> set[str]:
        """Distinct content digests referenced."""
        return {d for k, d in zip(self.kinds, self.digests, strict=True) if k == FILE}

    def encode(self) -> bytes:
        """The manifest as compact JSON bytes."""
        doc = {
            "format": FORMAT,
            "root": self.root,
            "created_at": self.created_at,
            "paths": self.paths,
            "kinds": "".join(self.kinds),
            "modes": self.modes,
            "mtimes": self.mtimes,
            "sizes": self.sizes,
            "digests": self.digests,
            "inos": self.inos,
            "ctimes": self.ctimes,
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse bytes written by :meth:`encode`; ValueError if they are not a manifest."""
        try:
            doc: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"tree manifest is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("blob is not a circlet tree manifest")
        man = cls(
            root=str(doc.get("root", "")),
            created_at=float(doc.get("created_at", 0.0)),
            paths=doc["paths"],
            kinds=list(doc["kinds"]),
            modes=doc["modes"],
            mtimes=doc["mtimes"],
            sizes=doc["sizes"],
            digests=doc["digests"],
            inos=doc["inos"],
            ctimes=doc["ctimes"],
        )
        n = len(man.paths)
        columns = (man.kinds, man.modes, man.mtimes, man.sizes, man.digests, man.inos, man.ctimes)
        if any(len(c) != n for c in columns):
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
