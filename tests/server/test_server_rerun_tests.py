"""Rerun failed tests through the API and the workflow page, on real runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from server_helpers import DATA, Server, login, make_repo


def _jobs(api: httpx.Client, workflow_id: str) -> dict[str, dict[str, Any]]:
    return {j["name"]: j for j in api.get(f"/workflow/{workflow_id}/job").json()["items"]}


def _cases(server: Server, job_id: str) -> list[tuple[str, str]]:
    return [(c.file, c.result) for c in server.svc.records.test_cases(job_id)]


def test_rerun_failed_tests_runs_only_the_failed_jobs_failed_tests(
    server: Server, admin_token: str, tmp_path: Path
) -> None:
    repo = make_repo(DATA / "flaky", tmp_path / "flaky")
    slug = "circlet/acme/flaky"
    server.svc.accounts.add_project(slug, str(repo), kind="path")
    api = server.api(admin_token)
    flag = str(tmp_path / "flaky-once")
    pid = api.post(f"/project/{slug}/pipeline", json={"parameters": {"flag": flag}}).json()["id"]
    (wf,) = server.wait_pipeline(api, pid)
    assert wf["status"] == "failed"
    jobs = _jobs(api, wf["id"])
    assert {n: j["status"] for n, j in jobs.items()} == {"lint": "success", "test": "failed"}
    assert sorted(_cases(server, jobs["test"]["id"])) == [
        ("tests/test_a.py", "success"),
        ("tests/test_b.py", "failure"),
        ("tests/test_c.py", "success"),
    ]

    # The workflow page offers the action next to the other reruns.
    web = server.client()
    login(web)
    assert "/rerun?failed_tests=1" in web.get(f"/workflows/{wf['id']}").text

    rerun = api.post(
        f"/workflow/{wf['id']}/rerun", json={"from_failed": True, "failed_tests": True}
    )
    assert rerun.status_code == 202, rerun.text
    new_id = rerun.json()["workflow_id"]
    workflows = {w["id"]: w for w in server.wait_pipeline(api, pid)}
    assert set(workflows) == {wf["id"], new_id}
    assert workflows[new_id]["status"] == "success"  # the flaky test passed this time
    new_jobs = _jobs(api, new_id)
    assert set(new_jobs) == {"test"}  # lint passed: not rerun
    assert _cases(server, new_jobs["test"]["id"]) == [("tests/test_b.py", "success")]

    # Nothing failed now: nothing to rerun.
    again = api.post(f"/workflow/{new_id}/rerun", json={"failed_tests": True})
    assert again.status_code == 400


def test_rerun_failed_tests_needs_recorded_failed_tests(
    server: Server, admin_token: str, tmp_path: Path
) -> None:
    repo = make_repo(DATA / "gated", tmp_path / "gated")
    server.svc.accounts.add_project("circlet/acme/gated", str(repo), kind="path")
    api = server.api(admin_token)
    body = {"parameters": {"fail": True}}
    pid = api.post("/project/circlet/acme/gated/pipeline", json=body).json()["id"]
    (wf,) = server.wait_pipeline(api, pid)
    assert wf["status"] == "failed"  # build failed, with no test results
    answer = api.post(f"/workflow/{wf['id']}/rerun", json={"failed_tests": True})
    assert answer.status_code == 400
    assert "No failed tests were recorded" in answer.json()["message"]
    assert [w["id"] for w in server.wait_pipeline(api, pid)] == [wf["id"]]  # nothing started
