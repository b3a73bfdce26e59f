"""All Pipelines: every visible pipeline, newest first, with filters, its
workflows and their jobs, durations compared with the previous run, and the
rerun / cancel actions. ``?fragment=1`` returns only the table (live refresh)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from circlet.server import format, queries
from circlet.server.pages.common import render
from circlet.server.services import principal, services

router = APIRouter(include_in_schema=False)
STATUSES = ("success", "failed", "running", "on_hold", "canceled", "error", "not_run")
DAYS = (1, 7, 30, 90)


def dashboard_context(
    request: Request,
    *,
    project: str | None,
    branch: str | None,
    status: str | None,
    days: int | None,
    page: int,
) -> dict[str, object]:
    """Everything the All Pipelines table needs, in a fixed number of queries."""
    svc = services(request)
    who = principal(request)
    visible = who.visible()
    if project and visible is not None and project not in visible:
        project = "__none__"  # asked for a project they may not see: show nothing
    flt = queries.PipelineFilter(
        visible=visible,
        project=project or None,
        branch=branch or None,
        status=status if status in STATUSES else None,
        since=time.time() - days * 86400 if days else None,
    )
    size = svc.settings.page_size
    rows, more = queries.dashboard(svc.records.engine, flt, limit=size, offset=page * size)
    metas = svc.accounts.pipeline_meta([r.pipeline.id for r in rows])
    names = {p.slug: p.name for p in svc.accounts.projects()}
    running = any(
        r.pipeline.status in ("running", "queued")
        or any(w.workflow.status == "running" for w in r.workflows)
        for r in rows
    )
    return {
        "rows": rows,
        "metas": metas,
        "names": names,
        "more": more,
        "page": page,
        "running": running,
        "change": format.change_percent,
        "can_act": {r.pipeline.project: who.can(r.pipeline.project, "member") for r in rows},
    }


@router.get("/", response_class=HTMLResponse)
def all_pipelines(  # noqa: PLR0917 - FastAPI reads parameters by name
    request: Request,
    project: str | None = None,
    branch: str | None = None,
    status: str | None = None,
    days: int | None = None,
    page: int = 0,
    fragment: bool = False,
) -> Response:
    """The All Pipelines page (or just its table with ``fragment``)."""
    svc = services(request)
    who = principal(request)
    if who.user is None and not who.public:
        raise HTTPException(401, "You must log in first.")  # nothing public: sign in
    page = max(0, min(page, 10_000))
    context = dashboard_context(
        request, project=project, branch=branch, status=status, days=days, page=page
    )
    if fragment:
        return render(request, "_pipelines.html", context)
    visible = who.visible()
    projects = [p for p in svc.accounts.projects() if visible is None or p.slug in visible]
    context.update(
        {
            "projects": projects,
            "branches": queries.branches(svc.records.engine, visible, project or None),
            "statuses": STATUSES,
            "day_choices": DAYS,
            "filters": {
                "project": project or "",
                "branch": branch or "",
                "status": status or "",
                "days": days or 0,
            },
            "title": "All Pipelines",
        }
    )
    return render(request, "dashboard.html", context)


@router.get("/ui-api/events", include_in_schema=False)
async def pipeline_events(request: Request) -> StreamingResponse:
    """Server-sent ``changed`` events when any pipeline, workflow or job changes
    (at most one a second): the page then reloads its table."""
    notifier = services(request).notifier

    async def stream() -> AsyncIterator[str]:
        yield "retry: 3000\n\n"
        while not await request.is_disconnected():
            woke = await notifier.wait(["pipelines"], timeout=15)
            yield "event: changed\ndata: {}\n\n" if woke else ": keep-alive\n\n"
            await asyncio.sleep(1.0)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
