"""The job page (Steps, Tests, Artifacts, Timing), step logs by window, the
raw download, the live stream (SSE) and artifact downloads."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from circlet.server import queries, svg
from circlet.server.logs import WINDOW
from circlet.server.pages.common import render
from circlet.server.services import can_see, services
from circlet.store.models import JobRecord, PipelineRecord, WorkflowRecord

router = APIRouter(include_in_schema=False)
TABS = ("steps", "tests", "artifacts", "timing")
LIVE_TEXT_LIMIT = 64 * 1024  # characters of one chunk sent live; more is left to the window
STREAM_SECONDS = 300.0  # a live stream ends after this; EventSource reconnects
FAILED = ("failure", "failed", "error")


def _job(request: Request, job_id: str) -> tuple[JobRecord, WorkflowRecord, PipelineRecord]:
    found = queries.job_pipeline(services(request).records.engine, job_id)
    if found is None or not can_see(request, found[2].project):
        raise HTTPException(404, "Job not found")
    return found


def _step_index(request: Request, job_id: str, index: int) -> None:
    _job(request, job_id)
    if index < 0 or index > 10_000:
        raise HTTPException(404, "Step not found")


@router.get("/gh-job/{vcs}/{org}/{repo}/{build_num}")
def job_by_number(request: Request, vcs: str, org: str, repo: str, build_num: int) -> Response:
    """CIRCLE_BUILD_URL lands here: the job page of that build number."""
    job = services(request).records.job_by_build_num(f"{vcs}/{org}/{repo}", build_num)
    if job is None:
        raise HTTPException(404, "Job not found")
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, tab: str = "steps") -> Response:
    """A job: header facts, parallel runs, and the tab asked for."""
    svc = services(request)
    job, w, p = _job(request, job_id)
    tab = tab if tab in TABS else "steps"
    meta = svc.accounts.pipeline_meta([p.id]).get(p.id)
    siblings = [j for j in queries.workflow_nodes(svc.records.engine, w.id) if j.name == job.name]
    steps = svc.records.steps(job.id)
    context: dict[str, object] = {
        "job": job,
        "w": w,
        "p": p,
        "meta": meta,
        "info": meta.job_info.get(job.name, {}) if meta else {},
        "nodes": sorted(siblings, key=lambda j: j.node_index),
        "steps": steps,
        "tab": tab,
        "project": svc.accounts.project(p.project),
        "queued": (job.started_at - job.created_at) if job.started_at else None,
        "title": f"{job.name} ({job.build_num})",
        "live": job.status in ("running", "queued", "blocked"),
        "window": WINDOW,
    }
    if tab == "tests":
        context.update(_tests(svc.records.engine, p.project, job, svc.records.test_cases(job.id)))
    elif tab == "artifacts":
        context["artifacts"] = [a for n in siblings for a in svc.records.artifacts(n.id)]
    elif tab == "timing":
        bars = [svg.Bar(s.name, s.started_at, s.stopped_at, s.status) for s in steps]
        context["gantt"] = svg.gantt(bars, now=time.time())
    return render(request, "job.html", context)


def _tests(engine: object, project: str, job: JobRecord, cases: list) -> dict[str, object]:  # type: ignore[type-arg]
    failures = [c for c in cases if c.result in FAILED]
    history = queries.test_history(
        engine,  # type: ignore[arg-type]
        project,
        job.name,
        [(c.classname, c.name) for c in cases],
    )
    flaky = [
        (c, history[(c.classname, c.name)])
        for c in cases
        if (c.classname, c.name) in history
        and 0 < history[(c.classname, c.name)][1] < history[(c.classname, c.name)][0]
    ]
    return {
        "cases": cases,
        "failures": failures,
        "slowest": sorted(cases, key=lambda c: -c.time)[:10],
        "flaky": flaky,
        "passed": sum(1 for c in cases if c.result == "success"),
        "skipped": sum(1 for c in cases if c.result == "skipped"),
    }


@router.get("/ui-api/jobs/{job_id}/steps/{index}/log")
def step_log(
    request: Request, job_id: str, index: int, start: int | None = None, end: int | None = None
) -> dict[str, object]:
    """A window of a step's output: ``start``/``end`` in characters; no start: the tail."""
    _step_index(request, job_id, index)
    win = services(request).logs.window(job_id, index, start, end)
    return {
        "start": win.start,
        "end": win.end,
        "total": win.total,
        "first_line": win.first_line,
        "text": win.text,
        "last_id": win.last_id,
    }


