"""Push webhooks: signatures verified before anything is queued."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess

from server_helpers import Server


def _sha(repo: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def _payload(sha: str) -> bytes:
    return json.dumps(
        {
            "ref": "refs/heads/main",
            "after": sha,
            "head_commit": {
                "id": sha,
                "message": "push for home\n\nbody",
                "author": {"name": "Ada", "email": "ada@example.com"},
            },
            "pusher": {"name": "ada"},
            "commits": [],
        }
    ).encode()


def _queued(server: Server, project: str) -> int:
    return len(server.svc.accounts.pending_triggers(project)) + len(
        server.svc.records.list_pipelines(project=project)
    )


def test_github_signature_good_and_bad(server: Server, project: str, tiny_repo) -> None:  # type: ignore[no-untyped-def]
    secret = server.svc.accounts.webhook_secret(project)
    assert secret
    body = _payload(_sha(str(tiny_repo)))
    url = f"/hooks/github/{project}"
    c = server.client()
    bad = c.post(
        url,
        content=body,
        headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64},
    )
    assert bad.status_code == 401
    missing = c.post(url, content=body, headers={"X-GitHub-Event": "push"})
    assert missing.status_code == 401
    assert _queued(server, project) == 0
    good = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    ok = c.post(
        url,
        content=body,
        headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={good}"},
    )
    assert ok.status_code == 201
    server.svc.runs.wait_idle(60)
    (pipeline,) = server.svc.records.list_pipelines(project=project)
    meta = server.svc.accounts.pipeline_meta([pipeline.id])[pipeline.id]
    assert (meta.trigger_type, meta.branch, meta.subject, meta.actor) == (
        "webhook",
        "main",
        "push for home",
        "ada",
    )
    assert pipeline.revision == _sha(str(tiny_repo))
    assert pipeline.status == "success"


def test_gitlab_token_and_gitea_signature(server: Server, project: str, tiny_repo) -> None:  # type: ignore[no-untyped-def]
    secret = server.svc.accounts.webhook_secret(project)
    assert secret
    body = _payload(_sha(str(tiny_repo)))
    c = server.client()
    assert (
        c.post(
            f"/hooks/gitlab/{project}",
            content=body,
            headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "wrong"},
        ).status_code
        == 401
    )
    assert (
        c.post(
            f"/hooks/gitea/{project}",
            content=body,
            headers={"X-Gitea-Event": "push", "X-Gitea-Signature": "beef"},
        ).status_code
        == 401
    )
    assert _queued(server, project) == 0
    gitlab = c.post(
        f"/hooks/gitlab/{project}",
        content=body,
        headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret},
    )
    assert gitlab.status_code == 201
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    gitea = c.post(
        f"/hooks/gitea/{project}",
        content=body,
        headers={"X-Gitea-Event": "push", "X-Gitea-Signature": sig},
    )
    assert gitea.status_code == 201
    server.svc.runs.wait_idle(60)
    assert len(server.svc.records.list_pipelines(project=project)) == 2


def test_unknown_project_deletions_and_pings(server: Server, project: str) -> None:
    secret = server.svc.accounts.webhook_secret(project)
    assert secret
    c = server.client()
    body = json.dumps({"ref": "refs/heads/gone", "after": "0" * 40, "deleted": True}).encode()
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    deleted = c.post(
        f"/hooks/github/{project}",
        content=body,
        headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sig},
    )
    assert deleted.status_code == 202
    ping = c.post(
        f"/hooks/github/{project}",
        content=body,
        headers={"X-GitHub-Event": "ping", "X-Hub-Signature-256": sig},
    )
    assert ping.json() == {"message": "pong"}
    unknown = c.post(
        "/hooks/github/gh/nobody/nothing",
        content=body,
        headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sig},
    )
    assert unknown.status_code == 401
    assert _queued(server, project) == 0
