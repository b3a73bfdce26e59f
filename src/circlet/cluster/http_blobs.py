"""``HttpBlobStore``: the :class:`~circlet.store.api.BlobStore` of a remote runner,
over the server's blob API (:mod:`circlet.cluster.server_blobs`).

Uploads go to a spool file first (the digest must be known before the first
byte is sent), then in pieces at offsets: after a broken connection the client
asks how much arrived and goes on from there; the server verifies the BLAKE3
digest before it stores anything. Downloads are resumed with ``Range`` and
checked against the digest the server announces. A tree travels as a zstd tar
(the same walk and checks as a local save and restore: :mod:`circlet.store.archive`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import blake3
import httpx

from circlet.cluster.client import ApiClient, ServerError
from circlet.cluster.server_blobs import HASH_HEADER, JOB_HEADER, OFFSET_HEADER
from circlet.store.api import RestoreStats, TreeEntry, iter_chunks

PIECE = 8 << 20  # bytes per upload request
RETRY_FOR = 600.0  # seconds a transfer keeps trying while the server is away
BASE = "/api/cluster"


class TransferError(Exception):
    """A transfer that failed for good (checksum mismatch, refused, gave up)."""


def _entry(data: dict[str, Any]) -> TreeEntry:
    return TreeEntry(**data)


class HttpBlobStore:
    """Blobs and trees on the server, for the job ``job_id`` this runner runs."""

    def __init__(
        self,
        base_url: str | ApiClient,
        token: str | None = None,
        *,
        job_id: str = "",
        retry_for: float = RETRY_FOR,
        spool_dir: Path | None = None,
    ) -> None:
        self._owns_client = not isinstance(base_url, ApiClient)
        if isinstance(base_url, ApiClient):
            self.client = base_url
        else:
            if token is None:
                raise ValueError("HttpBlobStore needs a runner token")
            self.client = ApiClient(base_url, token)
        self.headers = {JOB_HEADER: job_id}
        self.retry_for = retry_for
        self.spool_dir = spool_dir

    def close(self) -> None:
        """Release the connections (of a client this store made itself)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> HttpBlobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------- helpers

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.call(
            method, BASE + path, retry_for=self.retry_for, headers=headers, **kwargs
        )

    def _spool(self) -> IO[bytes]:
        return tempfile.TemporaryFile(dir=self.spool_dir)

    def _upload(self, fh: IO[bytes], digest: str) -> None:
        """Send ``fh`` (rewound) as upload ``digest``, resuming where the server is."""
        size = fh.seek(0, 2)
        deadline = time.monotonic() + self.retry_for
        while True:
            offset = int(self._call("HEAD", f"/uploads/{digest}").headers.get(OFFSET_HEADER, 0))
            if offset > size:
                raise TransferError(f"the server holds more of upload {digest} than was sent")
            try:
                while offset < size:
                    fh.seek(offset)
                    piece = fh.read(PIECE)
                    self.client.http.patch(
                        f"{BASE}/uploads/{digest}",
                        params={"offset": offset},
                        content=piece,
                        headers=self.headers,
                    ).raise_for_status()
                    offset += len(piece)
                return
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else 0
                if 400 <= status < 500 and status != 409:
                    raise TransferError(f"upload {digest} refused: HTTP {status}") from None
                if time.monotonic() > deadline:
                    raise TransferError(f"upload {digest} failed: {exc}") from None
                time.sleep(0.2)  # then ask the server where to go on from

    def _fetch(
        self, out: IO[bytes], path: str, params: dict[str, str], announced: str | None
    ) -> tuple[str | None, bool]:
        """One GET from where ``out`` ends: (announced digest, complete)."""
        have = out.tell()
        headers = {**self.headers, **({"Range": f"bytes={have}-"} if have else {})}
        with self.client.http.stream("GET", BASE + path, params=params, headers=headers) as resp:
            status = resp.status_code
            if status == 404:
                raise KeyError(params.get("key", path))
            if status >= 500:
                resp.read()
                raise httpx.HTTPStatusError("server error", request=resp.request, response=resp)
            if status >= 400 and status != 416:  # 416: we already have every byte
                resp.read()
                raise ServerError(status, resp.text[:300])
            digest = resp.headers.get(HASH_HEADER) or announced
            if status == 200 or (status == 206 and announced and digest != announced):
                out.seek(0)  # a full answer, or the content changed under us: start over
                out.truncate()
                if status == 206:
                    return digest, False
            if status != 416:
                for chunk in resp.iter_bytes(1 << 20):
                    out.write(chunk)
            return digest, True

    def _download(self, path: str, params: dict[str, str], expect: str | None) -> IO[bytes]:
        """GET ``path`` into a spool file, resuming with Range; verify its BLAKE3."""
        out = self._spool()
        announced: str | None = None
        deadline = time.monotonic() + self.retry_for
        try:
            while True:
                try:
                    announced, complete = self._fetch(out, path, params, announced)
                except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                    if time.monotonic() > deadline:
                        raise TransferError(f"download {path} failed: {exc}") from None
                    time.sleep(0.2)
                    continue
                if complete:
                    break
        except BaseException:
            out.close()
            raise
        out.seek(0)
        hasher = blake3.blake3()
        for chunk in iter_chunks(cast(BinaryIO, out)):
            hasher.update(chunk)
        actual = str(hasher.hexdigest())
        for wanted in (expect, announced):
            if wanted and actual != wanted:
                out.close()
                raise TransferError(f"download {path}: checksum mismatch ({actual} != {wanted})")
        out.seek(0)
        return out

    # ------------------------------------------------------------ blobs

    def put_blob(self, stream: BinaryIO) -> tuple[str, int]:
        """Store the bytes of ``stream`` on the server; (digest, size)."""
        hasher = blake3.blake3()
        size = 0
        with self._spool() as spool:
            for chunk in iter_chunks(stream):
                hasher.update(chunk)
                spool.write(chunk)
                size += len(chunk)
            digest = str(hasher.hexdigest())
            if self.has_blob(digest):
                return digest, size
            self._upload(spool, digest)
        data = self._call("POST", f"/uploads/{digest}/blob").json()
        return str(data["digest"]), int(data["size"])

    def open_blob(self, digest: str) -> BinaryIO:
        """The blob's bytes (downloaded and verified first). KeyError if unknown."""
        return cast(BinaryIO, self._download(f"/blobs/{digest}", {}, digest))

    def has_blob(self, digest: str) -> bool:
        """Whether the server holds ``digest``."""
        try:
            self._call("HEAD", f"/blobs/{digest}")
        except ServerError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # ------------------------------------------------------------ trees

    def put_tree(
        self,
        namespace: str,
        key: str,
        root: Path,
        paths: Sequence[str] = (".",),
        meta: dict[str, Any] | None = None,
    ) -> TreeEntry:
        """Archive ``paths`` under ``root`` and store it on the server as ``key``."""
        from circlet.store.archive import create_archive

        existing = self.get_tree(namespace, key)
        if existing is not None:
            return existing
        with self._spool() as spool:
            create_archive(Path(root), cast(BinaryIO, spool), paths)
            spool.seek(0)
            hasher = blake3.blake3()
            for chunk in iter_chunks(cast(BinaryIO, spool)):
                hasher.update(chunk)
            digest = str(hasher.hexdigest())
            self._upload(spool, digest)
        body = {"namespace": namespace, "key": key, "meta": meta}
        return _entry(self._call("POST", f"/uploads/{digest}/tree", json=body).json())

    def _maybe_entry(self, path: str, params: dict[str, str]) -> TreeEntry | None:
        try:
            return _entry(self._call("GET", path, params=params).json())
        except ServerError as exc:
            if exc.status == 404:
                return None
            raise

    def get_tree(self, namespace: str, key: str) -> TreeEntry | None:
        """The entry ``key`` of ``namespace``, or None."""
        return self._maybe_entry("/trees", {"namespace": namespace, "key": key})

    def find_tree(self, namespace: str, prefix: str) -> TreeEntry | None:
        """The newest entry whose key starts with ``prefix``, or None."""
        return self._maybe_entry("/trees/find", {"namespace": namespace, "prefix": prefix})

    def list_trees(self, namespace: str | None = None) -> list[TreeEntry]:
        """The entries of ``namespace`` (a runner must name one)."""
        if namespace is None:
            raise ValueError("a runner lists the trees of one namespace")
        data = self._call("GET", "/trees/list", params={"namespace": namespace}).json()
        return [_entry(d) for d in data]

    def restore_tree(self, entry: TreeEntry, target: Path) -> RestoreStats:
        """Download ``entry`` as an archive and unpack it under ``target``."""
        from circlet.store.archive import extract_archive

        started = time.perf_counter()
        params = {"namespace": entry.namespace, "key": entry.key}
        with self._download("/trees/archive", params, None) as fh:
            stats = extract_archive(cast(BinaryIO, fh), Path(target))
        return RestoreStats(stats.files, stats.size, time.perf_counter() - started, "stream")

    def delete_tree(self, namespace: str, key: str) -> bool:
        """Delete ``key`` from ``namespace``; False if it was not there."""
        data = self._call("DELETE", "/trees", params={"namespace": namespace, "key": key}).json()
        return bool(data["deleted"])

    def prune(self, *, max_bytes: int | None = None, max_age_days: float | None = None) -> int:  # noqa: ARG002
        """Nothing: the server prunes its own store."""
        return 0
