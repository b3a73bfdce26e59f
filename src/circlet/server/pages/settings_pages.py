"""Project settings (environment variables, SSH keys, webhooks, members,
visibility) and the server's contexts. Secret values are write-only: pages
show them masked, as CircleCI does."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from circlet.server.pages.common import back, form_data, render, require_admin
from circlet.server.services import project_for, services
from circlet.store.accounts import ROLES, DuplicateError

router = APIRouter(include_in_schema=False)


def _base(request: Request) -> str:
    return services(request).settings.base_url.rstrip("/") or str(request.base_url).rstrip("/")


@router.get("/projects/{vcs}/{org}/{repo}/settings", response_class=HTMLResponse)
def settings_page(  # noqa: PLR0917 - FastAPI reads parameters by name
    request: Request, vcs: str, org: str, repo: str, error: str | None = None, status: int = 200
) -> Response:
    """Everything an admin of the project can change."""
    slug = f"{vcs}/{org}/{repo}"
    project = project_for(request, slug, "admin")
    svc = services(request)
    hooks = {p: f"{_base(request)}/hooks/{p}/{slug}" for p in ("github", "gitlab", "gitea")}
    return render(
        request,
        "project_settings.html",
        {
            "project": project,
            "env": svc.accounts.env_vars(slug),
            "keys": svc.accounts.ssh_keys(slug),
            "members": svc.accounts.members(slug),
            "users": svc.accounts.users(),
            "roles": ROLES,
            "hooks": hooks,
            "secret": svc.accounts.webhook_secret(slug),
            "error": error,
            "nav": "projects",
            "title": f"Settings · {project.name}",
        },
        status_code=status,
    )


async def _admin_form(request: Request, slug: str) -> dict[str, str]:
    data = await form_data(request)
    project_for(request, slug, "admin")
    return data


@router.post("/projects/{vcs}/{org}/{repo}/settings/env")
async def add_env(request: Request, vcs: str, org: str, repo: str) -> Response:
    """Add or replace a project environment variable."""
    slug = f"{vcs}/{org}/{repo}"
    data = await _admin_form(request, slug)
    try:
        services(request).accounts.set_env_var(
            slug, data.get("name", "").strip(), data.get("value", "")
        )
    except ValueError as exc:
        return settings_page(request, vcs, org, repo, error=str(exc), status=400)
    return back(f"/projects/{slug}/settings#env")


@router.post("/projects/{vcs}/{org}/{repo}/settings/env/{name}/delete")
async def delete_env(request: Request, vcs: str, org: str, repo: str, name: str) -> Response:
    """Remove a project environment variable."""
    slug = f"{vcs}/{org}/{repo}"
    await _admin_form(request, slug)
    services(request).accounts.delete_env_var(slug, name)
    return back(f"/projects/{slug}/settings#env")


@router.post("/projects/{vcs}/{org}/{repo}/settings/ssh")
async def add_ssh(request: Request, vcs: str, org: str, repo: str) -> Response:
    """Add an SSH private key for ``add_ssh_keys``."""
    slug = f"{vcs}/{org}/{repo}"
    data = await _admin_form(request, slug)
    try:
        services(request).accounts.add_ssh_key(
            slug, data.get("hostname", ""), data.get("private_key", "").replace("\r\n", "\n")
        )
    except (ValueError, DuplicateError) as exc:
        return settings_page(request, vcs, org, repo, error=str(exc), status=400)
    return back(f"/projects/{slug}/settings#ssh")


@router.post("/projects/{vcs}/{org}/{repo}/settings/ssh/{key_id}/delete")
async def delete_ssh(request: Request, vcs: str, org: str, repo: str, key_id: int) -> Response:
    """Remove an SSH key."""
    slug = f"{vcs}/{org}/{repo}"
    await _admin_form(request, slug)
    services(request).accounts.delete_ssh_key(slug, key_id)
    return back(f"/projects/{slug}/settings#ssh")


@router.post("/projects/{vcs}/{org}/{repo}/settings/webhook/rotate")
async def rotate_secret(request: Request, vcs: str, org: str, repo: str) -> Response:
    """A new webhook secret (configure it in the forge again)."""
    slug = f"{vcs}/{org}/{repo}"
    await _admin_form(request, slug)
    services(request).accounts.rotate_webhook_secret(slug)
    return back(f"/projects/{slug}/settings#webhooks")


@router.post("/projects/{vcs}/{org}/{repo}/settings/members")
async def set_member(request: Request, vcs: str, org: str, repo: str) -> Response:
    """Give a user a role (or none) on the project."""
    slug = f"{vcs}/{org}/{repo}"
    data = await _admin_form(request, slug)
    svc = services(request)
    user = svc.accounts.user_by_login(data.get("login", "").strip())
    if user is None:
        return settings_page(request, vcs, org, repo, error="No such user.", status=400)
    role = next((r for r in ROLES if r == data.get("role")), None)
    svc.accounts.set_role(slug, user.id, role)
    return back(f"/projects/{slug}/settings#members")


@router.post("/projects/{vcs}/{org}/{repo}/settings/visibility")
async def set_visibility(request: Request, vcs: str, org: str, repo: str) -> Response:
    """Make the project public (anyone may read it) or private, and set its default branch."""
    slug = f"{vcs}/{org}/{repo}"
    data = await _admin_form(request, slug)
    values: dict[str, object] = {"public": data.get("public") == "on"}
    if data.get("default_branch", "").strip():
        values["default_branch"] = data["default_branch"].strip()
    services(request).accounts.update_project(slug, **values)
    return back(f"/projects/{slug}/settings")


# ------------------------------------------------------------------ contexts


@router.get("/settings/contexts", response_class=HTMLResponse)
def contexts_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    """Contexts: their variables (masked) and the projects allowed to use them."""
    require_admin(request)
    svc = services(request)
    return render(
        request,
        "contexts.html",
        {
            "contexts": svc.accounts.contexts(),
            "projects": svc.accounts.projects(),
            "error": error,
            "nav": "contexts",
            "title": "Contexts",
        },
        status_code=status,
    )


@router.post("/settings/contexts")
async def create_context(request: Request) -> Response:
    """Create a context."""
    data = await form_data(request)
    require_admin(request)
    try:
        services(request).accounts.create_context(data.get("name", ""))
    except (ValueError, DuplicateError) as exc:
        return contexts_page(request, error=str(exc), status=400)
    return back("/settings/contexts")


@router.post("/settings/contexts/{name}/vars")
async def add_context_var(request: Request, name: str) -> Response:
    """Add or replace a context variable."""
    data = await form_data(request)
    require_admin(request)
    try:
        services(request).accounts.set_context_var(
            name, data.get("name", "").strip(), data.get("value", "")
        )
    except KeyError as exc:
        raise HTTPException(404, "Context not found") from exc
    except ValueError as exc:
        return contexts_page(request, error=str(exc), status=400)
    return back("/settings/contexts")


@router.post("/settings/contexts/{name}/vars/{var}/delete")
async def delete_context_var(request: Request, name: str, var: str) -> Response:
    """Remove a context variable."""
    await form_data(request)
    require_admin(request)
    try:
        services(request).accounts.delete_context_var(name, var)
    except KeyError as exc:
        raise HTTPException(404, "Context not found") from exc
    return back("/settings/contexts")


@router.post("/settings/contexts/{name}/projects")
async def restrict_context(request: Request, name: str) -> Response:
    """Choose the projects that may use a context (none ticked: all may)."""
    await form_data(request)
    require_admin(request)
    form = await request.form()
    chosen = [str(v) for v in form.getlist("project")]
    try:
        services(request).accounts.set_context_projects(name, chosen)
    except KeyError as exc:
        raise HTTPException(404, "Context not found") from exc
    return back("/settings/contexts")


@router.post("/settings/contexts/{name}/delete")
async def delete_context(request: Request, name: str) -> Response:
    """Delete a context."""
    await form_data(request)
    require_admin(request)
    services(request).accounts.delete_context(name)
    return back("/settings/contexts")


# ------------------------------------------------------------------- runners


@router.get("/settings/runners", response_class=HTMLResponse)
def runners_page(
    request: Request, error: str | None = None, created: str | None = None, status: int = 200
) -> Response:
    """Runner tokens (admins only): name, resource classes, created, last seen."""
    from circlet.cluster.tokens import list_runner_tokens

    require_admin(request)
    svc = services(request)
    return render(
        request,
        "runners.html",
        {
            "runners": list_runner_tokens(svc.records),
            "created": created,
            "error": error,
            "nav": "runners",
            "title": "Runners",
        },
        status_code=status,
    )


@router.post("/settings/runners")
async def create_runner(request: Request) -> Response:
    """A new runner token, shown once on the page that follows."""
    from circlet.cluster.tokens import TokenError, create_runner_token

    data = await form_data(request)
    require_admin(request)
    # Classes may be separated by commas, spaces or newlines.
    classes = data.get("resource_classes", "").replace(",", " ").split()
    try:
        token = create_runner_token(services(request).records, data.get("name", ""), classes)
    except (TokenError, ValueError) as exc:
        return runners_page(request, error=str(exc), status=400)
    return runners_page(request, created=token)


@router.post("/settings/runners/{name:path}/revoke")
async def revoke_runner(request: Request, name: str) -> Response:
    """Revoke a runner token: its runners are refused from their next request on."""
    from circlet.cluster.tokens import revoke_runner_token

    await form_data(request)
    require_admin(request)
    if not revoke_runner_token(services(request).records, name):
        raise HTTPException(404, "No such active runner token.")
    return back("/settings/runners")
