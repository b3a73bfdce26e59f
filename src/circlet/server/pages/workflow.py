"""The pipeline and workflow pages (job graph, timing) and the workflow actions
(rerun, rerun from failed, cancel, approve) as forms."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from circlet.server import queries, svg
from circlet.server.pages.common import back, form_data, render
from circlet.server.runs import ActionError
from circlet.server.services import can_see, principal, services
from circlet.store.models import JobRecord, PipelineRecord, WorkflowRecord

router = APIRouter(include_in_schema=False)


def _workflow(request: Request, workflow_id: str) -> tuple[WorkflowRecord, PipelineRecord]:
    svc = services(request)
    w = svc.records.get_workflow(workflow_id)
    p = svc.records.get_pipeline(w.pipeline_id) if w else None
    if w is None or p is None or not can_see(request, p.project):
        raise HTTPException(404, "Workflow not found")
    return w, p


def graph_nodes(w: WorkflowRecord, jobs: list[JobRecord]) -> list[svg.GraphNode]:
    """The workflow's jobs as graph nodes, in the config's order."""
    rows = {j.name: j for j in jobs if j.node_index == 0}
    nodes = []
    for spec in w.jobs:
        name = str(spec.get("name"))
        job = rows.get(name)
        status = job.status if job else "not_run"
        seconds = job.duration if job else None
        if job is not None and job.status == "running" and job.started_at:
            seconds = time.time() - job.started_at
        nodes.append(
            svg.GraphNode(
                name=name,
                requires=tuple(str(r) for r in spec.get("requires", [])),
                status=status,
                seconds=seconds,
                href=f"/jobs/{job.id}" if job else None,
                kind=str(spec.get("type", "build")),
            )
        )
    return nodes


@router.get("/pipelines/{pipeline_id}", response_class=HTMLResponse)
def pipeline_page(request: Request, pipeline_id: str) -> Response:
    """A pipeline: its workflows (or the errors that stopped it)."""
    svc = services(request)
    p = svc.records.get_pipeline(pipeline_id)
    if p is None or not can_see(request, p.project):
        raise HTTPException(404, "Pipeline not found")
    workflows = svc.records.workflows(p.id)
    meta = svc.accounts.pipeline_meta([p.id]).get(p.id)
    graphs = [(w, svg.workflow_graph(graph_nodes(w, svc.records.jobs(w.id)))) for w in workflows]
    return render(
        request,
        "pipeline.html",
        {
            "p": p,
            "meta": meta,
            "graphs": graphs,
            "project": svc.accounts.project(p.project),
            "title": f"Pipeline {p.number}",
        },
    )


@router.get("/workflows/{workflow_id}", response_class=HTMLResponse)
def workflow_page(request: Request, workflow_id: str, fragment: bool = False) -> Response:
    """A workflow: header, job graph, jobs with actions, and a Gantt of its jobs."""
    svc = services(request)
    w, p = _workflow(request, workflow_id)
    jobs = svc.records.jobs(w.id)
    meta = svc.accounts.pipeline_meta([p.id]).get(p.id)
    nodes = graph_nodes(w, jobs)
    bars = [
        svg.Bar(j.name, j.started_at, j.stopped_at, j.status, f"/jobs/{j.id}")
        for j in jobs
        if j.node_index == 0
    ]
    context = {
        "w": w,
        "p": p,
        "meta": meta,
        "jobs": queries.in_config_order(w, [j for j in jobs if j.node_index == 0]),
        "kinds": {str(s.get("name")): str(s.get("type", "build")) for s in w.jobs},
        "graph": svg.workflow_graph(nodes),
        "gantt": svg.gantt(bars, now=time.time()),
        "can_act": principal(request).can(p.project, "member"),
        "project": svc.accounts.project(p.project),
        "running": w.status in ("running",) or any(j.status == "running" for j in jobs),
        "title": w.name,
    }
    return render(request, "_workflow_body.html" if fragment else "workflow.html", context)


def _act(request: Request, workflow_id: str) -> tuple[WorkflowRecord, PipelineRecord, str]:
    w, p = _workflow(request, workflow_id)
    who = principal(request)
    if not who.can(p.project, "member"):
        raise HTTPException(403, "Permission denied.")
    return w, p, who.user.login if who.user else ""


@router.post("/workflows/{workflow_id}/rerun")
async def rerun(
    request: Request, workflow_id: str, from_failed: bool = False, failed_tests: bool = False
) -> Response:
    """Rerun (from failed with ``?from_failed=1``, failed tests only with
    ``?failed_tests=1``); go to the new workflow."""
    await form_data(request)
    w, _, actor = _act(request, workflow_id)
    try:
        new_id = services(request).runs.rerun(
            w.id, from_failed=from_failed, job_ids=[], actor=actor, failed_tests=failed_tests
        )
    except ActionError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return back(f"/workflows/{new_id}")


@router.post("/workflows/{workflow_id}/cancel")
async def cancel(request: Request, workflow_id: str) -> Response:
    """Cancel the workflow."""
    await form_data(request)
    w, _, actor = _act(request, workflow_id)
    try:
        services(request).runs.cancel(w.id, actor)
    except ActionError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return back(f"/workflows/{w.id}")


@router.post("/workflows/{workflow_id}/approve/{job_id}")
async def approve(request: Request, workflow_id: str, job_id: str) -> Response:
    """Approve a job on hold."""
    await form_data(request)
    w, _, actor = _act(request, workflow_id)
    try:
        services(request).runs.approve(w.id, job_id, actor)
    except ActionError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return back(f"/workflows/{w.id}")
