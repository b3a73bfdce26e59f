"""A CircleCI API client we did not write (pycircleci, from PyPI) pointed at
circlet: it triggers a pipeline and lists its workflows and jobs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from server_helpers import Server

pycircleci = pytest.importorskip("pycircleci.api")


def test_pycircleci_triggers_and_lists(server: Server, tiny_repo: Path, admin_token: str) -> None:
    # A GitHub-style slug, so the client's default vcs_type ("github") finds it.
    server.svc.accounts.add_project("gh/acme/tiny", str(tiny_repo), kind="path")
    client = pycircleci.Api(token=admin_token, url=f"{server.base}/api")
    try:
        assert client.get_user_info(api_version="v2")["login"] == "admin"
        created = client.trigger_pipeline("acme", "tiny", branch="main", params={"greeting": "hey"})
        assert created["number"] == 1
        deadline = time.monotonic() + 60
        workflows: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            workflows = client.get_pipeline_workflow(created["id"])
            if workflows and workflows[0]["status"] not in ("running",):
                break
            time.sleep(0.3)
        assert [(w["name"], w["status"]) for w in workflows] == [("main", "success")]
        jobs = client.get_workflow_jobs(workflows[0]["id"])
        assert sorted((j["name"], j["status"]) for j in jobs) == [
            ("build", "success"),
            ("test", "success"),
        ]
        assert client.get_pipeline(created["id"])["trigger_parameters"] == {"greeting": "hey"}
        listed = client.get_project_pipelines("acme", "tiny", branch="main")
        assert [p["id"] for p in listed] == [created["id"]]
        assert client.get_project_pipeline("acme", "tiny", 1)["id"] == created["id"]
        assert [p["id"] for p in client.get_pipelines("acme")] == [created["id"]]
    finally:
        client._session.close()
        server.svc.runs.wait_idle(60)
