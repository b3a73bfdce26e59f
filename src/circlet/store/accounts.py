"""Server-only records: users, sessions, API tokens, project settings and roles,
secrets (project variables, contexts, SSH keys) encrypted at rest, and what a
trigger knew about its pipeline (actor, commit subject, parameters).

The tables live in the records database next to ``store.records``' tables but
in their own metadata (prefix ``server_``): the records' Alembic revisions stay
the records' own, and :func:`create_tables` adds ours idempotently. Portable
SQL only, as in ``store.models``.

Secrets are Fernet tokens (AES-128-CBC + HMAC-SHA256) under a key file kept in
the circlet home (mode 0600), so a copied database alone reveals nothing.
Session and API tokens are stored as SHA-256 digests: they are random and long,
so a slow hash would add nothing but latency to every request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from sqlalchemy import (
    Boolean,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from circlet.store.models import AutoId

Role = Literal["admin", "member", "viewer"]
ROLES: tuple[Role, ...] = ("viewer", "member", "admin")  # weakest first
SESSION_SECONDS = 14 * 24 * 3600


class DuplicateError(ValueError):
    """A name that must be unique is taken (maps to HTTP 409)."""


class SecretsKeyError(RuntimeError):
    """The key file cannot decrypt the stored secrets (wrong or replaced key)."""


class AccountsBase(DeclarativeBase):
    pass


class UserRow(AccountsBase):
    __tablename__ = "server_users"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    login: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    password_hash: Mapped[str] = mapped_column(Text)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class SessionRow(AccountsBase):
    __tablename__ = "server_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class TokenRow(AccountsBase):
    __tablename__ = "server_api_tokens"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float)


class ProjectRow(AccountsBase):
    __tablename__ = "server_projects"

    slug: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(Text)  # a git URL or a local path
    kind: Mapped[str] = mapped_column(String(16))  # "git" | "path"
    default_branch: Mapped[str] = mapped_column(String(255))
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook_secret: Mapped[str] = mapped_column(Text)  # encrypted
    created_at: Mapped[float] = mapped_column(Float)


class MemberRow(AccountsBase):
    __tablename__ = "server_members"

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(255), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))


class EnvVarRow(AccountsBase):
    __tablename__ = "server_env_vars"

    project: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # encrypted
    hint: Mapped[str] = mapped_column(String(8))  # last characters, for the masked display
    created_at: Mapped[float] = mapped_column(Float)


class ContextRow(AccountsBase):
    __tablename__ = "server_contexts"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class ContextVarRow(AccountsBase):
    __tablename__ = "server_context_vars"

    context_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # encrypted
    hint: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[float] = mapped_column(Float)


class ContextProjectRow(AccountsBase):
    """A project allowed to use a context; a context with no rows is open to all."""

    __tablename__ = "server_context_projects"

    context_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(255), primary_key=True)


class SshKeyRow(AccountsBase):
    __tablename__ = "server_ssh_keys"
    __table_args__ = (UniqueConstraint("project", "fingerprint"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(128))
    private_key: Mapped[str] = mapped_column(Text)  # encrypted
    created_at: Mapped[float] = mapped_column(Float)


class PipelineMetaRow(AccountsBase):
    """What the server knew when it accepted a trigger, before the engine ran."""

    __tablename__ = "server_pipeline_meta"
    __table_args__ = (Index("ix_server_pipeline_meta_project", "project", "number"),)

    pipeline_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(255))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))  # created | pending | errored
    trigger_type: Mapped[str] = mapped_column(String(32))  # api | webhook | schedule | explicit
    actor: Mapped[str] = mapped_column(String(255))
    branch: Mapped[str | None] = mapped_column(String(255))
    tag: Mapped[str | None] = mapped_column(String(255))
    revision: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(255))
    parameters: Mapped[str] = mapped_column(Text)  # JSON object
    errors: Mapped[str] = mapped_column(Text)  # JSON list of {"type", "message"}
    created_at: Mapped[float] = mapped_column(Float)
    # JSON {job name: {"executor", "image", "resource_class", "parallelism"}} from the Plan
    job_info: Mapped[str] = mapped_column(Text, default="{}")


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


def _mask(value: str) -> tuple[str, str]:
    """The hint kept in clear for display: CircleCI shows ``xxxx`` + the last 4
    characters, but only when the value is long enough not to give it away."""
    return ("xxxx" + value[-4:], value[-4:]) if len(value) >= 8 else ("xxxx", "")


def ssh_fingerprint(private_key: str) -> str:
    """The MD5 fingerprint (``aa:bb:…``) of a private key's public half, as
    ``add_ssh_keys: fingerprints`` lists them. ValueError if it is no key."""
    data = private_key.encode()
    try:
        key: Any = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ValueError("not an unencrypted OpenSSH or PEM private key") from exc
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    blob = base64.b64decode(public.split()[1])
    hexed = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(hexed[i : i + 2] for i in range(0, len(hexed), 2))


class SecretBox:
    """Encrypts secrets with a Fernet key kept in ``key_file`` (created 0600)."""

    def __init__(self, key_file: Path) -> None:
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key())
        self._fernet = Fernet(key_file.read_bytes().strip())

    def seal(self, value: str) -> str:
        """Encrypt ``value``."""
        return self._fernet.encrypt(value.encode()).decode()

    def open(self, token: str) -> str:
        """Decrypt what :meth:`seal` returned."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretsKeyError(
                "stored secrets do not match the server key file (was it replaced?)"
            ) from exc


