"""The records database: engine setup (SQLite WAL or PostgreSQL) and Alembic migrations.

The schema lives in ``store/migrations`` (Alembic, one revision per change) and is
brought to the newest revision whenever a :class:`~circlet.store.records.RecordStore`
opens, under a lock, so racing processes migrate once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text

from circlet import settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_TIMEOUT = 30.0  # seconds a SQLite writer waits for another process's write
_PG_MIGRATION_LOCK = 0x63697263  # "circ": one migrating process at a time on PostgreSQL


def default_url() -> str:
    """``$CIRCLET_DATABASE_URL``, else SQLite at ``<circlet home>/circlet.db``."""
    return settings.DATABASE_URL.get() or f"sqlite:///{settings.home_dir() / 'circlet.db'}"


# ------------------------------------------------------------------ engine setup


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and explicit BEGINs."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module, so BEGIN is ours
        # (IMMEDIATE for writers: no lock upgrade deadlocks between processes).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL never corrupts; a power cut may drop the newest commits.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine


def alembic_config() -> Config:
    """Alembic configured programmatically (no ini file) for our migrations folder."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    return cfg


def migrate(engine: Engine) -> str | None:
    """Upgrade the schema to the newest revision; return it. Safe to race: one
    process migrates while the others wait on its lock, then find nothing to do."""
    cfg = alembic_config()
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current == head:
        return head
    with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head
