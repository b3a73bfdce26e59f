"""Server-rendered pages over HTTP: filters, insights, settings, errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from server_helpers import Server, login


def _run(server: Server, api, project: str, **body) -> str:  # type: ignore[no-untyped-def]
    pid = api.post(f"/project/{project}/pipeline", json=body).json()["id"]
    server.wait_pipeline(api, pid)
    return str(pid)


def test_trigger_form_filters_and_insights(server: Server, project: str, admin_token: str) -> None:
    c = server.client()
    csrf = login(c)
    answer = c.post(
        f"/projects/{project}/trigger",
        data={"csrf_token": csrf, "branch": "main", "parameters": "greeting=salut"},
    )
    assert answer.status_code == 303
    server.svc.runs.wait_idle(60)
    api = server.api(admin_token)
    _run(server, api, project, branch="nope")  # no such branch: an errored pipeline
    page = c.get("/", params={"project": project})
    assert page.text.count('class="pipeline"') == 2
    assert "salut" not in page.text  # parameters are not shown on the list
    only_errors = c.get("/", params={"status": "error"}).text
    assert only_errors.count('class="pipeline"') == 1
    assert "not found" in only_errors  # the reason is on the row
    only_success = c.get("/", params={"status": "success", "branch": "main"}).text
    assert only_success.count('class="pipeline"') == 1
    assert c.get("/", params={"branch": "ghost"}).text.count('class="pipeline"') == 0

    insights = c.get(f"/insights/{project}")
    assert insights.status_code == 200
    assert insights.text.count('<svg class="chart"') == 2  # durations and success rate
    assert ">1</dd>" in insights.text  # one finished run of workflow main


def test_broken_config_shows_its_error(
    server: Server, project: str, admin_token: str, tiny_repo: Path
) -> None:
    config = tiny_repo / ".circleci" / "config.yml"
    config.write_text(config.read_text().replace("requires: [build]", "requires: [ghost]"))
    subprocess.run(
        ["git", "commit", "-qam", "break it"],
        cwd=tiny_repo,
        check=True,
        env={
            "GIT_AUTHOR_NAME": "A",
            "GIT_AUTHOR_EMAIL": "a@b",
            "GIT_COMMITTER_NAME": "A",
            "GIT_COMMITTER_EMAIL": "a@b",
            "PATH": "/usr/bin:/bin",
        },
    )
    api = server.api(admin_token)
    pid = api.post(f"/project/{project}/pipeline", json={}).json()["id"]
    server.svc.runs.wait_idle(60)
    pipeline = api.get(f"/pipeline/{pid}").json()
    assert pipeline["state"] == "errored"
    assert pipeline["errors"][0]["type"] == "config"
    assert "ghost" in pipeline["errors"][0]["message"]
    c = server.client()
    login(c)
    assert "ghost" in c.get(f"/pipelines/{pid}").text


def test_settings_pages(server: Server, project: str) -> None:
    c = server.client()
    csrf = login(c)
    key = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
    added = c.post(
        f"/projects/{project}/settings/ssh",
        data={"csrf_token": csrf, "hostname": "github.com", "private_key": key},
    )
    assert added.status_code == 303
    (stored,) = server.svc.accounts.ssh_keys(project)
    assert len(stored.fingerprint.split(":")) == 16
    page = c.get(f"/projects/{project}/settings").text
    assert stored.fingerprint in page
    assert "PRIVATE KEY-----\n" not in page.split("<textarea")[0]
    bad = c.post(
        f"/projects/{project}/settings/ssh", data={"csrf_token": csrf, "private_key": "nope"}
    )
    assert bad.status_code == 400

    assert (
        c.post("/settings/contexts", data={"csrf_token": csrf, "name": "deploy"}).status_code == 303
    )
    c.post(
        "/settings/contexts/deploy/vars",
        data={"csrf_token": csrf, "name": "API_KEY", "value": "abcdefgh1234"},
    )
    c.post("/settings/contexts/deploy/projects", data={"csrf_token": csrf, "project": project})
    contexts = c.get("/settings/contexts").text
    assert "xxxx1234" in contexts
    assert "abcdefgh1234" not in contexts
    (ctx,) = server.svc.accounts.contexts()
    assert ctx.projects == (project,)

    rotated_before = server.svc.accounts.webhook_secret(project)
    c.post(f"/projects/{project}/settings/webhook/rotate", data={"csrf_token": csrf})
    assert server.svc.accounts.webhook_secret(project) != rotated_before
    assert (
        c.post(
            "/settings/users", data={"csrf_token": csrf, "login": "bob", "password": "pw-bob-123"}
        ).status_code
        == 303
    )
    c.post(
        f"/projects/{project}/settings/members",
        data={"csrf_token": csrf, "login": "bob", "role": "viewer"},
    )
    bob = server.svc.accounts.user_by_login("bob")
    assert bob is not None
    assert server.svc.accounts.roles(bob.id) == {project: "viewer"}
