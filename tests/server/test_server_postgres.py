"""The same server on PostgreSQL: accounts, a real run, the API and the pages'
queries (the SQL must stay portable)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import ADMIN, ADMIN_PASSWORD, DATA, Server, login, make_repo, start_server

# The records tests' throwaway PostgreSQL cluster (machine's initdb/pg_ctl, Unix socket only).
_spec = importlib.util.spec_from_file_location(
    "records_backends", Path(__file__).parents[1] / "store" / "records_backends.py"
)
assert _spec is not None
assert _spec.loader is not None
backends = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("records_backends", backends)
_spec.loader.exec_module(backends)
postgres_server = backends.postgres_server


@pytest.fixture
def pg_server(tmp_path: Path, postgres_server: str) -> Iterator[Server]:
    url = backends.fresh_database(postgres_server)
    srv, uv, thread = start_server(tmp_path / "home", database_url=url)
    srv.svc.accounts.create_user(ADMIN, ADMIN_PASSWORD, is_admin=True)
    try:
        yield srv
    finally:
        srv.close_clients()
        uv.should_exit = True
        thread.join(15)


def test_a_run_and_the_pages_on_postgresql(pg_server: Server, tmp_path: Path) -> None:
    srv = pg_server
    assert srv.svc.records.engine.dialect.name == "postgresql"
    repo = make_repo(DATA / "tiny", tmp_path / "tiny")
    srv.svc.accounts.add_project("circlet/acme/tiny", str(repo), kind="path", name="tiny")
    srv.svc.accounts.set_env_var("circlet/acme/tiny", "SECRET_THING", "value-on-postgres")
    user = srv.svc.accounts.user_by_login(ADMIN)
    assert user is not None
    token, _ = srv.svc.accounts.create_token(user.id, "pg")
    api = srv.api(token)
    pid = api.post("/project/circlet/acme/tiny/pipeline", json={"branch": "main"}).json()["id"]
    (wf,) = srv.wait_pipeline(api, pid)
    assert wf["status"] == "success"
    jobs = {j["name"]: j for j in api.get(f"/workflow/{wf['id']}/job").json()["items"]}
    tests = api.get(f"/project/circlet/acme/tiny/{jobs['test']['job_number']}/tests").json()
    assert len(tests["items"]) == 3
    assert api.get("/pipeline", params={"org-slug": "circlet/acme"}).json()["items"][0]["id"] == pid
    c = srv.client()
    login(c)
    dashboard = c.get("/", params={"branch": "main", "status": "success", "days": 1})
    assert dashboard.text.count('class="pipeline"') == 1
    assert c.get("/insights/circlet/acme/tiny").text.count('<svg class="chart"') == 2
    build_id = jobs["build"]["id"]
    window = c.get(f"/ui-api/jobs/{build_id}/steps/3/log").json()
    assert "build line 40" in window["text"]
    assert window["first_line"] == 1
    assert srv.svc.accounts.env_values("circlet/acme/tiny") == {"SECRET_THING": "value-on-postgres"}
