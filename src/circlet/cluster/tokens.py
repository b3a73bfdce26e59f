"""Runner tokens: created and revoked by an admin (the server's settings page),
presented by ``circlet runner --token``. Only a SHA-256 of each token is stored;
a token is bound to the resource classes its runners may serve.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from circlet.cluster.models import RunnerToken, ensure_schema
from circlet.cluster.wire import check_class

TOKEN_PREFIX = "crt_"


class TokenError(ValueError):
    """A token that cannot be created as asked (duplicate name, bad class)."""


@dataclass(frozen=True)
class RunnerInfo:
    """A runner token as the server sees it (never the token itself)."""

    id: str
    name: str
    resource_classes: tuple[str, ...]
    created_at: float
    revoked_at: float | None = None
    last_seen_at: float | None = None
    last_host: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def engine_of(records_or_engine: Any) -> Engine:
    """The SQLAlchemy engine of a RecordStore (or an engine itself)."""
    engine = getattr(records_or_engine, "engine", records_or_engine)
    if not isinstance(engine, Engine):
        raise TypeError("expected a RecordStore or a SQLAlchemy Engine")
    ensure_schema(engine)
    return engine


def hash_token(token: str) -> str:
    """What is stored for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: RunnerToken) -> RunnerInfo:
    return RunnerInfo(
        id=row.id,
        name=row.name,
        resource_classes=tuple(row.resource_classes),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_seen_at=row.last_seen_at,
        last_host=row.last_host,
    )


def create_runner_token(records_or_engine: Any, name: str, resource_classes: Sequence[str]) -> str:
    """Create a token named ``name`` for ``resource_classes``; return it (shown once)."""
    engine = engine_of(records_or_engine)
    name = name.strip()
    if not name:
        raise TokenError("a runner token needs a name")
    classes = [check_class(c.strip()) for c in resource_classes if c.strip()]
    if not classes:
        raise TokenError("a runner token needs at least one resource class (namespace/name)")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = RunnerToken(
        id=str(uuid.uuid4()),
        name=name,
        token_hash=hash_token(token),
        resource_classes=sorted(set(classes)),
        created_at=time.time(),
    )
    try:
        with Session(engine) as session, session.begin():
            session.add(row)
    except IntegrityError:
        raise TokenError(f"a runner token named {name!r} exists already") from None
    return token


def revoke_runner_token(records_or_engine: Any, name: str) -> bool:
    """Revoke the token named ``name``; False if there is no such active token.
    Its runners are refused from their next request on (within a few seconds)."""
    engine = engine_of(records_or_engine)
    with Session(engine) as session, session.begin():
        done = session.execute(
            update(RunnerToken)
            .where(RunnerToken.name == name, RunnerToken.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
    return bool(done.rowcount)  # type: ignore[attr-defined]


def list_runner_tokens(records_or_engine: Any) -> list[RunnerInfo]:
    """Every token (revoked ones too), by name."""
    engine = engine_of(records_or_engine)
    with Session(engine) as session:
        rows = session.scalars(select(RunnerToken).order_by(RunnerToken.name))
        return [_info(r) for r in rows]


def lookup_token(engine: Engine, token: str) -> RunnerInfo | None:
    """The active runner of ``token``, or None (unknown or revoked)."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    with Session(engine) as session:
        row = session.scalars(
            select(RunnerToken).where(RunnerToken.token_hash == hash_token(token))
        ).first()
        if row is None or row.revoked_at is not None:
            return None
        return _info(row)


def touch_runner(engine: Engine, runner_id: str, host: str | None) -> None:
    """Remember when (and from where) a runner was last heard of."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(RunnerToken)
            .where(RunnerToken.id == runner_id)
            .values(last_seen_at=time.time(), last_host=host)
        )
