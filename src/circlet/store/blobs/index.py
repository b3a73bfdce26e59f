"""The blob store's index: one SQLite file (WAL) mapping digests to pack locations
and (namespace, key) to tree manifests.

SQLite gives us what a directory of JSON files would have to re-invent: atomic
commits that survive ``kill -9`` (the journal rolls a half-written transaction
back), a busy timeout for concurrent writers, and cheap batched look-ups.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circlet.store.api import TreeEntry

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    digest TEXT PRIMARY KEY,
    pack TEXT NOT NULL,
    offset INTEGER NOT NULL,
    clen INTEGER NOT NULL,
    size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_pack ON chunks(pack);
CREATE TABLE IF NOT EXISTS composites (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    chunks TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trees (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    manifest TEXT NOT NULL,
    root TEXT NOT NULL,
    size INTEGER NOT NULL,
    files INTEGER NOT NULL,
    created_at REAL NOT NULL,
    stored_size INTEGER NOT NULL,
    meta TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX IF NOT EXISTS trees_created ON trees(namespace, created_at);
CREATE TABLE IF NOT EXISTS blob_refs (
    digest TEXT PRIMARY KEY,
    created_at REAL NOT NULL
) WITHOUT ROWID;
"""

# SQLite's default limit on host parameters is 999 on old builds; stay under it.
_BATCH = 900


@dataclass(frozen=True)
class ChunkLoc:
    """Where one compressed chunk lives."""

    pack: str
    offset: int
    clen: int
    size: int


@dataclass(frozen=True)
class NewChunk:
    """A chunk written to a pack by this process, not yet in the index."""

    digest: str
    pack: str
    offset: int
    clen: int
    size: int


def _entry(row: Sequence[Any]) -> TreeEntry:
    return TreeEntry(
        namespace=row[0],
        key=row[1],
        manifest=row[2],
        size=row[4],
        files=row[5],
        created_at=row[6],
        stored_size=row[7],
        meta=json.loads(row[8]),
    )


_TREE_COLS = "namespace, key, manifest, root, size, files, created_at, stored_size, meta"


