"""The blob API for runners: caches, workspaces and artifacts over HTTP.

Uploads are resumable and checksummed: a runner ``PATCH``es bytes at an
offset (``HEAD`` tells how many the server has), then asks to commit the
upload as a blob or as a tree archive; the server checks the BLAKE3 digest of
what it received against the one in the URL before anything is stored.
Downloads are files the server exports once per content (a blob, or a tree as
a zstd tar) and serves with ``Range`` support, their BLAKE3 in
``X-Circlet-Blake3``, so a client resumes a broken download and verifies it.

Every request names the job it serves (``X-Circlet-Job``); the job must be
running on the calling runner, and trees are limited to that job's project
caches and its workflow's workspace.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

import blake3
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel

from circlet.cluster.store_base import RefusedError
from circlet.store.api import BlobStore, TreeEntry, iter_chunks

DIGEST = re.compile(r"^[0-9a-f]{64}$")
EXPORT_MAX_AGE = 3600.0  # seconds an exported file is kept for resumed downloads
UPLOAD_MAX_AGE = 24 * 3600.0  # seconds a partial upload waits for its rest
HASH_HEADER = "X-Circlet-Blake3"
OFFSET_HEADER = "Upload-Offset"
JOB_HEADER = "X-Circlet-Job"


class ChecksumError(ValueError):
    """An upload whose bytes do not hash to the digest it claimed."""


def file_blake3(path: Path) -> str:
    """The BLAKE3 hex digest of a file."""
    hasher = blake3.blake3()
    with path.open("rb") as fh:
        for chunk in iter_chunks(fh):
            hasher.update(chunk)
    return str(hasher.hexdigest())


class _HashingWriter:
    """A write-only file that hashes what passes through."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hasher = blake3.blake3()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


class Transfers:
    """Partial uploads and exported downloads on the server's disk."""

    def __init__(self, blobs: BlobStore, work_dir: Path) -> None:
        self.blobs = blobs
        self.uploads = Path(work_dir) / "uploads"
        self.exports = Path(work_dir) / "exports"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.exports.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._swept = 0.0

    # -- uploads
    def part(self, runner_id: str, digest: str) -> Path:
        return self.uploads / f"{runner_id}-{digest}.part"

    def offset(self, runner_id: str, digest: str) -> int:
        """Bytes received so far."""
        try:
            return self.part(runner_id, digest).stat().st_size
        except FileNotFoundError:
            return 0

    def verified(self, runner_id: str, digest: str) -> Path:
        """The complete upload, if its content hashes to ``digest`` (else it is dropped)."""
        path = self.part(runner_id, digest)
        if not path.exists():
            raise FileNotFoundError(digest)
        actual = file_blake3(path)
        if actual != digest:
            path.unlink(missing_ok=True)
            raise ChecksumError(f"upload checksum mismatch: expected {digest}, got {actual}")
        return path

    def import_tree(
        self, namespace: str, key: str, path: Path, meta: dict[str, Any] | None
    ) -> TreeEntry:
        """Store the uploaded tar(.zst) as tree ``key``."""
        from circlet.store.archive import extract_archive, import_tree
        from circlet.store.blobs import LocalBlobStore

        with path.open("rb") as fh:
            if isinstance(self.blobs, LocalBlobStore):
                return import_tree(self.blobs, namespace, key, fh, meta=meta)
            with tempfile.TemporaryDirectory(dir=self.uploads) as tmp:
                extract_archive(fh, Path(tmp))
                return self.blobs.put_tree(namespace, key, Path(tmp), meta=meta)

    # -- downloads
    def _export(self, name: str, write: Callable[[BinaryIO], None]) -> tuple[Path, str]:
        target = self.exports / name
        sidecar = target.with_name(name + ".b3")
        with self._lock:
            if target.exists() and sidecar.exists():
                os.utime(target)  # in use: keep it past the sweep
                return target, sidecar.read_text()
        fd, tmp = tempfile.mkstemp(dir=self.exports, prefix=".export-")
        try:
            with os.fdopen(fd, "wb") as out:
                hashing = _HashingWriter(out)
                write(hashing)  # type: ignore[arg-type]
            digest = str(hashing.hasher.hexdigest())
            with self._lock:
                sidecar.write_text(digest)
                os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.sweep()
        return target, digest

    def export_blob(self, digest: str) -> tuple[Path, str]:
        """A file holding blob ``digest`` (KeyError if unknown) and its BLAKE3."""

        def write(out: BinaryIO) -> None:
            with self.blobs.open_blob(digest) as fh:
                shutil.copyfileobj(fh, out, 1 << 20)

        return self._export(f"blob-{digest}", write)

    def export_tree(self, entry: TreeEntry) -> tuple[Path, str]:
        """A zstd tar of ``entry`` and its BLAKE3."""
        from circlet.store.archive import create_archive, export_tree
        from circlet.store.blobs import LocalBlobStore

        def write(out: BinaryIO) -> None:
            if isinstance(self.blobs, LocalBlobStore):
                export_tree(self.blobs, entry, out)
                return
            with tempfile.TemporaryDirectory(dir=self.exports) as tmp:
                self.blobs.restore_tree(entry, Path(tmp))
                create_archive(Path(tmp), out)

        return self._export(f"tree-{entry.manifest}.tar.zst", write)

    def sweep(self) -> None:
        """Drop old exports and abandoned uploads (at most every few minutes)."""
        now = time.time()
        if now - self._swept < 300:
            return
        self._swept = now
        for folder, age in ((self.exports, EXPORT_MAX_AGE), (self.uploads, UPLOAD_MAX_AGE)):
            for path in folder.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if now - path.stat().st_mtime > age:
                        path.unlink()


