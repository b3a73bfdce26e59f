"""Who is asking, and what they may do.

Three ways in: a session cookie (pages; every form POST carries the session's
CSRF token), a ``Circle-Token`` header or HTTP basic auth with the token as
user name (the API, as CircleCI accepts them), or nobody (public projects
only). Roles are per project: ``viewer`` reads, ``member`` also triggers,
reruns, cancels and approves, ``admin`` also changes settings; a server admin
is admin everywhere.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from dataclasses import dataclass, field

from fastapi import Request

from circlet.store.accounts import AccountStore, Role, User, role_at_least

SESSION_COOKIE = "circlet_session"
LOGIN_CSRF_COOKIE = "circlet_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Principal:
    user: User | None
    via: str  # "session" | "token" | "anonymous"
    csrf: str | None = None
    roles: dict[str, Role] = field(default_factory=dict)
    public: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.is_admin

    def role(self, project: str) -> Role | None:
        """The role on ``project``: server admins are admins; public projects give viewer."""
        if self.is_admin:
            return "admin"
        role = self.roles.get(project)
        if role is None and project in self.public:
            return "viewer"
        return role

    def can(self, project: str, needed: Role) -> bool:
        """Whether this principal may do what ``needed`` allows on ``project``."""
        return role_at_least(self.role(project), needed)

    def visible(self) -> tuple[str, ...] | None:
        """Project slugs this principal may see; None: every project (an admin)."""
        if self.is_admin:
            return None
        return tuple(sorted(set(self.roles) | set(self.public)))


def _token_from(request: Request) -> str | None:
    token = request.headers.get("circle-token")
    if token:
        return token
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            user, _, _ = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None
    if scheme.lower() == "bearer" and value:
        return value
    return None


def resolve(request: Request, accounts: AccountStore) -> Principal:
    """The principal of ``request`` (computed once per request)."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    public = frozenset(p.slug for p in accounts.projects() if p.public)
    principal = Principal(None, "anonymous", public=public)
    token = _token_from(request)
    if token:
        user = accounts.token_user(token)
        if user is not None:
            principal = Principal(user, "token", None, accounts.roles(user.id), public)
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        found = accounts.session_user(cookie) if cookie else None
        if found is not None:
            user, csrf = found
            principal = Principal(user, "session", csrf, accounts.roles(user.id), public)
    request.state.principal = principal
    return principal


def csrf_ok(principal: Principal, submitted: str | None) -> bool:
    """Whether a form or header token matches the session's (always true for tokens)."""
    if principal.via == "token":
        return True
    if principal.csrf is None or not submitted:
        return False
    return hmac.compare_digest(principal.csrf.encode(), submitted.encode())


def new_login_csrf() -> str:
    """A token for the login form (double-submit: cookie and field must match)."""
    return secrets.token_urlsafe(24)
