"""Accounts: password login, sessions with CSRF, API tokens, roles, public
projects, and secrets encrypted at rest."""

from __future__ import annotations

import base64

import pytest
from server_helpers import Server, csrf_of, login


def test_wrong_password_is_refused(server: Server) -> None:
    c = server.client()
    page = c.get("/login")
    answer = c.post(
        "/login", data={"login": "admin", "password": "nope", "csrf_token": csrf_of(page.text)}
    )
    assert answer.status_code == 401
    assert "Wrong login or password" in answer.text
    assert "circlet_session" not in answer.cookies


def test_login_form_needs_its_csrf_token(server: Server) -> None:
    c = server.client()
    c.get("/login")
    answer = c.post(
        "/login", data={"login": "admin", "password": "admin-password-1", "csrf_token": "x"}
    )
    assert answer.status_code == 403


def test_every_form_post_checks_csrf(server: Server, project: str) -> None:
    c = server.client()
    csrf = login(c)
    without = c.post(
        f"/projects/{project}/settings/env", data={"name": "TOKEN", "value": "s3cret-value"}
    )
    assert without.status_code == 403
    forged = c.post(
        f"/projects/{project}/settings/env",
        data={"name": "TOKEN", "value": "s3cret-value", "csrf_token": "forged"},
    )
    assert forged.status_code == 403
    assert server.svc.accounts.env_vars(project) == []
    ok = c.post(
        f"/projects/{project}/settings/env",
        data={"name": "TOKEN", "value": "s3cret-value", "csrf_token": csrf},
    )
    assert ok.status_code == 303
    page = c.get(f"/projects/{project}/settings")
    assert "xxxxalue" in page.text  # masked, CircleCI style
    assert "s3cret-value" not in page.text


def test_session_api_calls_need_the_csrf_header(server: Server, project: str) -> None:
    c = server.client()
    csrf = login(c)
    bare = c.post(f"/api/v2/project/{project}/pipeline", json={})
    assert bare.status_code == 403
    ok = c.post(f"/api/v2/project/{project}/pipeline", json={}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201
    server.svc.runs.wait_idle(60)


def test_roles_decide_who_reads_and_who_acts(server: Server, project: str) -> None:
    accounts = server.svc.accounts
    viewer = accounts.create_user("vera", "vera-password")
    member = accounts.create_user("max", "max-password")
    accounts.create_user("olga", "olga-password")  # no role at all
    accounts.set_role(project, viewer.id, "viewer")
    accounts.set_role(project, member.id, "member")
    tokens = {
        u: accounts.create_token(accounts.user_by_login(u).id, "t")[0]
        for u in ("vera", "max", "olga")
    }  # type: ignore[union-attr]

    def trigger(user: str) -> int:
        return server.api(tokens[user]).post(f"/project/{project}/pipeline", json={}).status_code

    assert server.api(tokens["vera"]).get(f"/project/{project}/pipeline").status_code == 200
    assert trigger("vera") == 403
    assert trigger("olga") == 404  # may not even know it exists
    assert trigger("max") == 201
    assert server.api(tokens["olga"]).get(f"/project/{project}/pipeline").status_code == 404
    # Settings are for project admins only.
    c = server.client()
    login(c, "max", "max-password")
    assert c.get(f"/projects/{project}/settings").status_code == 403
    server.svc.runs.wait_idle(60)


def test_anonymous_sees_public_projects_only(
    server: Server, project: str, admin_token: str
) -> None:
    api = server.api(admin_token)
    pid = api.post(f"/project/{project}/pipeline", json={}).json()["id"]
    server.wait_pipeline(api, pid)
    anon = server.client()
    assert anon.get(f"/api/v2/project/{project}/pipeline").status_code == 404
    assert anon.get(f"/api/v2/pipeline/{pid}").status_code == 404
    assert "tiny" not in anon.get("/").text
    assert anon.get("/api/v2/me").status_code == 401
    assert anon.post(f"/api/v2/project/{project}/pipeline", json={}).status_code == 404
    server.svc.accounts.update_project(project, public=True)
    listed = anon.get(f"/api/v2/project/{project}/pipeline").json()["items"]
    assert [p["id"] for p in listed] == [pid]
    assert "tiny" in anon.get("/").text
    assert anon.post(f"/api/v2/project/{project}/pipeline", json={}).status_code == 401


def test_token_in_basic_auth_and_revocation(server: Server, admin_token: str) -> None:
    basic = base64.b64encode(f"{admin_token}:".encode()).decode()
    c = server.client(headers={"Authorization": f"Basic {basic}"})
    assert c.get("/api/v2/me").json()["login"] == "admin"
    user = server.svc.accounts.user_by_login("admin")
    assert user is not None
    (token,) = server.svc.accounts.tokens(user.id)
    assert server.svc.accounts.delete_token(user.id, token.id)
    assert c.get("/api/v2/me").status_code == 401


def test_secrets_are_encrypted_at_rest(server: Server, project: str) -> None:
    accounts = server.svc.accounts
    accounts.set_env_var(project, "DEPLOY_KEY", "very-secret-deploy-key")
    accounts.create_context("prod")
    accounts.set_context_var("prod", "AWS_SECRET", "context-secret-value")
    server.svc.records.flush()
    raw = b"".join(p.read_bytes() for p in server.home.glob("circlet.db*"))
    assert b"very-secret-deploy-key" not in raw
    assert b"context-secret-value" not in raw
    assert accounts.env_values(project) == {"DEPLOY_KEY": "very-secret-deploy-key"}
    assert accounts.context_values("prod", project) == {"AWS_SECRET": "context-secret-value"}
    accounts.set_context_projects("prod", ["gh/other/repo"])
    with pytest.raises(PermissionError, match="may not use context"):
        accounts.context_values("prod", project)
