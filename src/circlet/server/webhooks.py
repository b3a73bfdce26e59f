"""Push webhooks from GitHub, GitLab and Gitea: verify, then trigger.

``POST /hooks/{github|gitlab|gitea}/{vcs}/{org}/{repo}``. The signature is
checked over the raw body before anything is parsed or queued: GitHub's
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>``, Gitea's
``X-Gitea-Signature: <hex HMAC-SHA256>``, GitLab's ``X-Gitlab-Token``
(the secret itself). A missing or wrong one is 401 and nothing runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from circlet.server.runs import TriggerRequest
from circlet.server.services import services

router = APIRouter(prefix="/hooks", include_in_schema=False)
PROVIDERS = ("github", "gitlab", "gitea")
ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class Push:
    branch: str | None
    tag: str | None
    revision: str | None
    subject: str | None
    author: str | None
    actor: str


def signature_ok(provider: str, secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether the request carries a valid signature (or token) for ``secret``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if provider == "github":
        sent = headers.get("x-hub-signature-256", "")
        return hmac.compare_digest(sent.encode(), f"sha256={digest}".encode())
    if provider == "gitea":
        sent = headers.get("x-gitea-signature", "") or headers.get("x-gogs-signature", "")
        return hmac.compare_digest(sent.encode(), digest.encode())
    if provider == "gitlab":
        sent = headers.get("x-gitlab-token", "")
        return bool(sent) and hmac.compare_digest(sent.encode(), secret.encode())
    return False


def event_name(provider: str, headers: dict[str, str]) -> str:
    """The forge's event name, normalized: ``push``, ``tag_push``, ``ping``, or other."""
    if provider == "github":
        return headers.get("x-github-event", "")
    if provider == "gitea":
        return headers.get("x-gitea-event", "") or headers.get("x-gogs-event", "")
    raw = headers.get("x-gitlab-event", "")
    return {"Push Hook": "push", "Tag Push Hook": "push"}.get(raw, raw)


def parse_push(provider: str, payload: dict[str, Any]) -> Push | None:
    """The branch or tag, commit and author of a push; None for a deletion."""
    ref = str(payload.get("ref") or "")
    after = str(payload.get("after") or payload.get("checkout_sha") or "") or None
    if after == ZERO_SHA or payload.get("deleted"):
        return None
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    tag = ref.removeprefix("refs/tags/") if ref.startswith("refs/tags/") else None
    head: dict[str, Any] = payload.get("head_commit") or {}
    commits = payload.get("commits") or []
    if not head and commits:
        head = next((c for c in commits if c.get("id") == after), commits[-1])
    message = str(head.get("message") or "")
    author = head.get("author") or {}
    if provider == "gitlab":
        actor = str(payload.get("user_username") or payload.get("user_name") or "")
    else:
        pusher = payload.get("pusher") or payload.get("sender") or {}
        actor = str(pusher.get("login") or pusher.get("name") or pusher.get("username") or "")
    return Push(
        branch=branch,
        tag=tag,
        revision=after,
        subject=message.splitlines()[0] if message else None,
        author=f"{author.get('name', '')} <{author.get('email', '')}>" if author else None,
        actor=actor,
    )


@router.post("/{provider}/{vcs}/{org}/{repo}")
async def receive(request: Request, provider: str, vcs: str, org: str, repo: str) -> JSONResponse:
    """Verify a push webhook and trigger a pipeline for it."""
    if provider not in PROVIDERS:
        raise HTTPException(
            404, f"Unknown webhook provider {provider!r}; one of {', '.join(PROVIDERS)}"
        )
    svc = services(request)
    slug = f"{vcs}/{org}/{repo}"
    secret = svc.accounts.webhook_secret(slug)
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    # Unknown project and bad signature answer the same: nothing to learn by probing.
    if secret is None or not signature_ok(provider, secret, body, headers):
        raise HTTPException(401, "Invalid webhook signature.")
    event = event_name(provider, headers)
    if event == "ping":
        return JSONResponse({"message": "pong"})
    if event != "push":
        return JSONResponse({"message": f"Ignored event {event or '(none)'}."}, status_code=202)
    try:
        payload = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"Payload is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise HTTPException(400, "Payload is not a JSON object.")
    push = parse_push(provider, payload)
    if push is None or (push.branch is None and push.tag is None):
        return JSONResponse(
            {"message": "Ignored: a deletion or not a branch or tag."}, status_code=202
        )
    meta = svc.runs.trigger(
        TriggerRequest(
            project=slug,
            branch=push.branch,
            tag=push.tag,
            revision=push.revision,
            trigger_type="webhook",
            actor=push.actor,
            subject=push.subject,
            author=push.author,
        )
    )
    return JSONResponse(
        {"id": meta.pipeline_id, "number": meta.number, "state": meta.state}, status_code=201
    )
