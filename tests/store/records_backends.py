"""Fixtures that give the records tests a database URL: a SQLite file, or a fresh
database in a throwaway PostgreSQL cluster (started once per session with the
machine's own ``initdb``/``pg_ctl``, on a Unix socket only, no TCP port).

Imported by the ``test_records*`` modules so one contract suite runs on both.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BACKENDS = ["sqlite", "postgresql"]


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A URL template ``postgresql+psycopg://…/{db}`` of a private PostgreSQL server."""
    pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) is not installed")
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    # Not under pytest's tmp dir: that one is private to root, and PostgreSQL refuses
    # to run as root, so the cluster belongs to the postgres user.
    base = Path(tempfile.mkdtemp(prefix="circlet-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-k {base} -p 5432 -c listen_addresses='' -c fsync=off"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql+psycopg://postgres@/{{db}}?host={base}&port=5432"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(base, ignore_errors=True)


def fresh_database(template: str) -> str:
    """Create an empty database on the server; return its SQLAlchemy URL."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    admin = template.format(db="postgres").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return template.format(db=name)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty records database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return fresh_database(request.getfixturevalue("postgres_server"))
