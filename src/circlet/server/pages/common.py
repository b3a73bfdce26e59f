"""What every page shares: rendering with the signed-in user and CSRF token,
form checks, and the small template filters."""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from circlet.server import auth, format
from circlet.server.services import principal, services
from circlet.server.svg import color


def render(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    """Render ``template`` with the common context (user, csrf, helpers)."""
    svc = services(request)
    who = principal(request)
    env = svc.templates.env
    if "duration" not in env.filters:
        env.filters["duration"] = format.duration_text
        env.filters["ago"] = format.ago_text
        env.filters["iso"] = format.iso
        env.filters["size"] = format.size_text
        env.filters["short"] = lambda sha: (sha or "")[:7]
        env.globals["status_color"] = color
    full = {
        "request": request,
        "who": who,
        "user": who.user,
        "csrf": who.csrf or "",
        "now": time.time(),
        **context,
    }
    return svc.templates.TemplateResponse(request, template, full, status_code=status_code)


async def form_data(request: Request) -> dict[str, str]:
    """The POSTed form, after checking its CSRF token (403 when wrong) and that
    someone is signed in (401)."""
    who = principal(request)
    if who.user is None:
        raise HTTPException(401, "You must log in first.")
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    if not auth.csrf_ok(who, data.get(auth.CSRF_FIELD)):
        raise HTTPException(403, "The form expired or did not come from this site (CSRF).")
    return data


def back(url: str) -> RedirectResponse:
    """After a POST: see the result page (303 so the browser GETs it)."""
    return RedirectResponse(url, status_code=303)


def require_admin(request: Request) -> None:
    """403 unless a server admin is signed in (401 when nobody is)."""
    who = principal(request)
    if who.user is None:
        raise HTTPException(401, "You must log in first.")
    if not who.is_admin:
        raise HTTPException(403, "Only server admins may do this.")