@router.get("/ui-api/jobs/{job_id}/steps/{index}/search")
def step_search(request: Request, job_id: str, index: int, q: str = "") -> dict[str, object]:
    """Lines of the whole step log that contain ``q``."""
    _step_index(request, job_id, index)
    hits = services(request).logs.search(job_id, index, q[:200])
    return {"hits": [{"line": h.line, "offset": h.offset, "text": h.text} for h in hits]}


@router.get("/jobs/{job_id}/steps/{index}/output.txt")
def step_download(request: Request, job_id: str, index: int) -> StreamingResponse:
    """The step's whole output as a text file, streamed chunk by chunk."""
    _step_index(request, job_id, index)
    job = services(request).records.job(job_id)
    name = f"{job.name if job else 'job'}-step-{index}.txt"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    logs = services(request).logs

    def body() -> Iterator[bytes]:
        for chunk in logs.iter_text(job_id, index):
            yield chunk.encode("utf-8", "replace")

    return StreamingResponse(
        body(),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/ui-api/jobs/{job_id}/events")
async def job_events(request: Request, job_id: str) -> StreamingResponse:
    """Live steps and output of a job as server-sent events: ``step`` (status
    changes), ``output`` (new chunks, with ids for de-duplication), ``done``."""
    _job(request, job_id)
    svc = services(request)
    cursor = await asyncio.to_thread(svc.logs.job_cursor, job_id)

    async def stream() -> AsyncIterator[str]:
        nonlocal cursor
        seen: dict[int, tuple[str, float | None]] = {}
        deadline = time.monotonic() + STREAM_SECONDS
        yield "retry: 2000\n\n"
        while time.monotonic() < deadline and not await request.is_disconnected():
            steps = await asyncio.to_thread(svc.records.steps, job_id)
            for st in steps:
                key = (st.status, st.stopped_at)
                if seen.get(st.index) != key:
                    seen[st.index] = key
                    data = {
                        "index": st.index,
                        "name": st.name,
                        "status": st.status,
                        "duration": st.duration,
                        "started_at": st.started_at,
                    }
                    yield f"event: step\ndata: {json.dumps(data)}\n\n"
            chunks = await asyncio.to_thread(svc.logs.job_chunks_after, job_id, cursor)
            for chunk_id, index, text in chunks:
                cursor = chunk_id
                clipped = len(text) > LIVE_TEXT_LIMIT
                data = {
                    "id": chunk_id,
                    "index": index,
                    "clipped": clipped,
                    "text": text[-LIVE_TEXT_LIMIT:] if clipped else text,
                }
                yield f"event: output\ndata: {json.dumps(data)}\n\n"
            job = await asyncio.to_thread(svc.records.job, job_id)
            if job is None or job.status not in ("running", "queued", "blocked"):
                if not chunks:
                    final = {"status": job.status if job else "gone"}
                    yield f"event: done\ndata: {json.dumps(final)}\n\n"
                    return
                continue
            if not chunks:
                await svc.notifier.wait([f"job:{job_id}"], timeout=1.0)
                await asyncio.sleep(0.25)  # let the records flush a batch, not a line

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.get("/artifacts/{job_id}/{node_index}/{path:path}")
def artifact(request: Request, job_id: str, node_index: int, path: str) -> StreamingResponse:
    """Download one artifact from the blob store."""
    _job(request, job_id)
    svc = services(request)
    found = next(
        (a for a in svc.records.artifacts(job_id) if a.path == path and a.node_index == node_index),
        None,
    )
    if found is None:
        raise HTTPException(404, "Artifact not found")
    try:
        stream = svc.blobs.open_blob(found.digest)
    except KeyError as exc:
        raise HTTPException(404, "Artifact content is gone from the blob store") from exc

    def body() -> Iterator[bytes]:
        with stream:
            while chunk := stream.read(1 << 20):
                yield chunk

    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.rsplit("/", 1)[-1]) or "artifact"
    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
