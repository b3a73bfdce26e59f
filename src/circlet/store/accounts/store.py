"""The account store: users, sessions, API tokens, projects, roles, trigger facts."""

from __future__ import annotations

import json
import secrets
from typing import Any

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from circlet.store.accounts.secrets import SecretsMixin
from circlet.store.accounts.tables import (
    MemberRow,
    PipelineMetaRow,
    ProjectRow,
    SessionRow,
    TokenRow,
    UserRow,
)
from circlet.store.accounts.values import (
    ROLES,
    ApiToken,
    DuplicateError,
    PipelineMeta,
    ProjectSettings,
    Role,
    User,
    _digest,
    _meta,
    _now,
    _project,
    _role,
    _token,
    _user,
)

SESSION_SECONDS = 14 * 24 * 3600


class AccountStore(SecretsMixin):
    """Users, sessions, tokens, project settings, roles, secrets and trigger facts."""

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
