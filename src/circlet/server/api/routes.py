"""``/api/v2``: CircleCI's paths and field names. Routes only translate: find
the records (or 404 with CircleCI's sentence), check the role, call the model
layer or the runner pool, return the schema."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request

from circlet.server import auth, queries
from circlet.server.api import convert
from circlet.server.api import schemas as s
from circlet.server.format import iso
from circlet.server.runs import ActionError, TriggerRequest
from circlet.server.services import Services, can_see, principal, project_for, services
from circlet.store.models import JobRecord, PipelineRecord, WorkflowRecord

router = APIRouter(prefix="/api/v2")
PAGE = 20
Responses = dict[int | str, dict[str, Any]]
ERRORS: Responses = {
    401: {"model": s.Message},
    403: {"model": s.Message},
    404: {"model": s.Message},
}

PipelineId = Annotated[str, "pipeline id"]


def _with(*codes: int) -> Responses:
    return {**ERRORS, **{code: {"model": s.Message} for code in codes}}


def _base(request: Request) -> str:
    configured = services(request).settings.base_url.rstrip("/")
    return configured or str(request.base_url).rstrip("/")


def _check_write(request: Request) -> None:
    who = principal(request)
    if who.user is None:
        raise HTTPException(401, "You must log in first.")
    if who.via == "session" and not auth.csrf_ok(who, request.headers.get(auth.CSRF_HEADER)):
        raise HTTPException(403, "CSRF token missing or wrong.")


def _offset(token: str | None) -> int:
    try:
        return convert.page_offset(token)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


def _pipeline(request: Request, pipeline_id: str) -> tuple[PipelineRecord, Services]:
    svc = services(request)
    p = svc.records.get_pipeline(pipeline_id)
    if p is None or not can_see(request, p.project):
        raise HTTPException(404, "Pipeline not found")
    return p, svc


def _workflow(
    request: Request, workflow_id: str
) -> tuple[WorkflowRecord, PipelineRecord, Services]:
    svc = services(request)
    w = svc.records.get_workflow(workflow_id)
    p = svc.records.get_pipeline(w.pipeline_id) if w else None
    if w is None or p is None or not can_see(request, p.project):
        raise HTTPException(404, "Workflow not found")
    return w, p, svc


def _pipelines_out(
    svc: Services, records: list[PipelineRecord], more: bool, offset: int
) -> s.PipelineList:
    metas = svc.accounts.pipeline_meta([p.id for p in records])
    projects = {p.slug: p for p in svc.accounts.projects()}
    items = [convert.pipeline_out(p, metas.get(p.id), projects.get(p.project)) for p in records]
    return s.PipelineList(
        items=items, next_page_token=convert.page_token(offset + PAGE) if more else None
    )


# ------------------------------------------------------------------- me, project


@router.get("/me", response_model=s.UserOut, responses=ERRORS)
def me(request: Request) -> s.UserOut:
    """The user the token or session belongs to."""
    who = principal(request)
    if who.user is None:
        raise HTTPException(401, "You must log in first.")
    return s.UserOut(id=str(who.user.id), login=who.user.login, name=who.user.name)


@router.get("/project/{vcs}/{org}/{repo}", response_model=s.ProjectOut, responses=ERRORS)
def get_project(request: Request, vcs: str, org: str, repo: str) -> s.ProjectOut:
    """A project by slug."""
    slug = convert.normalize_slug(vcs, org, repo)
    project = project_for(request, slug, "viewer")
    return s.ProjectOut(
        slug=slug,
        name=project.name,
        id=slug,
        organization_name=org,
        organization_slug=f"{slug.split('/')[0]}/{org}",
        organization_id=org,
        vcs_info={
            "vcs_url": project.source,
            "provider": convert.PROVIDERS.get(slug.split("/")[0], "circlet"),
            "default_branch": project.default_branch,
        },
    )


# -------------------------------------------------------------------- pipelines


@router.post(
    "/project/{vcs}/{org}/{repo}/pipeline",
    status_code=201,
    response_model=s.PipelineCreation,
    responses=_with(400),
)
def trigger_pipeline(
    request: Request,
    vcs: str,
    org: str,
    repo: str,
    body: Annotated[s.TriggerPipelineBody | None, Body()] = None,
) -> s.PipelineCreation:
    """Trigger a new pipeline on a branch or tag, with pipeline parameters."""
    body = body or s.TriggerPipelineBody.model_validate({})
    slug = convert.normalize_slug(vcs, org, repo)
    project_for(request, slug, "viewer")
    _check_write(request)
    project = project_for(request, slug, "member")
    if body.branch and body.tag:
        raise HTTPException(400, "Only one of branch or tag may be given.")
    who = principal(request)
    meta = services(request).runs.trigger(
        TriggerRequest(
            project=project.slug,
            branch=body.branch,
            tag=body.tag,
            parameters=dict(body.parameters),
            trigger_type="api",
            actor=who.user.login if who.user else "",
        )
    )
    return s.PipelineCreation(
        id=meta.pipeline_id,
        state=meta.state,  # type: ignore[arg-type]
        number=meta.number,
        created_at=iso(meta.created_at) or "",
    )


@router.get("/project/{vcs}/{org}/{repo}/pipeline", response_model=s.PipelineList, responses=ERRORS)
def project_pipelines(  # noqa: PLR0917 - FastAPI reads parameters by name
    request: Request,
    vcs: str,
    org: str,
    repo: str,
    branch: str | None = None,
    page_token: Annotated[str | None, Query(alias="page-token")] = None,
) -> s.PipelineList:
    """A project's pipelines, newest first."""
    slug = convert.normalize_slug(vcs, org, repo)
    project_for(request, slug, "viewer")
    svc = services(request)
    offset = _offset(page_token)
    flt = queries.PipelineFilter(project=slug, branch=branch)
    found = queries.list_pipelines(svc.records.engine, flt, limit=PAGE + 1, offset=offset)
    return _pipelines_out(svc, found[:PAGE], len(found) > PAGE, offset)


