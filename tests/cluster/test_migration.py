"""The fleet's tables come from an Alembic revision (0002): a records database made
at 0001 (a server from before, with or without the tables ``create_all`` used to
make) is upgraded to the models' schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cluster_helpers import drop_database, fresh_database
from sqlalchemy import Engine, inspect, text

from circlet.cluster.models import ClusterBase, ensure_schema
from circlet.store.records_db import alembic_config, make_engine, migrate

FLEET = {"cluster_runner_tokens", "cluster_jobs", "cluster_events"}


def _at_0001(engine: Engine) -> None:
    cfg = alembic_config()
    with engine.connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")


def _fleet_diff(engine: Engine) -> list[object]:
    """What differs between the database's fleet tables and the models."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), ClusterBase.metadata)
    # compare_metadata also lists every other table as "not in the models": keep ours.
    return [d for d in diff if FLEET & {getattr(t, "name", "") for t in _tables(d)}]


def _tables(change: object) -> list[object]:
    items = change if isinstance(change, list) else [change]
    found = []
    for item in items:
        for part in item if isinstance(item, tuple) else (item,):
            table = getattr(part, "table", part)
            found.append(table)
    return found


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'records.db'}"
        return
    request.getfixturevalue("services")
    url = fresh_database()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.mark.parametrize("made_before", [False, True], ids=["no tables", "create_all tables"])
def test_upgrading_a_0001_database_adds_the_fleet_tables(database: str, made_before: bool) -> None:
    engine = make_engine(database)
    try:
        _at_0001(engine)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO projects (slug, pipeline_counter, build_counter, created_at)"
                    " VALUES ('gh/acme/old', 3, 7, 0)"
                )
            )
        if made_before:  # a server before 0002 made them on first use
            ensure_schema(engine)
        tables = set(inspect(engine).get_table_names())
        assert (tables >= FLEET) is made_before
        assert migrate(engine) == "0002"
        assert set(inspect(engine).get_table_names()) >= FLEET
        assert _fleet_diff(engine) == []
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT build_counter FROM projects")).scalar_one()
        assert kept == 7  # the records survived the upgrade
        cfg = alembic_config()
        with engine.connect() as conn, conn.begin():
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        assert not FLEET & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