def create_tables(engine: Engine) -> None:
    """Create the server tables that are missing (idempotent)."""
    AccountsBase.metadata.create_all(engine, checkfirst=True)


class AccountStore:
    """Users, sessions, tokens, project settings, roles, secrets and trigger facts."""

    def __init__(self, engine: Engine, box: SecretBox) -> None:
        self._engine = engine
        # Writers BEGIN IMMEDIATE on SQLite (the records engine honours this option):
        # a deferred transaction that reads first cannot upgrade past another writer.
        self._write_engine = engine.execution_options(sqlite_begin="IMMEDIATE")
        self._box = box
        self._hasher = PasswordHasher()
        self._lock = threading.RLock()  # SQLite has one writer; keep ours in line
        create_tables(engine)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._lock, Session(self._write_engine) as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._engine) as session:
            yield session

    # ------------------------------------------------------------------ users

    def create_user(
        self, login: str, password: str, *, name: str = "", is_admin: bool = False
    ) -> User:
        """A new user; DuplicateError if the login is taken."""
        if not login or not password:
            raise ValueError("a user needs a login and a password")
        row = UserRow(
            login=login,
            name=name or login,
            password_hash=self._hasher.hash(password),
            is_admin=is_admin,
            created_at=_now(),
        )
        try:
            with self._session() as s:
                s.add(row)
                s.flush()
                return _user(row)
        except IntegrityError as exc:
            raise DuplicateError(f"user {login!r} already exists") from exc

    def set_password(self, user_id: int, password: str) -> None:
        """Replace a user's password and end their sessions."""
        with self._session() as s:
            s.execute(
                update(UserRow)
                .where(UserRow.id == user_id)
                .values(password_hash=self._hasher.hash(password))
            )
            s.execute(delete(SessionRow).where(SessionRow.user_id == user_id))

    def authenticate(self, login: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None (same cost either way)."""
        with self._read() as s:
            row = s.scalars(select(UserRow).where(UserRow.login == login)).first()
        if row is None:
            # Hash anyway so a wrong login takes as long as a wrong password.
            self._hasher.hash(password)
            return None
        try:
            self._hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        return _user(row)

    def user(self, user_id: int) -> User | None:
        """One user by id."""
        with self._read() as s:
            row = s.get(UserRow, user_id)
            return _user(row) if row else None

    def user_by_login(self, login: str) -> User | None:
        """One user by login."""
        with self._read() as s:
            row = s.scalars(select(UserRow).where(UserRow.login == login)).first()
            return _user(row) if row else None

    def users(self) -> list[User]:
        """Every user, by login."""
        with self._read() as s:
            return [_user(r) for r in s.scalars(select(UserRow).order_by(UserRow.login))]

    def count_users(self) -> int:
        """How many users exist (zero on a fresh server)."""
        return len(self.users())

    # --------------------------------------------------------------- sessions

    def create_session(self, user_id: int) -> tuple[str, str]:
        """A new login session: (cookie token, CSRF token)."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = _now()
        with self._session() as s:
            s.execute(delete(SessionRow).where(SessionRow.expires_at < now))
            s.add(
                SessionRow(
                    token_hash=_digest(token),
                    user_id=user_id,
                    csrf=csrf,
                    created_at=now,
                    expires_at=now + SESSION_SECONDS,
                )
            )
        return token, csrf

    def session_user(self, token: str) -> tuple[User, str] | None:
        """(user, CSRF token) of a live session cookie, else None."""
        with self._read() as s:
            row = s.get(SessionRow, _digest(token))
            if row is None or row.expires_at < _now():
                return None
            user = s.get(UserRow, row.user_id)
            return (_user(user), row.csrf) if user else None

    def end_session(self, token: str) -> None:
        """Log out: forget the session."""
        with self._session() as s:
            s.execute(delete(SessionRow).where(SessionRow.token_hash == _digest(token)))

    # ------------------------------------------------------------- API tokens

    def create_token(self, user_id: int, label: str) -> tuple[str, ApiToken]:
        """A new personal API token: (the secret, shown once; its record)."""
        token = "CCIPAT_" + secrets.token_urlsafe(30)
        with self._session() as s:
            row = TokenRow(
                user_id=user_id,
                label=label or "token",
                token_hash=_digest(token),
                created_at=_now(),
            )
            s.add(row)
            s.flush()
            return token, _token(row)

    def token_user(self, token: str) -> User | None:
        """The owner of an API token, else None."""
        with self._read() as s:
            row = s.scalars(select(TokenRow).where(TokenRow.token_hash == _digest(token))).first()
            if row is None:
                return None
            user = s.get(UserRow, row.user_id)
            return _user(user) if user else None

    def tokens(self, user_id: int) -> list[ApiToken]:
        """A user's tokens (never their secrets)."""
        query = select(TokenRow).where(TokenRow.user_id == user_id).order_by(TokenRow.id)
        with self._read() as s:
            return [_token(r) for r in s.scalars(query)]

    def delete_token(self, user_id: int, token_id: int) -> bool:
        """Revoke one of the user's tokens; False if there was none."""
        with self._session() as s:
            done = s.execute(
                delete(TokenRow).where(TokenRow.id == token_id, TokenRow.user_id == user_id)
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    # --------------------------------------------------------------- projects

    def add_project(
        self,
        slug: str,
        source: str,
        *,
        kind: str,
        name: str = "",
        default_branch: str = "main",
        public: bool = False,
    ) -> ProjectSettings:
        """Register a project; DuplicateError if the slug is taken."""
        row = ProjectRow(
            slug=slug,
            name=name or slug.rsplit("/", 1)[-1],
            source=source,
            kind=kind,
            default_branch=default_branch,
            public=public,
            webhook_secret=self._box.seal(secrets.token_hex(20)),
            created_at=_now(),
        )
        try:
            with self._session() as s:
                s.add(row)
                s.flush()
                return _project(row)
        except IntegrityError as exc:
            raise DuplicateError(f"project {slug!r} already exists") from exc

    def project(self, slug: str) -> ProjectSettings | None:
        """One project's settings."""
        with self._read() as s:
            row = s.get(ProjectRow, slug)
            return _project(row) if row else None

    def projects(self) -> list[ProjectSettings]:
        """Every project, by slug."""
        with self._read() as s:
            return [_project(r) for r in s.scalars(select(ProjectRow).order_by(ProjectRow.slug))]

    def update_project(self, slug: str, **values: Any) -> None:
        """Change ``public``, ``default_branch``, ``name`` or ``source``."""
        allowed = {"public", "default_branch", "name", "source"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)}")
        with self._session() as s:
            s.execute(update(ProjectRow).where(ProjectRow.slug == slug).values(values))

    def webhook_secret(self, slug: str) -> str | None:
        """The project's webhook secret in clear, None if no such project."""
        with self._read() as s:
            row = s.get(ProjectRow, slug)
            return self._box.open(row.webhook_secret) if row else None

    def rotate_webhook_secret(self, slug: str) -> str:
        """A fresh webhook secret (the old one stops working)."""
        secret = secrets.token_hex(20)
        with self._session() as s:
            s.execute(
                update(ProjectRow)
                .where(ProjectRow.slug == slug)
                .values(webhook_secret=self._box.seal(secret))
            )
        return secret

    # ------------------------------------------------------------------ roles

    def set_role(self, project: str, user_id: int, role: Role | None) -> None:
        """Give ``user_id`` a role on ``project``; None removes it."""
        if role is not None and role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        with self._session() as s:
            s.execute(
                delete(MemberRow).where(MemberRow.project == project, MemberRow.user_id == user_id)
            )
            if role is not None:
                s.add(MemberRow(project=project, user_id=user_id, role=role))

    def roles(self, user_id: int) -> dict[str, Role]:
        """The user's role per project slug."""
        with self._read() as s:
            rows = s.scalars(select(MemberRow).where(MemberRow.user_id == user_id))
            return {r.project: _role(r.role) for r in rows}

    def members(self, project: str) -> list[tuple[User, Role]]:
        """Who has a role on ``project``."""
        query = (
            select(UserRow, MemberRow.role)
            .join(MemberRow, MemberRow.user_id == UserRow.id)
            .where(MemberRow.project == project)
            .order_by(UserRow.login)
        )
        with self._read() as s:
            return [(_user(u), _role(r)) for u, r in s.execute(query)]

    # ------------------------------------------------------ project variables

    def set_env_var(self, project: str, name: str, value: str) -> None:
        """Create or replace a project environment variable."""
        _check_var_name(name)
        _masked, hint = _mask(value)
        with self._session() as s:
            s.execute(delete(EnvVarRow).where(EnvVarRow.project == project, EnvVarRow.name == name))
            s.add(
                EnvVarRow(
                    project=project,
                    name=name,
                    value=self._box.seal(value),
                    hint=hint,
                    created_at=_now(),
                )
            )

    def env_vars(self, project: str) -> list[MaskedVar]:
        """The project's variables, masked."""
        query = select(EnvVarRow).where(EnvVarRow.project == project).order_by(EnvVarRow.name)
        with self._read() as s:
            return [MaskedVar(r.name, "xxxx" + r.hint, r.created_at) for r in s.scalars(query)]

    def env_values(self, project: str) -> dict[str, str]:
        """The project's variables in clear, for a run (never for a page)."""
        query = select(EnvVarRow).where(EnvVarRow.project == project)
        with self._read() as s:
            return {r.name: self._box.open(r.value) for r in s.scalars(query)}

    def delete_env_var(self, project: str, name: str) -> bool:
        """Remove a variable; False if there was none."""
        with self._session() as s:
            done = s.execute(
                delete(EnvVarRow).where(EnvVarRow.project == project, EnvVarRow.name == name)
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    # --------------------------------------------------------------- contexts

    def create_context(self, name: str) -> int:
        """A new context; DuplicateError if the name is taken."""
        if not name.strip():
            raise ValueError("a context needs a name")
        try:
            with self._session() as s:
                row = ContextRow(name=name.strip(), created_at=_now())
                s.add(row)
                s.flush()
                return int(row.id)
        except IntegrityError as exc:
            raise DuplicateError(f"context {name!r} already exists") from exc

    def delete_context(self, name: str) -> bool:
        """Remove a context with its variables; False if there was none."""
        with self._session() as s:
            row = s.scalars(select(ContextRow).where(ContextRow.name == name)).first()
            if row is None:
                return False
            s.execute(delete(ContextVarRow).where(ContextVarRow.context_id == row.id))
            s.execute(delete(ContextProjectRow).where(ContextProjectRow.context_id == row.id))
            s.delete(row)
            return True

    def contexts(self) -> list[ContextInfo]:
        """Every context with its masked variables and allowed projects."""
        with self._read() as s:
            result = []
            for ctx in s.scalars(select(ContextRow).order_by(ContextRow.name)):
                variables = s.scalars(
                    select(ContextVarRow)
                    .where(ContextVarRow.context_id == ctx.id)
                    .order_by(ContextVarRow.name)
                )
                projects = s.scalars(
                    select(ContextProjectRow.project)
                    .where(ContextProjectRow.context_id == ctx.id)
                    .order_by(ContextProjectRow.project)
                )
                result.append(
                    ContextInfo(
                        id=ctx.id,
                        name=ctx.name,
                        variables=tuple(
                            MaskedVar(v.name, "xxxx" + v.hint, v.created_at) for v in variables
                        ),
                        projects=tuple(projects),
                    )
                )
            return result

    def _context_id(self, s: Session, name: str) -> int:
        row = s.scalars(select(ContextRow).where(ContextRow.name == name)).first()
        if row is None:
            raise KeyError(f"context {name!r} not found")
        return int(row.id)

    def set_context_var(self, context: str, name: str, value: str) -> None:
        """Create or replace a context variable; KeyError if no such context."""
        _check_var_name(name)
        _, hint = _mask(value)
        with self._session() as s:
            cid = self._context_id(s, context)
            s.execute(
                delete(ContextVarRow).where(
                    ContextVarRow.context_id == cid, ContextVarRow.name == name
                )
            )
            s.add(
                ContextVarRow(
                    context_id=cid,
                    name=name,
                    value=self._box.seal(value),
                    hint=hint,
                    created_at=_now(),
                )
            )

    def delete_context_var(self, context: str, name: str) -> bool:
        """Remove a context variable; False if there was none."""
        with self._session() as s:
            cid = self._context_id(s, context)
            done = s.execute(
                delete(ContextVarRow).where(
                    ContextVarRow.context_id == cid, ContextVarRow.name == name
                )
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def set_context_projects(self, context: str, projects: list[str]) -> None:
        """Restrict a context to ``projects`` (empty: open to every project)."""
        with self._session() as s:
            cid = self._context_id(s, context)
            s.execute(delete(ContextProjectRow).where(ContextProjectRow.context_id == cid))
            for slug in sorted(set(projects)):
                s.add(ContextProjectRow(context_id=cid, project=slug))

    def context_values(self, context: str, project: str) -> dict[str, str]:
        """A context's variables in clear for a run of ``project``.

        KeyError if the context does not exist, PermissionError if the project
        may not use it (the job then fails, as on CircleCI)."""
        with self._read() as s:
            cid = self._context_id(s, context)
            allowed = list(
                s.scalars(
                    select(ContextProjectRow.project).where(ContextProjectRow.context_id == cid)
                )
            )
            if allowed and project not in allowed:
                raise PermissionError(f"project {project} may not use context {context!r}")
            rows = s.scalars(select(ContextVarRow).where(ContextVarRow.context_id == cid))
            return {r.name: self._box.open(r.value) for r in rows}

    # --------------------------------------------------------------- SSH keys

    def add_ssh_key(self, project: str, hostname: str, private_key: str) -> SshKey:
        """Store a private key for ``add_ssh_keys``; ValueError if it is not a key."""
        fingerprint = ssh_fingerprint(private_key)
        try:
            with self._session() as s:
                row = SshKeyRow(
                    project=project,
                    hostname=hostname.strip(),
                    fingerprint=fingerprint,
                    private_key=self._box.seal(private_key),
                    created_at=_now(),
                )
                s.add(row)
                s.flush()
                return _ssh(row)
        except IntegrityError as exc:
            raise DuplicateError(f"key {fingerprint} is already added") from exc

    def ssh_keys(self, project: str) -> list[SshKey]:
        """The project's keys (fingerprints only)."""
        query = select(SshKeyRow).where(SshKeyRow.project == project).order_by(SshKeyRow.id)
        with self._read() as s:
            return [_ssh(r) for r in s.scalars(query)]

    def ssh_private_keys(self, project: str) -> dict[str, str]:
        """fingerprint → private key in clear, for a run."""
        query = select(SshKeyRow).where(SshKeyRow.project == project)
        with self._read() as s:
            return {r.fingerprint: self._box.open(r.private_key) for r in s.scalars(query)}

    def delete_ssh_key(self, project: str, key_id: int) -> bool:
        """Remove a key; False if there was none."""
        with self._session() as s:
            done = s.execute(
                delete(SshKeyRow).where(SshKeyRow.project == project, SshKeyRow.id == key_id)
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    # ----------------------------------------------------- pipeline trigger meta

    def record_trigger(self, meta: PipelineMeta) -> None:
        """Remember what a trigger knew (its actor, commit subject, parameters)."""
        with self._session() as s:
            s.add(
                PipelineMetaRow(
                    pipeline_id=meta.pipeline_id,
                    project=meta.project,
                    number=meta.number,
                    state=meta.state,
                    trigger_type=meta.trigger_type,
                    actor=meta.actor,
                    branch=meta.branch,
                    tag=meta.tag,
                    revision=meta.revision,
                    subject=meta.subject,
                    author=meta.author,
                    parameters=json.dumps(meta.parameters),
                    errors=json.dumps(meta.errors),
                    created_at=meta.created_at,
                    job_info=json.dumps(meta.job_info),
                )
            )

    def update_trigger(self, pipeline_id: str, **values: Any) -> None:
        """Change ``state``, ``branch``, ``revision``, ``subject``, ``author``,
        ``errors`` or ``job_info``."""
        for key in ("errors", "job_info"):
            if key in values:
                values[key] = json.dumps(values[key])
        with self._session() as s:
            s.execute(
                update(PipelineMetaRow)
                .where(PipelineMetaRow.pipeline_id == pipeline_id)
                .values(values)
            )

    def pipeline_meta(self, pipeline_ids: list[str]) -> dict[str, PipelineMeta]:
        """Trigger facts of many pipelines at once (missing ids are absent)."""
        if not pipeline_ids:
            return {}
        query = select(PipelineMetaRow).where(PipelineMetaRow.pipeline_id.in_(pipeline_ids))
        with self._read() as s:
            return {r.pipeline_id: _meta(r) for r in s.scalars(query)}

    def pending_triggers(self, project: str | None = None) -> list[PipelineMeta]:
        """Triggers accepted but not yet started by the engine, newest first."""
        query = select(PipelineMetaRow).where(PipelineMetaRow.state.in_(("created", "errored")))
        if project is not None:
            query = query.where(PipelineMetaRow.project == project)
        with self._read() as s:
            rows = s.scalars(query.order_by(PipelineMetaRow.created_at.desc()).limit(200))
            return [_meta(r) for r in rows]


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