@router.get(
    "/project/{vcs}/{org}/{repo}/pipeline/mine", response_model=s.PipelineList, responses=ERRORS
)
def my_project_pipelines(
    request: Request,
    vcs: str,
    org: str,
    repo: str,
    page_token: Annotated[str | None, Query(alias="page-token")] = None,
) -> s.PipelineList:
    """The project's pipelines triggered by the caller."""
    slug = convert.normalize_slug(vcs, org, repo)
    project_for(request, slug, "viewer")
    svc = services(request)
    who = principal(request)
    offset = _offset(page_token)
    found = queries.list_pipelines(
        svc.records.engine, queries.PipelineFilter(project=slug), limit=500, offset=0
    )
    metas = svc.accounts.pipeline_meta([p.id for p in found])
    login = who.user.login if who.user else None
    mine = [p for p in found if login and metas.get(p.id) and metas[p.id].actor == login]
    page = mine[offset : offset + PAGE]
    return _pipelines_out(svc, page, len(mine) > offset + PAGE, offset)


@router.get(
    "/project/{vcs}/{org}/{repo}/pipeline/{pipeline_number}",
    response_model=s.PipelineOut,
    responses=ERRORS,
)
def pipeline_by_number(
    request: Request, vcs: str, org: str, repo: str, pipeline_number: int
) -> s.PipelineOut:
    """A pipeline by its number in the project."""
    slug = convert.normalize_slug(vcs, org, repo)
    project = project_for(request, slug, "viewer", missing="Pipeline not found")
    svc = services(request)
    p = svc.records.pipeline_by_number(slug, pipeline_number)
    if p is None:
        raise HTTPException(404, "Pipeline not found")
    return convert.pipeline_out(p, svc.accounts.pipeline_meta([p.id]).get(p.id), project)


@router.get("/pipeline", response_model=s.PipelineList, responses=ERRORS)
def list_pipelines(
    request: Request,
    org_slug: Annotated[str | None, Query(alias="org-slug")] = None,
    mine: bool = False,
    page_token: Annotated[str | None, Query(alias="page-token")] = None,
) -> s.PipelineList:
    """Pipelines of every project the caller may see (of one org with ``org-slug``)."""
    svc = services(request)
    who = principal(request)
    offset = _offset(page_token)
    prefix = None
    if org_slug:
        vcs, _, org = org_slug.partition("/")
        prefix = f"{convert.VCS_ALIASES.get(vcs.lower(), vcs)}/{org}" if org else vcs
    flt = queries.PipelineFilter(visible=who.visible(), org_prefix=prefix)
    found = queries.list_pipelines(svc.records.engine, flt, limit=PAGE + 1, offset=offset)
    if mine:
        metas = svc.accounts.pipeline_meta([p.id for p in found])
        login = who.user.login if who.user else None
        found = [p for p in found if login and p.id in metas and metas[p.id].actor == login]
    return _pipelines_out(svc, found[:PAGE], len(found) > PAGE, offset)