class TreeBody(BaseModel):
    namespace: str
    key: str
    meta: dict[str, Any] | None = None


def entry_json(entry: TreeEntry) -> dict[str, Any]:
    """A TreeEntry as JSON data."""
    return asdict(entry)


def add_routes(router: APIRouter, caller: Callable[..., Any]) -> None:
    """Add the blob routes to the fleet's router (``caller`` authenticates)."""

    def scope(request: Request, who: Any, namespace: str | None = None) -> None:
        job_id = request.headers.get(JOB_HEADER, "")
        try:
            project, workflows = who.server.store.job_scope(job_id, who.runner)
        except RefusedError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        if namespace is None:
            return
        allowed = {f"cache/{project}"} | {f"workspace/{wf}" for wf in workflows}
        if namespace not in allowed:
            raise HTTPException(403, f"job {job_id} may not use the blob namespace {namespace!r}")

    def checked(digest: str) -> str:
        if not DIGEST.match(digest):
            raise HTTPException(400, f"{digest!r} is not a BLAKE3 hex digest")
        return digest

    def transfers(who: Any) -> Transfers:
        found: Transfers = who.server.transfers
        return found

    @router.head("/blobs/{digest}")
    def has_blob(digest: str, request: Request, who: Any = Depends(caller)) -> Response:  # noqa: B008
        scope(request, who)
        found = who.server.blobs.has_blob(checked(digest))
        return Response(status_code=200 if found else 404)

    @router.get("/blobs/{digest}")
    def get_blob(digest: str, request: Request, who: Any = Depends(caller)) -> Response:  # noqa: B008
        scope(request, who)
        try:
            path, b3 = transfers(who).export_blob(checked(digest))
        except KeyError:
            raise HTTPException(404, f"blob {digest} is not in the store") from None
        return FileResponse(path, headers={HASH_HEADER: b3})

    @router.head("/uploads/{digest}")
    def upload_offset(digest: str, request: Request, who: Any = Depends(caller)) -> Response:  # noqa: B008
        scope(request, who)
        size = transfers(who).offset(who.runner.id, checked(digest))
        return Response(status_code=200, headers={OFFSET_HEADER: str(size)})

    @router.patch("/uploads/{digest}")
    async def upload(
        digest: str,
        offset: int,
        request: Request,
        who: Any = Depends(caller),  # noqa: B008
    ) -> Response:
        await run_in_threadpool(scope, request, who)
        part = transfers(who).part(who.runner.id, checked(digest))
        have = transfers(who).offset(who.runner.id, digest)
        if offset != have:
            raise HTTPException(
                409,
                f"upload of {digest} is at {have} bytes, not {offset}",
                {OFFSET_HEADER: str(have)},
            )
        with part.open("ab") as out:
            async for chunk in request.stream():
                out.write(chunk)
        return Response(status_code=204, headers={OFFSET_HEADER: str(part.stat().st_size)})

    @router.post("/uploads/{digest}/blob")
    def commit_blob(digest: str, request: Request, who: Any = Depends(caller)) -> dict[str, Any]:  # noqa: B008
        scope(request, who)
        path = _verified(transfers(who), who.runner.id, checked(digest))
        try:
            with path.open("rb") as fh:
                stored, size = who.server.blobs.put_blob(fh)
        finally:
            path.unlink(missing_ok=True)
        return {"digest": stored, "size": size}

    @router.post("/uploads/{digest}/tree")
    def commit_tree(
        digest: str,
        body: TreeBody,
        request: Request,
        who: Any = Depends(caller),  # noqa: B008
    ) -> dict[str, Any]:
        scope(request, who, body.namespace)
        path = _verified(transfers(who), who.runner.id, checked(digest))
        try:
            entry = transfers(who).import_tree(body.namespace, body.key, path, body.meta)
        except ValueError as exc:  # an unsafe archive member
            raise HTTPException(422, str(exc)) from None
        finally:
            path.unlink(missing_ok=True)
        return entry_json(entry)

    @router.get("/trees")
    def get_tree(
        namespace: str,
        key: str,
        request: Request,
        who: Any = Depends(caller),  # noqa: B008
    ) -> dict[str, Any]:
        scope(request, who, namespace)
        entry = who.server.blobs.get_tree(namespace, key)
        if entry is None:
            raise HTTPException(404, f"no tree {key!r} in {namespace}")
        return entry_json(entry)

    @router.get("/trees/find")
    def find_tree(
        namespace: str,
        prefix: str,
        request: Request,
        who: Any = Depends(caller),  # noqa: B008
    ) -> dict[str, Any]:
        scope(request, who, namespace)
        entry = who.server.blobs.find_tree(namespace, prefix)
        if entry is None:
            raise HTTPException(404, f"no tree with a key starting {prefix!r} in {namespace}")
        return entry_json(entry)

    @router.get("/trees/list")
    def list_trees(
        namespace: str,
        request: Request,
        who: Any = Depends(caller),  # noqa: B008
    ) -> list[dict[str, Any]]:
        scope(request, who, namespace)
        return [entry_json(e) for e in who.server.blobs.list_trees(namespace)]

    @router.delete("/trees")
    def delete_tree(
        namespace: str,
        key: str,
        request: Request,
        who: Any = Depends(caller),  # noqa: B008
    ) -> dict[str, Any]:
        scope(request, who, namespace)
        return {"deleted": bool(who.server.blobs.delete_tree(namespace, key))}

    @router.get("/trees/archive")
    def tree_archive(
        namespace: str,
        key: str,
        request: Request,
        who: Any = Depends(caller),  # noqa: B008
    ) -> Response:
        scope(request, who, namespace)
        entry = who.server.blobs.get_tree(namespace, key)
        if entry is None:
            raise HTTPException(404, f"no tree {key!r} in {namespace}")
        path, b3 = transfers(who).export_tree(entry)
        return FileResponse(path, headers={HASH_HEADER: b3}, media_type="application/zstd")


def _verified(transfers: Transfers, runner_id: str, digest: str) -> Path:
    try:
        return transfers.verified(runner_id, digest)
    except FileNotFoundError:
        raise HTTPException(404, f"no upload of {digest} to commit") from None
    except ChecksumError as exc:
        raise HTTPException(422, str(exc)) from None
