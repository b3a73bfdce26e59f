"""Projects: the list, adding one (a local path or a git URL), a project's page
with the *Trigger pipeline* form, and its Insights charts."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from circlet.server import code, queries, svg
from circlet.server.pages.common import back, form_data, render, require_admin
from circlet.server.runs import TriggerRequest
from circlet.server.services import principal, project_for, services
from circlet.store.accounts import DuplicateError

router = APIRouter(include_in_schema=False)


@router.get("/projects", response_class=HTMLResponse)
def projects_page(request: Request, error: str | None = None) -> Response:
    """Projects this user may see, and (admins) the form to add one."""
    svc = services(request)
    who = principal(request)
    visible = who.visible()
    projects = [p for p in svc.accounts.projects() if visible is None or p.slug in visible]
    return render(
        request,
        "projects.html",
        {"projects": projects, "error": error, "nav": "projects", "title": "Projects"},
    )


@router.post("/projects")
async def add_project(request: Request) -> Response:
    """Add a project from a local path or a git URL (admins)."""
    data = await form_data(request)
    require_admin(request)
    source = data.get("source", "").strip()
    if not source:
        return projects_page(request, error="Give a local path or a git URL.")
    kind = "git" if code.is_git_url(source) else "path"
    slug = data.get("slug", "").strip() or code.default_slug(source)
    if slug.count("/") != 2 or any(not part for part in slug.split("/")):
        return projects_page(request, error=f"{slug!r}: a slug is VCS/ORG/NAME, e.g. gh/acme/app")
    try:
        services(request).accounts.add_project(
            slug,
            source,
            kind=kind,
            name=data.get("name", "").strip() or code.project_name_for(source),
            default_branch=data.get("default_branch", "").strip() or "main",
            public=data.get("public") == "on",
        )
    except DuplicateError as exc:
        return projects_page(request, error=str(exc))
    return back(f"/projects/{slug}")


def parse_parameters(text: str) -> dict[str, str | int | bool]:
    """``key=value`` lines → pipeline parameters (true/false and integers typed)."""
    params: dict[str, str | int | bool] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{line!r} is not key=value")
        value = value.strip()
        typed: str | int | bool = value
        if value in ("true", "false"):
            typed = value == "true"
        elif value.lstrip("-").isdigit():
            typed = int(value)
        params[key.strip()] = typed
    return params


@router.get("/projects/{vcs}/{org}/{repo}", response_class=HTMLResponse)
def project_page(
    request: Request, vcs: str, org: str, repo: str, error: str | None = None
) -> Response:
    """A project: trigger form, latest pipelines, links to Insights and settings."""
    slug = f"{vcs}/{org}/{repo}"
    project = project_for(request, slug, "viewer")
    svc = services(request)
    who = principal(request)
    rows, _ = queries.dashboard(svc.records.engine, queries.PipelineFilter(project=slug), limit=10)
    return render(
        request,
        "project.html",
        {
            "project": project,
            "rows": rows,
            "can_trigger": who.can(slug, "member"),
            "is_admin": who.can(slug, "admin"),
            "error": error,
            "nav": "projects",
            "title": project.name,
        },
    )


@router.post("/projects/{vcs}/{org}/{repo}/trigger")
async def trigger(request: Request, vcs: str, org: str, repo: str) -> Response:
    """The *Trigger pipeline* form: a branch and parameters."""
    data = await form_data(request)
    slug = f"{vcs}/{org}/{repo}"
    project = project_for(request, slug, "member")
    try:
        params = parse_parameters(data.get("parameters", ""))
    except ValueError as exc:
        return project_page(request, vcs, org, repo, error=f"Parameters: {exc}")
    who = principal(request)
    meta = services(request).runs.trigger(
        TriggerRequest(
            project=project.slug,
            branch=data.get("branch", "").strip() or None,
            parameters=params,
            trigger_type="explicit",
            actor=who.user.login if who.user else "",
        )
    )
    # The pipeline row appears once its config compiled: show the project's list.
    return back(f"/?project={project.slug}&triggered={meta.number}")


@router.get("/insights/{vcs}/{org}/{repo}", response_class=HTMLResponse)
def insights(request: Request, vcs: str, org: str, repo: str, days: int = 30) -> Response:
    """Success rate, duration p50/p95 per day, and flaky tests, per workflow."""
    slug = f"{vcs}/{org}/{repo}"
    project = project_for(request, slug, "viewer")
    days = max(1, min(days, 365))
    engine = services(request).records.engine
    stats = queries.workflow_insights(engine, slug, days=days, now=time.time())
    charts = []
    for wf in stats:
        labels = [d.day[5:] for d in wf.days]
        durations = svg.line_chart(
            labels,
            [
                svg.Series("p50", tuple(d.p50 for d in wf.days), "#1f6fd1"),
                svg.Series("p95", tuple(d.p95 for d in wf.days), "#d0312d"),
            ],
        )
        rate = svg.line_chart(
            labels,
            [svg.Series("success rate", tuple(d.success_rate for d in wf.days), "#16883a")],
            unit="%",
        )
        charts.append((wf, durations, rate))
    if not project:
        raise HTTPException(404, "Project not found")
    return render(
        request,
        "insights.html",
        {
            "project": project,
            "charts": charts,
            "flaky": queries.flaky_tests(engine, slug),
            "days": days,
            "title": f"Insights · {project.name}",
        },
    )
