"""Plain values the account store returns, its errors, and row converters."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from circlet.store.accounts.tables import (
    PipelineMetaRow,
    ProjectRow,
    SshKeyRow,
    TokenRow,
    UserRow,
)

Role = Literal["admin", "member", "viewer"]
ROLES: tuple[Role, ...] = ("viewer", "member", "admin")  # weakest first


class DuplicateError(ValueError):
    """A name that must be unique is taken (maps to HTTP 409)."""


class SecretsKeyError(RuntimeError):
    """The key file cannot decrypt the stored secrets (wrong or replaced key)."""


# ------------------------------------------------------------------ plain values


@dataclass(frozen=True)
class User:
    id: int
    login: str
    name: str
    is_admin: bool
    created_at: float


@dataclass(frozen=True)
class ApiToken:
    id: int
    user_id: int
    label: str
    created_at: float
    last_used_at: float | None


@dataclass(frozen=True)
class ProjectSettings:
    slug: str
    name: str
    source: str
    kind: str
    default_branch: str
    public: bool
    created_at: float


@dataclass(frozen=True)
class MaskedVar:
    name: str
    masked: str  # "xxxx" + the last characters, as CircleCI shows it
    created_at: float


@dataclass(frozen=True)
class ContextInfo:
    id: int
    name: str
    variables: tuple[MaskedVar, ...]
    projects: tuple[str, ...]  # empty: every project may use it


@dataclass(frozen=True)
class SshKey:
    id: int
    project: str
    hostname: str
    fingerprint: str
    created_at: float


@dataclass(frozen=True)
class PipelineMeta:
    pipeline_id: str
    project: str
    number: int
    state: str
    trigger_type: str
    actor: str
    branch: str | None
    tag: str | None
    revision: str | None
    subject: str | None
    author: str | None
    parameters: dict[str, Any]
    errors: list[dict[str, str]]
    created_at: float
    job_info: dict[str, dict[str, Any]] = field(default_factory=dict)


def _now() -> float:
    return time.time()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ------------------------------------------------------------------ helpers


def _check_var_name(name: str) -> None:
    if (
        not name
        or not (name[0].isalpha() or name[0] == "_")
        or not all(c.isalnum() or c == "_" for c in name)
    ):
        raise ValueError(f"{name!r} is not a valid environment variable name")


def _role(value: str) -> Role:
    if value == "admin":
        return "admin"
    if value == "member":
        return "member"
    return "viewer"


def role_at_least(role: Role | None, needed: Role) -> bool:
    """Whether ``role`` grants what ``needed`` grants (admin > member > viewer)."""
    return role is not None and ROLES.index(role) >= ROLES.index(needed)


def constant_time_equal(a: str, b: str) -> bool:
    """Compare two secrets without leaking where they differ."""
    return hmac.compare_digest(a.encode(), b.encode())


def _user(row: UserRow) -> User:
    return User(row.id, row.login, row.name, bool(row.is_admin), row.created_at)


def _token(row: TokenRow) -> ApiToken:
    return ApiToken(row.id, row.user_id, row.label, row.created_at, row.last_used_at)


def _project(row: ProjectRow) -> ProjectSettings:
    return ProjectSettings(
        row.slug,
        row.name,
        row.source,
        row.kind,
        row.default_branch,
        bool(row.public),
        row.created_at,
    )


def _ssh(row: SshKeyRow) -> SshKey:
    return SshKey(row.id, row.project, row.hostname, row.fingerprint, row.created_at)


def _meta(row: PipelineMetaRow) -> PipelineMeta:
    return PipelineMeta(
        pipeline_id=row.pipeline_id,
        project=row.project,
        number=row.number,
        state=row.state,
        trigger_type=row.trigger_type,
        actor=row.actor,
        branch=row.branch,
        tag=row.tag,
        revision=row.revision,
        subject=row.subject,
        author=row.author,
        parameters=json.loads(row.parameters or "{}"),
        errors=json.loads(row.errors or "[]"),
        created_at=row.created_at,
        job_info=json.loads(row.job_info or "{}"),
    )