class Index:
    """Thread-safe access to the index database (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA busy_timeout = 60000")
        with self._lock:
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":  # pragma: no cover - filesystems without mmap
                self._db.execute("PRAGMA journal_mode = DELETE")
            # FULL: the WAL is fsynced at every commit, so a committed tree survives
            # a power loss too, not only a killed process.
            self._db.execute("PRAGMA synchronous = FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                self._db.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    # -- chunks and blobs
    def all_chunk_digests(self) -> set[str]:
        """Every chunk digest known (used to deduplicate a large save in one query)."""
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT digest FROM chunks")}

    def has_chunk(self, digest: str) -> bool:
        """Whether a chunk with this digest is indexed."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM chunks WHERE digest = ?", (digest,)).fetchone()
        return row is not None

    def has_blob(self, digest: str) -> bool:
        """Whether ``digest`` names a chunk or a composite blob."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM chunks WHERE digest = ? UNION ALL "
                "SELECT 1 FROM composites WHERE digest = ? LIMIT 1",
                (digest, digest),
            ).fetchone()
        return row is not None

    def locate(self, digests: Iterable[str]) -> dict[str, list[ChunkLoc]]:
        """Map each blob digest to its chunk locations, in order. Unknown digests are absent."""
        wanted = list(dict.fromkeys(digests))
        found: dict[str, list[ChunkLoc]] = {}
        with self._lock:
            for rows in self._select_in(
                "SELECT digest, pack, offset, clen, size FROM chunks WHERE digest IN", wanted
            ):
                for d, pack, off, clen, size in rows:
                    found[d] = [ChunkLoc(pack, off, clen, size)]
            missing = [d for d in wanted if d not in found]
            recipes: dict[str, list[str]] = {}
            for rows in self._select_in(
                "SELECT digest, chunks FROM composites WHERE digest IN", missing
            ):
                for d, chunks in rows:
                    recipes[d] = json.loads(chunks)
            parts = [c for chunks in recipes.values() for c in chunks]
            part_locs: dict[str, ChunkLoc] = {}
            for rows in self._select_in(
                "SELECT digest, pack, offset, clen, size FROM chunks WHERE digest IN",
                list(dict.fromkeys(parts)),
            ):
                for d, pack, off, clen, size in rows:
                    part_locs[d] = ChunkLoc(pack, off, clen, size)
        for d, chunks in recipes.items():
            if all(c in part_locs for c in chunks):
                found[d] = [part_locs[c] for c in chunks]
        return found

    def _select_in(self, sql: str, values: list[str]) -> Iterator[list[Any]]:
        for start in range(0, len(values), _BATCH):
            batch = values[start : start + _BATCH]
            marks = ",".join("?" * len(batch))
            yield self._db.execute(f"{sql} ({marks})", batch).fetchall()

    # -- trees
    def get_tree(self, namespace: str, key: str) -> TreeEntry | None:
        """The entry stored under exactly ``key``."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_TREE_COLS} FROM trees WHERE namespace = ? AND key = ?",
                (namespace, key),
            ).fetchone()
        return _entry(row) if row else None

    def find_tree(self, namespace: str, prefix: str) -> TreeEntry | None:
        """The newest entry whose key starts with ``prefix``."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_TREE_COLS} FROM trees WHERE namespace = ? "
                "AND substr(key, 1, ?) = ? ORDER BY created_at DESC, key DESC LIMIT 1",
                (namespace, len(prefix), prefix),
            ).fetchone()
        return _entry(row) if row else None

    def newest_manifest(self, namespace: str, root: str) -> str | None:
        """The manifest digest of the newest tree saved in ``namespace`` from ``root``."""
        with self._lock:
            row = self._db.execute(
                "SELECT manifest FROM trees WHERE namespace = ? AND root = ? "
                "ORDER BY created_at DESC LIMIT 1",
                (namespace, root),
            ).fetchone()
        return row[0] if row else None

    def list_trees(self, namespace: str | None = None) -> list[TreeEntry]:
        """Entries of one namespace (or all), oldest first."""
        with self._lock:
            if namespace is None:
                rows = self._db.execute(
                    f"SELECT {_TREE_COLS} FROM trees ORDER BY namespace, created_at, key"
                ).fetchall()
            else:
                rows = self._db.execute(
                    f"SELECT {_TREE_COLS} FROM trees WHERE namespace = ? ORDER BY created_at, key",
                    (namespace,),
                ).fetchall()
        return [_entry(r) for r in rows]

    def delete_tree(self, namespace: str, key: str) -> bool:
        """Forget one entry (its blobs stay until :meth:`prune`)."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM trees WHERE namespace = ? AND key = ?", (namespace, key)
            )
        return cur.rowcount > 0

    # -- commits
    def commit(
        self,
        chunks: Sequence[NewChunk],
        composites: Sequence[tuple[str, int, list[str]]],
        tree: tuple[str, str, str, str, int, int, float, int, dict[str, Any]] | None = None,
        blob_ref: str | None = None,
    ) -> TreeEntry | None:
        """Index new chunks and composites, then the tree or blob reference, in one
        transaction. Returns the existing entry (and indexes nothing) if the tree's
        key was taken meanwhile; None otherwise."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if tree is not None:
                    row = self._db.execute(
                        f"SELECT {_TREE_COLS} FROM trees WHERE namespace = ? AND key = ?",
                        (tree[0], tree[1]),
                    ).fetchone()
                    if row is not None:
                        self._db.execute("ROLLBACK")
                        return _entry(row)
                self._db.executemany(
                    "INSERT OR IGNORE INTO chunks (digest, pack, offset, clen, size) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(c.digest, c.pack, c.offset, c.clen, c.size) for c in chunks],
                )
                self._db.executemany(
                    "INSERT OR IGNORE INTO composites (digest, size, chunks) VALUES (?, ?, ?)",
                    [(d, size, json.dumps(parts)) for d, size, parts in composites],
                )
                if tree is not None:
                    *head, meta = tree
                    self._db.execute(
                        f"INSERT INTO trees ({_TREE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (*head, json.dumps(meta, sort_keys=True)),
                    )
                if blob_ref is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO blob_refs (digest, created_at) VALUES (?, ?)",
                        (blob_ref, time.time()),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return None

    # -- garbage collection (called with the store's exclusive lock held)
    def gc_snapshot(self) -> tuple[list[tuple[str, str, str, float]], list[tuple[str, float]]]:
        """(namespace, key, manifest, created_at) of every tree and (digest, created_at)
        of every pinned raw blob."""
        with self._lock:
            trees = self._db.execute(
                "SELECT namespace, key, manifest, created_at FROM trees"
            ).fetchall()
            refs = self._db.execute("SELECT digest, created_at FROM blob_refs").fetchall()
        return trees, refs

    def composites_of(self, digests: Iterable[str]) -> dict[str, list[str]]:
        """Chunk lists of the composites among ``digests``."""
        out: dict[str, list[str]] = {}
        with self._lock:
            for rows in self._select_in(
                "SELECT digest, chunks FROM composites WHERE digest IN", list(digests)
            ):
                for d, chunks in rows:
                    out[d] = json.loads(chunks)
        return out

    def all_composites(self) -> set[str]:
        """Every composite digest."""
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT digest FROM composites")}

    def all_chunks(self) -> dict[str, ChunkLoc]:
        """Every chunk and its location."""
        with self._lock:
            rows = self._db.execute("SELECT digest, pack, offset, clen, size FROM chunks")
            return {d: ChunkLoc(p, o, c, s) for d, p, o, c, s in rows}

    def apply_gc(
        self,
        drop_trees: Sequence[tuple[str, str]],
        drop_refs: Sequence[str],
        drop_chunks: Sequence[str],
        drop_composites: Sequence[str],
        moved: Sequence[NewChunk],
    ) -> None:
        """Remove what garbage collection found dead and re-point repacked chunks."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "DELETE FROM trees WHERE namespace = ? AND key = ?", drop_trees
                )
                self._db.executemany(
                    "DELETE FROM blob_refs WHERE digest = ?", [(d,) for d in drop_refs]
                )
                self._db.executemany(
                    "DELETE FROM chunks WHERE digest = ?", [(d,) for d in drop_chunks]
                )
                self._db.executemany(
                    "DELETE FROM composites WHERE digest = ?", [(d,) for d in drop_composites]
                )
                self._db.executemany(
                    "UPDATE chunks SET pack = ?, offset = ?, clen = ? WHERE digest = ?",
                    [(c.pack, c.offset, c.clen, c.digest) for c in moved],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
