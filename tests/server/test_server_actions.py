"""Approve, cancel and rerun-from-failed through the API, on real runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_helpers import DATA, Server, make_repo


@pytest.fixture
def gated(server: Server, tmp_path: Path) -> str:
    repo = make_repo(DATA / "gated", tmp_path / "gated")
    server.svc.accounts.add_project("circlet/acme/gated", str(repo), kind="path")
    return "circlet/acme/gated"


def _jobs(api, workflow_id: str) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {j["name"]: j for j in api.get(f"/workflow/{workflow_id}/job").json()["items"]}


def test_approval_continues_the_same_workflow(server: Server, gated: str, admin_token: str) -> None:
    api = server.api(admin_token)
    pid = api.post(f"/project/{gated}/pipeline", json={}).json()["id"]
    (wf,) = server.wait_pipeline(api, pid)
    assert wf["status"] == "on_hold"
    jobs = _jobs(api, wf["id"])
    assert jobs["hold"]["status"] == "on_hold"
    assert jobs["hold"]["type"] == "approval"
    assert jobs["hold"]["approval_request_id"] == jobs["hold"]["id"]
    assert jobs["deploy"]["status"] in ("not_run", "blocked")
    wrong = api.post(f"/workflow/{wf['id']}/approve/{jobs['build']['id']}")
    assert wrong.status_code == 400  # build is no approval job

    approved = api.post(f"/workflow/{wf['id']}/approve/{jobs['hold']['id']}")
    assert approved.status_code == 202
    assert approved.json() == {"message": "Accepted."}
    server.svc.runs.wait_idle(60)
    (after,) = server.wait_pipeline(api, pid)
    assert after["id"] == wf["id"]
    assert after["status"] == "success"
    jobs = _jobs(api, wf["id"])
    assert {n: j["status"] for n, j in jobs.items()} == {
        "lint": "success",
        "build": "success",
        "hold": "success",
        "deploy": "success",
    }
    assert jobs["deploy"]["id"] == _jobs(api, wf["id"])["deploy"]["id"]  # the same job row
    assert jobs["hold"]["approved_by"] == "admin"
    again = api.post(f"/workflow/{wf['id']}/approve/{jobs['hold']['id']}")
    assert again.status_code == 409


def test_cancel_a_workflow_waiting_for_approval(
    server: Server, gated: str, admin_token: str
) -> None:
    api = server.api(admin_token)
    pid = api.post(f"/project/{gated}/pipeline", json={}).json()["id"]
    (wf,) = server.wait_pipeline(api, pid)
    assert wf["status"] == "on_hold"
    assert api.post(f"/workflow/{wf['id']}/cancel").status_code == 202
    assert api.get(f"/workflow/{wf['id']}").json()["status"] == "canceled"
    assert _jobs(api, wf["id"])["hold"]["status"] == "canceled"


def test_rerun_from_failed_reruns_only_failed_jobs_and_their_dependents(
    server: Server, gated: str, admin_token: str
) -> None:
    api = server.api(admin_token)
    pid = api.post(f"/project/{gated}/pipeline", json={"parameters": {"fail": True}}).json()["id"]
    (wf,) = server.wait_pipeline(api, pid)
    assert wf["status"] == "failed"
    assert _jobs(api, wf["id"])["build"]["status"] == "failed"
    rerun = api.post(f"/workflow/{wf['id']}/rerun", json={"from_failed": True})
    assert rerun.status_code == 202
    new_id = rerun.json()["workflow_id"]
    workflows = {w["id"]: w for w in server.wait_pipeline(api, pid)}
    assert set(workflows) == {wf["id"], new_id}
    assert workflows[new_id]["status"] == "failed"  # the same parameters fail again
    assert set(_jobs(api, new_id)) == {"build", "hold", "deploy"}  # not lint: it passed


def test_schedule_triggers_fire_their_workflow_only(server: Server, tmp_path: Path) -> None:
    import time

    from circlet.server.cron import CronThread

    repo = make_repo(DATA / "nightly", tmp_path / "nightly")
    server.svc.accounts.add_project("circlet/acme/nightly", str(repo), kind="path")
    cron = CronThread(server.svc)
    assert [(s.workflow, s.branches) for s in cron.schedules("circlet/acme/nightly")] == [
        ("nightly", ("main",))
    ]
    assert cron.fire(time.strptime("2026-03-02 02:59", "%Y-%m-%d %H:%M")) == 0
    assert cron.fire(time.strptime("2026-03-02 03:00", "%Y-%m-%d %H:%M")) == 1
    server.svc.runs.wait_idle(60)
    (pipeline,) = server.svc.records.list_pipelines(project="circlet/acme/nightly")
    assert pipeline.trigger == "schedule"
    assert [w.name for w in server.svc.records.workflows(pipeline.id)] == ["nightly"]