@router.get("/pipeline/{pipeline_id}", response_model=s.PipelineOut, responses=ERRORS)
def get_pipeline(request: Request, pipeline_id: PipelineId) -> s.PipelineOut:
    """A pipeline by id (also while it is still being set up)."""
    svc = services(request)
    record = svc.records.get_pipeline(pipeline_id)
    meta = svc.accounts.pipeline_meta([pipeline_id]).get(pipeline_id)
    slug = record.project if record else (meta.project if meta else None)
    if slug is None or not can_see(request, slug):
        raise HTTPException(404, "Pipeline not found")
    return convert.pipeline_out(record, meta, svc.accounts.project(slug))


@router.get("/pipeline/{pipeline_id}/workflow", response_model=s.WorkflowList, responses=ERRORS)
def pipeline_workflows(
    request: Request,
    pipeline_id: PipelineId,
    page_token: Annotated[str | None, Query(alias="page-token")] = None,
) -> s.WorkflowList:
    """The pipeline's workflows (empty while it is being set up)."""
    svc = services(request)
    record = svc.records.get_pipeline(pipeline_id)
    if record is None:
        meta = svc.accounts.pipeline_meta([pipeline_id]).get(pipeline_id)
        if meta is None or not can_see(request, meta.project):
            raise HTTPException(404, "Pipeline not found")
        return s.WorkflowList(items=[])
    p, svc = _pipeline(request, pipeline_id)
    offset = _offset(page_token)
    meta = svc.accounts.pipeline_meta([p.id]).get(p.id)
    workflows = svc.records.workflows(p.id)
    page = workflows[offset : offset + PAGE]
    more = len(workflows) > offset + PAGE
    return s.WorkflowList(
        items=[convert.workflow_out(w, p, meta) for w in page],
        next_page_token=convert.page_token(offset + PAGE) if more else None,
    )


# -------------------------------------------------------------------- workflows


@router.get("/workflow/{workflow_id}", response_model=s.WorkflowOut, responses=ERRORS)
def get_workflow(request: Request, workflow_id: str) -> s.WorkflowOut:
    """A workflow by id."""
    w, p, svc = _workflow(request, workflow_id)
    return convert.workflow_out(w, p, svc.accounts.pipeline_meta([p.id]).get(p.id))


@router.get("/workflow/{workflow_id}/job", response_model=s.WorkflowJobList, responses=ERRORS)
def workflow_jobs(request: Request, workflow_id: str) -> s.WorkflowJobList:
    """The workflow's jobs with their dependencies."""
    w, p, svc = _workflow(request, workflow_id)
    return s.WorkflowJobList(items=convert.workflow_jobs(w, svc.records.jobs(w.id), p.project))


def _action(request: Request, workflow_id: str) -> tuple[WorkflowRecord, PipelineRecord, Services]:
    w, p, svc = _workflow(request, workflow_id)
    _check_write(request)
    if not principal(request).can(p.project, "member"):
        raise HTTPException(403, "Permission denied.")
    return w, p, svc


def _actor(request: Request) -> str:
    who = principal(request)
    return who.user.login if who.user else ""


@router.post(
    "/workflow/{workflow_id}/rerun",
    status_code=202,
    response_model=s.RerunOut,
    responses={**ERRORS, 400: {"model": s.Message}, 409: {"model": s.Message}},
)
def rerun_workflow(
    request: Request, workflow_id: str, body: Annotated[s.RerunBody | None, Body()] = None
) -> s.RerunOut:
    """Rerun a workflow: from the start, from failed, or only some jobs.

    ``failed_tests: true`` (a circlet addition) is the web app's "Rerun failed tests":
    from failed, each failed job running only its failed tests (``circleci tests run``)."""
    body = body or s.RerunBody.model_validate({})
    w, _, svc = _action(request, workflow_id)
    try:
        new_id = svc.runs.rerun(
            w.id,
            from_failed=body.from_failed,
            job_ids=list(body.jobs),
            actor=_actor(request),
            failed_tests=body.failed_tests,
        )
    except ActionError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return s.RerunOut(workflow_id=new_id)


