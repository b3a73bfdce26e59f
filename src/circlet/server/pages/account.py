"""Sign in and out, personal API tokens, and (for admins) users."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from circlet.server import auth
from circlet.server.pages.common import back, form_data, render, require_admin
from circlet.server.services import principal, services
from circlet.store.accounts import DuplicateError

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an open redirect would let a link log users into a trap.
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form (with a double-submit CSRF token)."""
    token = auth.new_login_csrf()
    response = render(
        request, "login.html", {"next": _safe_next(next), "login_csrf": token, "error": None}
    )
    response.set_cookie(
        auth.LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=services(request).settings.secure_cookies,
    )
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the password; on success start a session."""
    svc = services(request)
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    cookie = request.cookies.get(auth.LOGIN_CSRF_COOKIE, "")
    field = data.get(auth.CSRF_FIELD, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), field.encode()):
        raise HTTPException(403, "The form expired or did not come from this site (CSRF).")
    user = svc.accounts.authenticate(data.get("login", ""), data.get("password", ""))
    target = _safe_next(data.get("next"))
    response: Response
    if user is None:
        token = auth.new_login_csrf()
        response = render(
            request,
            "login.html",
            {"next": target, "login_csrf": token, "error": "Wrong login or password."},
            status_code=401,
        )
        response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict")
        return response
    session, _ = svc.accounts.create_session(user.id)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        session,
        httponly=True,
        samesite="lax",
        secure=svc.settings.secure_cookies,
        max_age=14 * 24 * 3600,
    )
    response.delete_cookie(auth.LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session."""
    await form_data(request)
    cookie = request.cookies.get(auth.SESSION_COOKIE)
    if cookie:
        services(request).accounts.end_session(cookie)
    response = back("/login")
    response.delete_cookie(auth.SESSION_COOKIE)
    return response


@router.get("/settings/tokens", response_class=HTMLResponse)
def tokens_page(request: Request, created: str | None = None) -> Response:
    """The signed-in user's API tokens."""
    who = principal(request)
    if who.user is None:
        raise HTTPException(401, "You must log in first.")
    tokens = services(request).accounts.tokens(who.user.id)
    return render(request, "tokens.html", {"tokens": tokens, "created": created})


@router.post("/settings/tokens")
async def create_token(request: Request) -> Response:
    """A new token, shown once on the page that follows."""
    data = await form_data(request)
    who = principal(request)
    assert who.user is not None
    secret, _ = services(request).accounts.create_token(who.user.id, data.get("label", "").strip())
    tokens = services(request).accounts.tokens(who.user.id)
    return render(request, "tokens.html", {"tokens": tokens, "created": secret})


@router.post("/settings/tokens/{token_id}/delete")
async def delete_token(request: Request, token_id: int) -> Response:
    """Revoke a token."""
    await form_data(request)
    who = principal(request)
    assert who.user is not None
    services(request).accounts.delete_token(who.user.id, token_id)
    return back("/settings/tokens")


@router.get("/settings/users", response_class=HTMLResponse)
def users_page(request: Request) -> Response:
    """Users of this server (admins only)."""
    require_admin(request)
    return render(
        request, "users.html", {"users": services(request).accounts.users(), "error": None}
    )


@router.post("/settings/users")
async def create_user(request: Request) -> Response:
    """Create a user (admins only)."""
    data = await form_data(request)
    require_admin(request)
    svc = services(request)
    try:
        svc.accounts.create_user(
            data.get("login", "").strip(),
            data.get("password", ""),
            name=data.get("name", "").strip(),
            is_admin=data.get("is_admin") == "on",
        )
    except (DuplicateError, ValueError) as exc:
        return render(
            request,
            "users.html",
            {"users": svc.accounts.users(), "error": str(exc)},
            status_code=409 if isinstance(exc, DuplicateError) else 400,
        )
    return back("/settings/users")
