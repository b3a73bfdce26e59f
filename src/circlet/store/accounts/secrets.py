"""Secrets at rest: the Fernet box, SSH key fingerprints, and the project
variables, contexts and SSH keys of the account store."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from sqlalchemy import (
    Engine,
    delete,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from circlet.store.accounts.tables import (
    ContextProjectRow,
    ContextRow,
    ContextVarRow,
    EnvVarRow,
    SshKeyRow,
    create_tables,
)
from circlet.store.accounts.values import (
    ContextInfo,
    DuplicateError,
    MaskedVar,
    SecretsKeyError,
    SshKey,
    _check_var_name,
    _now,
    _ssh,
)


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


class StoreBase:
    """The engine, the secret box and the write lock every part of the store shares."""

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


class SecretsMixin(StoreBase):
    """Project variables, contexts and SSH keys, encrypted with the box."""

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
