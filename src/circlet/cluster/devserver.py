"""A server with only the fleet's API: records, blobs and ``/api/cluster``.

For tests, benchmarks, and a fleet whose pipelines are scheduled elsewhere
(a process holding a :class:`~circlet.cluster.dispatch.ClusterDispatcher` on
the same database). ``python -m circlet.cluster.devserver --port 8585 …``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from circlet.cluster.server_api import ClusterSettings, install


def create_app(
    home: Path,
    database_url: str,
    *,
    settings: ClusterSettings | None = None,
    key_file: Path | None = None,
) -> FastAPI:
    """An app serving the fleet's API; stores open when it starts."""
    from circlet.store.accounts import SecretBox
    from circlet.store.blobs import LocalBlobStore
    from circlet.store.records import RecordStore

    cfg = settings or ClusterSettings(work_dir=home / "cluster")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        records = RecordStore(database_url)
        blobs = LocalBlobStore(home / "blobs")
        sealer = SecretBox(key_file or home / "server-secrets.key")
        cluster = install(app, records, blobs, sealer=sealer, settings=cfg)
        try:
            yield
        finally:
            cluster.close()
            blobs.close()
            records.close()

    app = FastAPI(title="circlet fleet API", lifespan=lifespan)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "pid": str(os.getpid())}

    return app


def main(argv: list[str] | None = None) -> None:
    """Run the app with uvicorn (flags: see ``--help``)."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m circlet.cluster.devserver")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8585)
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--broker-url", default="")
    parser.add_argument("--queue-prefix", default=ClusterSettings.queue_prefix)
    parser.add_argument("--lease", type=float, default=ClusterSettings.lease_seconds)
    parser.add_argument("--heartbeat", type=float, default=ClusterSettings.heartbeat_seconds)
    parser.add_argument("--reap-interval", type=float, default=ClusterSettings.reap_interval)
    args = parser.parse_args(argv)
    settings = ClusterSettings(
        lease_seconds=args.lease,
        heartbeat_seconds=args.heartbeat,
        reap_interval=args.reap_interval,
        broker_url=args.broker_url,
        queue_prefix=args.queue_prefix,
        work_dir=args.home / "cluster",
    )
    app = create_app(args.home, args.database_url, settings=settings, key_file=args.key_file)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
