"""The server-only tables (prefix ``server_``), in their own metadata."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from circlet.store.models import AutoId


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


def create_tables(engine: Engine) -> None:
    """Create the server tables that are missing (idempotent)."""
    AccountsBase.metadata.create_all(engine, checkfirst=True)
