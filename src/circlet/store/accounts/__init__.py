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

from circlet.store.accounts.secrets import SecretBox, ssh_fingerprint
from circlet.store.accounts.store import SESSION_SECONDS, AccountStore
from circlet.store.accounts.tables import create_tables
from circlet.store.accounts.values import (
    ROLES,
    ApiToken,
    ContextInfo,
    DuplicateError,
    MaskedVar,
    PipelineMeta,
    ProjectSettings,
    Role,
    SecretsKeyError,
    SshKey,
    User,
    constant_time_equal,
    role_at_least,
)

__all__ = [
    "ROLES",
    "SESSION_SECONDS",
    "AccountStore",
    "ApiToken",
    "ContextInfo",
    "DuplicateError",
    "MaskedVar",
    "PipelineMeta",
    "ProjectSettings",
    "Role",
    "SecretBox",
    "SecretsKeyError",
    "SshKey",
    "User",
    "constant_time_equal",
    "create_tables",
    "role_at_least",
    "ssh_fingerprint",
]
