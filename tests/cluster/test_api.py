"""The fleet API on a real server (uvicorn in this process, PostgreSQL records, the
local blob store): tokens, claims, events, secrets, the blob API and the reaper."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest
import uvicorn
from cluster_helpers import drop_database, free_port, fresh_database
from sqlalchemy import text

from circlet.cluster.client import ApiClient, ServerError
from circlet.cluster.http_blobs import HttpBlobStore
from circlet.cluster.reaper import reap_lost_jobs
from circlet.cluster.server_api import ClusterSettings
from circlet.cluster.store import ClusterStore
from circlet.cluster.tokens import (
    TokenError,
    create_runner_token,
    list_runner_tokens,
    revoke_runner_token,
)
from circlet.cluster.wire import WireError, open_for_runner, request_to_dict
from circlet.engine.environ import BuildIdentity
from circlet.engine.runner import JobRequest
from circlet.plan import ExecutorSpec, JobSpec, RunStep

SECRET = "value-xyz-12345"


@dataclass
class Api:
    url: str
    store: ClusterStore
    token_a: str
    token_b: str

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def api(
    request: pytest.FixtureRequest, services: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """The fleet API on PostgreSQL (a server's database) and on SQLite (the default)."""
    from circlet.cluster.devserver import create_app
    from circlet.store.accounts import SecretBox
    from circlet.store.records import RecordStore

    home = tmp_path_factory.mktemp("api")
    if request.param == "postgresql":
        database_url = fresh_database()
    else:
        database_url = f"sqlite:///{home / 'records.db'}"
    records = RecordStore(database_url)
    store = ClusterStore(records, SecretBox(home / "server-secrets.key"), lease_seconds=5)
    settings = ClusterSettings(lease_seconds=5, heartbeat_seconds=1, work_dir=home / "cluster")
    app = create_app(home, database_url, settings=settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the API server did not start"
        assert thread.is_alive(), "the API server stopped"
        time.sleep(0.02)
    token_a = create_runner_token(records, "api-a", ["acme/a"])
    token_b = create_runner_token(records, "api-b", ["acme/b", "acme/c"])
    try:
        yield Api(f"http://127.0.0.1:{port}", store, token_a, token_b)
    finally:
        server.should_exit = True
        thread.join(15)
        records.close()
        if request.param == "postgresql":
            drop_database(database_url)


def _request(name: str, rc: str, secrets: dict[str, str] | None = None) -> JobRequest:
    spec = JobSpec(
        name=name,
        executor=ExecutorSpec(kind="machine", resource_class=rc),
        steps=(RunStep(name="hi", command="echo hi"),),
        resource_class=rc,
    )
    job_id = os.urandom(8).hex()
    identity = BuildIdentity(
        job_name=name,
        build_num=1,
        project="gh/acme/api",
        pipeline_id="p1",
        workflow_id=f"wf-{job_id}",
        workflow_job_id=job_id,
        working_directory="~/project",
        task_id="0" * 24,
    )
    return JobRequest(spec=spec, identity=identity, job_id=job_id, secrets=secrets or {})


def _enqueue(
    api: Api, rc: str = "acme/a", *, secrets: dict[str, str] | None = None, **kw: Any
) -> str:
    request = _request("job", rc, secrets)
    api.store.enqueue(
        job_id=request.job_id,
        request=request_to_dict(request),
        secrets=request.secrets,
        resource_class=rc,
        queue=f"q:{rc}",
        max_attempts=kw.get("max_attempts", 1),
        owner=kw.get("owner", "test-dispatcher"),
    )
    return request.job_id


def _claimed(api: Api, rc: str = "acme/a") -> str:
    job_id = _enqueue(api, rc)
    token = api.token_a if rc == "acme/a" else api.token_b
    with api.client(token) as c:
        c.post(f"/api/cluster/jobs/{job_id}/claim", json={"attempt": 1}).raise_for_status()
    return job_id


def _event(job_id: str, text_: str, index: int = 2) -> dict[str, Any]:
    return {"kind": "output", "job_id": job_id, "index": index, "text": text_, "at": 1.0}


# ------------------------------------------------------------------ tokens


def test_tokens_are_stored_hashed_bound_to_classes_and_revocable(api: Api) -> None:
    token = create_runner_token(api.store.engine, "short-lived", ["acme/x"])
    with api.store.engine.connect() as conn:
        stored = conn.execute(text("SELECT token_hash FROM cluster_runner_tokens")).scalars().all()
    assert token not in stored
    assert len(stored) >= 3
    names = {t.name: t for t in list_runner_tokens(api.store.engine)}
    assert names["short-lived"].resource_classes == ("acme/x",)
    with pytest.raises(TokenError, match="exists already"):
        create_runner_token(api.store.engine, "short-lived", ["acme/x"])
    with pytest.raises(ValueError, match="not a runner resource class"):
        create_runner_token(api.store.engine, "bad", ["large"])
    with api.client(token) as c:
        ok = c.post("/api/cluster/runners/register", json={"resource_classes": ["acme/x"]})
        assert ok.status_code == 200
        assert ok.json()["name"] == "short-lived"
        wider = c.post(
            "/api/cluster/runners/register", json={"resource_classes": ["acme/x", "acme/a"]}
        )
        assert wider.status_code == 403
        assert "not allowed resource class 'acme/a'" in wider.text
        assert revoke_runner_token(api.store.engine, "short-lived") is True
        assert revoke_runner_token(api.store.engine, "short-lived") is False
        time.sleep(2.1)  # the server's token cache
        gone = c.post("/api/cluster/runners/register", json={"resource_classes": ["acme/x"]})
        assert gone.status_code == 401
    with httpx.Client(base_url=api.url) as anonymous:
        assert anonymous.post("/api/cluster/jobs/x/claim", json={"attempt": 1}).status_code == 401


# ---------------------------------------------------- claims, events, secrets


def test_only_a_runner_of_the_class_gets_the_job_and_its_secrets(api: Api) -> None:
    job_id = _enqueue(api, secrets={"DEPLOY_KEY": SECRET})
    with api.store.engine.connect() as conn:
        row = conn.execute(
            text("SELECT secrets, request FROM cluster_jobs WHERE job_id = :j"), {"j": job_id}
        ).one()
    assert SECRET not in row.secrets
    assert SECRET not in row.request
    with api.client(api.token_b) as b, api.client(api.token_a) as a:
        refused = b.post(f"/api/cluster/jobs/{job_id}/claim", json={"attempt": 1})
        assert refused.status_code == 403
        assert "may not run jobs of resource class 'acme/a'" in refused.text
        claim = a.post(f"/api/cluster/jobs/{job_id}/claim", json={"attempt": 1})
        assert claim.status_code == 200
        sealed = claim.json()["secrets"]
        assert SECRET not in claim.text
        assert open_for_runner(api.token_a, sealed) == {"DEPLOY_KEY": SECRET}
        with pytest.raises(WireError):
            open_for_runner(api.token_b, sealed)
        again = a.post(f"/api/cluster/jobs/{job_id}/claim", json={"attempt": 1})
        assert again.status_code == 409  # a second delivery of the message runs nothing
        intruder = b.post(
            f"/api/cluster/jobs/{job_id}/events",
            json={"attempt": 1, "batch": 1, "events": [_event(job_id, "forged")]},
        )
        assert intruder.status_code == 403
        smuggled = a.post(
            f"/api/cluster/jobs/{job_id}/events",
            json={"attempt": 1, "batch": 1, "events": [_event("other-job", "x")]},
        )
        assert smuggled.status_code == 403


def test_event_batches_are_applied_once_and_in_order(api: Api) -> None:
    job_id = _claimed(api)
    got: list[str] = []
    with api.client(api.token_a) as a:
        post = lambda batch, texts: a.post(  # noqa: E731
            f"/api/cluster/jobs/{job_id}/events",
            json={"attempt": 1, "batch": batch, "events": [_event(job_id, t) for t in texts]},
        )
        assert post(1, ["one\n", "two\n"]).json() == {"stored": True}
        assert post(1, ["one\n", "two\n"]).json() == {"stored": False}  # a resend
        assert post(3, ["four\n"]).status_code == 409  # batch 2 is missing
        assert post(2, ["three\n"]).json() == {"stored": True}
    moved = api.store.forward(job_id, lambda e: got.append(e.text), "test-dispatcher")  # type: ignore[union-attr]
    assert moved == 3
    assert got == ["one\n", "two\n", "three\n"]
    assert api.store.forward(job_id, got.append, "somebody-else") == -1  # not the owner


def test_cancel_travels_in_the_heartbeat_and_a_finished_job_takes_no_more(api: Api) -> None:
    job_id = _claimed(api)
    with api.client(api.token_a) as a:
        beat = lambda: a.post(f"/api/cluster/jobs/{job_id}/heartbeat", json={"attempt": 1})  # noqa: E731
        assert beat().json() == {"cancel": False}
        assert api.store.request_cancel(job_id) == "running"
        assert beat().json() == {"cancel": True}
        done = a.post(
            f"/api/cluster/jobs/{job_id}/finish",
            json={"attempt": 1, "result": {"status": "canceled", "reason": None, "steps": []}},
        )
        assert done.status_code == 200
        late = a.post(
            f"/api/cluster/jobs/{job_id}/events",
            json={"attempt": 1, "batch": 1, "events": [_event(job_id, "late")]},
        )
        assert late.status_code == 409
    assignment = api.store.assignment(job_id)
    assert assignment is not None
    assert (assignment.state, assignment.status, assignment.runner_name) == (
        "done",
        "canceled",
        "api-a",
    )


def test_a_queued_job_canceled_before_any_runner_took_it_is_never_claimed(api: Api) -> None:
    job_id = _enqueue(api)
    assert api.store.request_cancel(job_id) == "done"
    with api.client(api.token_a) as a:
        assert a.post(f"/api/cluster/jobs/{job_id}/claim", json={"attempt": 1}).status_code == 409


# ------------------------------------------------------------------ reaper


def test_reaper_fails_a_silent_job_as_runner_lost_or_retries_it_once(api: Api) -> None:
    job_id = _claimed(api)
    with api.client(api.token_a) as a:
        a.post(
            f"/api/cluster/jobs/{job_id}/events",
            json={
                "attempt": 1,
                "batch": 1,
                "events": [
                    {
                        "kind": "step_started",
                        "job_id": job_id,
                        "index": 2,
                        "name": "hi",
                        "step_type": "run",
                        "at": 1.0,
                    },
                    _event(job_id, "half a log\n"),
                ],
            },
        ).raise_for_status()
    assert reap_lost_jobs(api.store, time.time()) == []  # the lease still holds
    changed = reap_lost_jobs(api.store, time.time() + 60)
    assert (job_id, "done") in changed
    events: list[Any] = []
    api.store.forward(job_id, events.append, "test-dispatcher")
    kinds = [(e.kind, getattr(e, "status", None)) for e in events]
    assert kinds[-3:] == [("output", None), ("step_finished", "failed"), ("job_finished", "failed")]
    assert events[-1].reason == "runner lost"
    assert events[1].text == "half a log\n"  # the partial log stays

    retried = _enqueue(api, max_attempts=2)
    with api.client(api.token_a) as a:
        a.post(f"/api/cluster/jobs/{retried}/claim", json={"attempt": 1}).raise_for_status()
    api.store.touch_owner("test-dispatcher", [retried])
    assert (retried, "retry") in reap_lost_jobs(api.store, time.time() + 6)
    assert api.store.requeue(retried) == (2, f"{retried}.2")
    with api.client(api.token_a) as a:
        stale = a.post(f"/api/cluster/jobs/{retried}/heartbeat", json={"attempt": 1})
        assert stale.status_code == 403  # the first attempt's runner is out
        assert a.post(f"/api/cluster/jobs/{retried}/claim", json={"attempt": 2}).status_code == 200


# --------------------------------------------------------------- blob API


def test_blobs_upload_resumably_download_by_range_and_are_checksummed(api: Api) -> None:
    job_id = _claimed(api)
    with HttpBlobStore(api.url, api.token_a, job_id=job_id) as blobs:
        _blob_checks(api, blobs, job_id)


def _blob_checks(api: Api, blobs: HttpBlobStore, job_id: str) -> None:
    data = os.urandom(9 << 20)  # more than one upload piece
    digest = str(blake3.blake3(data).hexdigest())
    headers = {"X-Circlet-Job": job_id}
    with api.client(api.token_a) as a:
        first = a.patch(
            f"/api/cluster/uploads/{digest}",
            params={"offset": 0},
            content=data[:1000],
            headers=headers,
        )
        assert first.status_code == 204  # a transfer that broke after 1000 bytes
        wrong = a.patch(
            f"/api/cluster/uploads/{digest}", params={"offset": 5}, content=b"x", headers=headers
        )
        assert wrong.status_code == 409
        assert wrong.headers["Upload-Offset"] == "1000"
        assert blobs.put_blob(io.BytesIO(data)) == (digest, len(data))  # resumes at 1000
        assert blobs.has_blob(digest)
        with blobs.open_blob(digest) as fh:
            assert fh.read() == data
        part = a.get(f"/api/cluster/blobs/{digest}", headers={**headers, "Range": "bytes=5-9"})
        assert part.status_code == 206
        assert part.content == data[5:10]

        fake = str(blake3.blake3(b"what I claim").hexdigest())
        a.patch(
            f"/api/cluster/uploads/{fake}",
            params={"offset": 0},
            content=b"what I send",
            headers=headers,
        ).raise_for_status()
        bad = a.post(f"/api/cluster/uploads/{fake}/blob", headers=headers)
        assert bad.status_code == 422
        assert "checksum mismatch" in bad.text
        assert not blobs.has_blob(fake)

        no_job = a.head(f"/api/cluster/blobs/{digest}")
        assert no_job.status_code == 403
    with api.client(api.token_b) as b:
        other = b.head(f"/api/cluster/blobs/{digest}", headers=headers)
        assert other.status_code == 403  # a job of runner a


def test_trees_travel_as_checked_archives_within_the_jobs_namespaces(
    api: Api, tmp_path: Path
) -> None:
    job_id = _claimed(api)
    client = ApiClient(api.url, api.token_a)
    try:
        _tree_checks(HttpBlobStore(client, job_id=job_id), job_id, tmp_path)
    finally:
        client.close()


def _tree_checks(blobs: HttpBlobStore, job_id: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "deps" / "sub").mkdir(parents=True)
    (src / "deps" / "lib.txt").write_text("library\n")
    (src / "deps" / "sub" / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (src / "deps" / "sub" / "tool.sh").chmod(0o755)
    (src / "deps" / "link").symlink_to("lib.txt")
    ns = "cache/gh/acme/api"
    entry = blobs.put_tree(ns, "deps-v1-abc", src, ["deps"], meta={"build_num": 7})
    assert (entry.files, entry.meta["build_num"]) == (2, 7)
    assert blobs.put_tree(ns, "deps-v1-abc", tmp_path, ["."]) == entry  # caches are immutable
    assert blobs.get_tree(ns, "deps-v1-abc") == entry
    assert blobs.find_tree(ns, "deps-v1") == entry
    assert blobs.find_tree(ns, "nothing-") is None
    assert [e.key for e in blobs.list_trees(ns)] == ["deps-v1-abc"]
    target = tmp_path / "restored"
    stats = blobs.restore_tree(entry, target)
    assert stats.files == 2
    assert (target / "deps" / "lib.txt").read_text() == "library\n"
    assert os.access(target / "deps" / "sub" / "tool.sh", os.X_OK)
    assert os.readlink(target / "deps" / "link") == "lib.txt"
    workspace = f"workspace/wf-{job_id}"
    assert blobs.put_tree(workspace, "job/0/4", src, ["deps/lib.txt"]).files == 1
    with pytest.raises(ServerError) as refused:
        blobs.get_tree("cache/gh/someone/else", "deps-v1-abc")
    assert refused.value.status == 403
    assert blobs.delete_tree(ns, "deps-v1-abc") is True
    assert blobs.get_tree(ns, "deps-v1-abc") is None


def test_wire_requests_carry_no_secrets(api: Api) -> None:
    request = _request("job", "acme/a", {"K": SECRET})
    assert SECRET not in json.dumps(request_to_dict(request))


def test_runner_command_refuses_bad_tokens_and_classes_in_one_line(api: Api) -> None:
    from click.testing import CliRunner

    from circlet.cli.runner_cmd import command

    cases = [
        (["--token", "crt_not-a-token", "--resource-class", "acme/a"], "Unknown or revoked"),
        (["--token", api.token_a, "--resource-class", "acme/b"], "not allowed resource class"),
        (["--token", api.token_a, "--resource-class", "medium"], "not a runner resource class"),
    ]
    for args, why in cases:
        result = CliRunner().invoke(command, ["--server", api.url, "--broker", "redis://x", *args])
        assert result.exit_code == 2, result.output
        assert why in result.output
        assert result.output.count("\n") == 1  # one line, no traceback
