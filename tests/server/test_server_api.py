"""The /api/v2 REST API against a real server, a real SQLite file and real runs."""

from __future__ import annotations

import time
import uuid

from server_helpers import Server

from circlet.engine import events as ev


def test_trigger_runs_and_reads_back_like_circleci(
    server: Server, project: str, admin_token: str
) -> None:
    api = server.api(admin_token)
    created = api.post(
        f"/project/{project}/pipeline", json={"branch": "main", "parameters": {"greeting": "hi"}}
    )
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "state", "number", "created_at"}
    assert body["number"] == 1
    assert body["state"] == "pending"
    workflows = server.wait_pipeline(api, body["id"])
    assert [(w["name"], w["status"]) for w in workflows] == [("main", "success")]
    assert workflows[0]["pipeline_number"] == 1
    assert workflows[0]["project_slug"] == project

    pipeline = api.get(f"/pipeline/{body['id']}").json()
    assert pipeline["state"] == "created"
    assert pipeline["vcs"]["branch"] == "main"
    assert pipeline["vcs"]["commit"]["subject"] == "tiny: first commit"
    assert pipeline["trigger_parameters"] == {"greeting": "hi"}
    assert api.get(f"/project/{project}/pipeline/1").json()["id"] == body["id"]
    assert api.get(f"/workflow/{workflows[0]['id']}").json()["status"] == "success"

    jobs = api.get(f"/workflow/{workflows[0]['id']}/job").json()["items"]
    by_name = {j["name"]: j for j in jobs}
    assert set(by_name) == {"build", "test"}
    assert by_name["test"]["dependencies"] == [by_name["build"]["id"]]
    assert by_name["build"]["dependencies"] == []
    assert all(j["status"] == "success" and j["type"] == "build" for j in jobs)

    build = api.get(f"/project/{project}/job/{by_name['build']['job_number']}").json()
    assert build["name"] == "build"
    assert build["status"] == "success"
    assert build["executor"] == {"resource_class": "small", "type": "docker"}
    assert build["latest_workflow"]["id"] == workflows[0]["id"]
    assert build["duration"] is not None
    assert build["duration"] >= 0

    artifacts = api.get(f"/project/{project}/{by_name['build']['job_number']}/artifacts").json()[
        "items"
    ]
    assert [a["path"] for a in artifacts] == ["build/greeting.txt"]
    content = httpx_get(server, artifacts[0]["url"], admin_token)
    assert content == "hi from circlet\n"  # the pipeline parameter reached the job

    tests = api.get(f"/project/{project}/{by_name['test']['job_number']}/tests").json()["items"]
    assert sorted((t["name"], t["result"]) for t in tests) == [
        ("test_greeting", "success"),
        ("test_skipped", "skipped"),
        ("test_slow", "success"),
    ]
    listed = api.get(f"/project/{project}/pipeline").json()
    assert [p["id"] for p in listed["items"]] == [body["id"]]
    assert listed["next_page_token"] is None
    by_org = api.get("/pipeline", params={"org-slug": "circlet/acme"}).json()["items"]
    assert [p["id"] for p in by_org] == [body["id"]]
    assert api.get("/pipeline", params={"org-slug": "gh/other"}).json()["items"] == []


def httpx_get(server: Server, url: str, token: str) -> str:
    with server.client(headers={"Circle-Token": token}) as c:
        answer = c.get(url)
        assert answer.status_code == 200
        return answer.text


def test_not_found_answers_name_the_thing(server: Server, project: str, admin_token: str) -> None:
    api = server.api(admin_token)
    missing = str(uuid.uuid4())
    cases = {
        f"/pipeline/{missing}": "Pipeline not found",
        f"/pipeline/{missing}/workflow": "Pipeline not found",
        f"/workflow/{missing}": "Workflow not found",
        f"/workflow/{missing}/job": "Workflow not found",
        f"/project/{project}/job/999": "Job not found",
        f"/project/{project}/pipeline/999": "Pipeline not found",
        "/project/gh/nobody/nothing/pipeline": "Project not found",
    }
    for path, message in cases.items():
        answer = api.get(path)
        assert (answer.status_code, answer.json()) == (404, {"message": message}), path
    bad = api.get(f"/project/{project}/pipeline", params={"page-token": "!!"})
    assert bad.status_code == 400
    assert "page-token" in bad.json()["message"]


def _record_pipelines(server: Server, project: str, count: int) -> list[str]:
    ids = []
    sink = server.svc.records.sink
    for n in range(1, count + 1):
        pid = str(uuid.uuid4())
        ids.append(pid)
        at = time.time() - (count - n) * 60
        sink(ev.PipelineStarted(pid, n, project, "main", "a" * 40, "api", at=at))
        wid = str(uuid.uuid4())
        sink(
            ev.WorkflowStarted(
                pid, wid, "main", ({"name": "build", "requires": [], "type": "build"},), at=at
            )
        )
        sink(ev.WorkflowFinished(wid, "success", at=at + 30))
        sink(ev.PipelineFinished(pid, "success", at=at + 30))
    return ids


def test_pages_of_pipelines_follow_next_page_token(
    server: Server, project: str, admin_token: str
) -> None:
    ids = _record_pipelines(server, project, 45)
    api = server.api(admin_token)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params = {"page-token": token} if token else {}
        page = api.get(f"/project/{project}/pipeline", params=params).json()
        seen.extend(p["id"] for p in page["items"])
        pages += 1
        token = page["next_page_token"]
        if token is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))  # newest first, each once


def test_rerun_makes_a_new_workflow_in_the_same_pipeline(
    server: Server, project: str, admin_token: str
) -> None:
    api = server.api(admin_token)
    pid = api.post(f"/project/{project}/pipeline", json={}).json()["id"]
    first = server.wait_pipeline(api, pid)[0]
    nothing_failed = api.post(f"/workflow/{first['id']}/rerun", json={"from_failed": True})
    assert nothing_failed.status_code == 400
    rerun = api.post(f"/workflow/{first['id']}/rerun", json={})
    assert rerun.status_code == 202
    new_id = rerun.json()["workflow_id"]
    assert new_id != first["id"]
    workflows = server.wait_pipeline(api, pid)
    assert {w["id"]: w["status"] for w in workflows} == {first["id"]: "success", new_id: "success"}
    jobs = api.get(f"/workflow/{new_id}/job").json()["items"]
    assert sorted(j["job_number"] for j in jobs) == [3, 4]  # build numbers go on
    finished = api.post(f"/workflow/{new_id}/cancel")
    assert finished.status_code == 409


def test_openapi_schema_is_published(server: Server) -> None:
    with server.client() as c:
        schema = c.get("/api/v2/openapi.json").json()
    paths = set(schema["paths"])
    for path in (
        "/api/v2/project/{vcs}/{org}/{repo}/pipeline",
        "/api/v2/pipeline/{pipeline_id}/workflow",
        "/api/v2/workflow/{workflow_id}/job",
        "/api/v2/workflow/{workflow_id}/approve/{approval_request_id}",
        "/api/v2/project/{vcs}/{org}/{repo}/{job_number}/artifacts",
        "/api/v2/me",
    ):
        assert path in paths
    assert not any(p.startswith(("/jobs", "/workflows", "/ui-api")) for p in paths)