@router.post(
    "/workflow/{workflow_id}/cancel",
    status_code=202,
    response_model=s.Message,
    responses=_with(409),
)
def cancel_workflow(request: Request, workflow_id: str) -> s.Message:
    """Cancel a running workflow."""
    w, _, svc = _action(request, workflow_id)
    try:
        svc.runs.cancel(w.id, _actor(request))
    except ActionError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return s.Message(message="Accepted.")


@router.post(
    "/workflow/{workflow_id}/approve/{approval_request_id}",
    status_code=202,
    response_model=s.Message,
    responses={**ERRORS, 400: {"model": s.Message}, 409: {"model": s.Message}},
)
def approve_job(request: Request, workflow_id: str, approval_request_id: str) -> s.Message:
    """Approve a job on hold; the jobs behind it run."""
    w, _, svc = _action(request, workflow_id)
    try:
        svc.runs.approve(w.id, approval_request_id, _actor(request))
    except ActionError as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return s.Message(message="Accepted.")


# ------------------------------------------------------------------------- jobs


def _job_nodes(
    request: Request, vcs: str, org: str, repo: str, job_number: int
) -> tuple[list[JobRecord], str]:
    slug = convert.normalize_slug(vcs, org, repo)
    project_for(request, slug, "viewer", missing="Job not found")
    nodes = services(request).records.jobs_by_build_num(slug, job_number)
    if not nodes:
        raise HTTPException(404, "Job not found")
    return nodes, slug


@router.get(
    "/project/{vcs}/{org}/{repo}/job/{job_number}", response_model=s.JobDetails, responses=ERRORS
)
def job_details(request: Request, vcs: str, org: str, repo: str, job_number: int) -> s.JobDetails:
    """A job (all its parallel runs) by its number."""
    nodes, slug = _job_nodes(request, vcs, org, repo, job_number)
    svc = services(request)
    found = queries.job_pipeline(svc.records.engine, nodes[0].id)
    if found is None:
        raise HTTPException(404, "Job not found")
    _, w, p = found
    details = convert.job_details(
        nodes, w, p, svc.accounts.project(slug), f"{_base(request)}/jobs/{nodes[0].id}"
    )
    meta = svc.accounts.pipeline_meta([p.id]).get(p.id)
    info = meta.job_info.get(nodes[0].name, {}) if meta else {}
    if info:
        details.executor = s.ExecutorRef(
            resource_class=str(info.get("resource_class") or "medium"),
            type=str(info.get("executor") or details.executor.type),
        )
        details.contexts = [s.ContextRef(name=c) for c in info.get("contexts", [])]
    return details


@router.get(
    "/project/{vcs}/{org}/{repo}/{job_number}/artifacts",
    response_model=s.ArtifactList,
    responses=ERRORS,
)
def job_artifacts(
    request: Request, vcs: str, org: str, repo: str, job_number: int
) -> s.ArtifactList:
    """A job's artifacts with download URLs."""
    nodes, _ = _job_nodes(request, vcs, org, repo, job_number)
    svc = services(request)
    base = _base(request)
    items = [convert.artifact_out(a, base) for n in nodes for a in svc.records.artifacts(n.id)]
    return s.ArtifactList(items=items)


@router.get(
    "/project/{vcs}/{org}/{repo}/{job_number}/tests", response_model=s.TestList, responses=ERRORS
)
def job_tests(  # noqa: PLR0917 - FastAPI reads parameters by name
    request: Request,
    vcs: str,
    org: str,
    repo: str,
    job_number: int,
    page_token: Annotated[str | None, Query(alias="page-token")] = None,
) -> s.TestList:
    """A job's recorded test results (all parallel runs)."""
    nodes, _ = _job_nodes(request, vcs, org, repo, job_number)
    svc = services(request)
    offset = _offset(page_token)
    cases = [t for n in nodes for t in svc.records.test_cases(n.id)]
    size = 250
    page = cases[offset : offset + size]
    more = len(cases) > offset + size
    return s.TestList(
        items=[convert.test_out(t) for t in page],
        next_page_token=convert.page_token(offset + size) if more else None,
    )
