"""Cancel through the API cancels only that workflow of a pipeline with several."""

from __future__ import annotations

import time
from pathlib import Path

from server_helpers import DATA, Server, make_repo


def test_cancel_one_workflow_leaves_the_other_running(
    server: Server, tmp_path: Path, admin_token: str
) -> None:
    repo = make_repo(DATA / "twoflows", tmp_path / "twoflows")
    server.svc.accounts.add_project("circlet/acme/twoflows", str(repo), kind="path")
    api = server.api(admin_token)
    pid = api.post("/project/circlet/acme/twoflows/pipeline", json={}).json()["id"]
    deadline = time.monotonic() + 30
    one = None
    while time.monotonic() < deadline:
        flows = {w["name"]: w for w in api.get(f"/pipeline/{pid}/workflow").json()["items"]}
        if len(flows) == 2 and flows["one"]["status"] == "running":
            one = flows["one"]
            break
        time.sleep(0.1)
    assert one is not None, "workflow one never started"
    assert api.post(f"/workflow/{one['id']}/cancel").status_code == 202
    workflows = {w["name"]: w for w in server.wait_pipeline(api, pid)}
    assert workflows["one"]["status"] == "canceled"
    assert workflows["two"]["status"] == "success"
