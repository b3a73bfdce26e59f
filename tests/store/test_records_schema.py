"""The Alembic revisions and the SQLAlchemy models describe the same schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect

from circlet.cluster.models import ClusterBase
from circlet.store.models import Base
from circlet.store.records import RecordStore
from circlet.store.records_db import alembic_config, make_engine, migrate

TABLES = {
    "alembic_version",
    "projects",
    "pipelines",
    "workflows",
    "jobs",
    "steps",
    "step_output",
    "test_cases",
    "artifacts",
    # the runner fleet's (revision 0002; circlet.cluster.models)
    "cluster_runner_tokens",
    "cluster_jobs",
    "cluster_events",
}


def test_migrations_create_exactly_what_the_models_describe(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    RecordStore(url).close()
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES
        with engine.connect() as conn:
            both = MetaData()
            for table in [*Base.metadata.tables.values(), *ClusterBase.metadata.tables.values()]:
                table.to_metadata(both)
            diff = compare_metadata(MigrationContext.configure(conn), both)
        assert diff == []
    finally:
        engine.dispose()


def test_migrate_is_idempotent_and_downgrade_works(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        assert migrate(engine) == "0002"
        assert migrate(engine) == "0002"  # second time: nothing to do
        cfg = alembic_config()
        with engine.connect() as conn, conn.begin():
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        assert migrate(engine) == "0002"
        assert set(inspect(engine).get_table_names()) == TABLES
    finally:
        engine.dispose()
