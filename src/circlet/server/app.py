"""The app factory: ``create_app(settings)`` → a FastAPI app serving the pages,
the ``/api/v2`` REST API, webhooks, live logs and static files, with its
stores and runner pool opened on startup and closed on shutdown."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from circlet import __version__
from circlet.server.settings import ServerSettings

STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """A ready app. The stores open when the app starts (lifespan), so building
    one is cheap; ``app.state.services`` is set once it has started."""
    from circlet.cluster.server_api import ClusterSettings, install
    from circlet.engine import events as ev
    from circlet.server.api.routes import router as api_router
    from circlet.server.cron import CronThread
    from circlet.server.pages import account, dashboard, job, project, settings_pages, workflow
    from circlet.server.services import Services
    from circlet.server.webhooks import router as hooks_router

    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = Services.open(settings)
        app.state.services = svc
        # Pipelines a killed server left running go on (before the reaper adopts their jobs).
        svc.runs.resume_unfinished()
        # The fleet's API (runner tokens, claims, events, blobs) is always mounted:
        # runners only get work when a broker is configured (runs.py's dispatcher).
        cluster = install(
            app,
            svc.records,
            svc.blobs,
            sealer=svc.box,
            sink=ev.fan_out(svc.records.sink, svc.notifier.sink),
            settings=ClusterSettings(
                work_dir=settings.home / "cluster", queue_prefix=settings.queue_prefix
            ),
        )
        cron = CronThread(svc) if settings.schedules else None
        if cron is not None:
            cron.start()
        try:
            yield
        finally:
            if cron is not None:
                cron.stop()
            cluster.close()
            svc.close()

    app = FastAPI(
        title="circlet",
        version=__version__,
        description="CircleCI API v2 compatible endpoints of a circlet server.",
        lifespan=lifespan,
        openapi_url="/api/v2/openapi.json",
        docs_url="/api/v2/docs",
        redoc_url=None,
    )
    app.include_router(api_router)
    app.include_router(hooks_router)
    for module in (account, dashboard, project, workflow, job, settings_pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if _wants_json(request):
            return JSONResponse(
                {"message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
            )
        if exc.status_code == 401:
            target = quote(
                request.url.path + (f"?{request.url.query}" if request.url.query else "")
            )
            return RedirectResponse(f"/login?next={target}", status_code=303)
        svc = getattr(request.app.state, "services", None)
        if svc is None:
            return HTMLResponse(str(exc.detail), status_code=exc.status_code)
        from circlet.server.pages.common import render

        return render(
            request,
            "error.html",
            {"status": exc.status_code, "message": str(exc.detail)},
            status_code=exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid value')}" if where else "Invalid request."
        if _wants_json(request):
            return JSONResponse({"message": message}, status_code=400)
        return HTMLResponse(message, status_code=400)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "pid": str(os.getpid())}

    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/hooks/", "/ui-api/"))
