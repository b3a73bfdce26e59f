"""schemathesis against the published OpenAPI schema: no answer is a 5xx."""

from __future__ import annotations

import pytest
from server_helpers import Server

schemathesis = pytest.importorskip("schemathesis")


def test_no_server_errors_for_generated_requests(
    server: Server, project: str, admin_token: str
) -> None:
    api = server.api(admin_token)
    pid = api.post(f"/project/{project}/pipeline", json={}).json()["id"]
    server.wait_pipeline(api, pid)
    schema = schemathesis.openapi.from_url(f"{server.base}/api/v2/openapi.json")
    from hypothesis import HealthCheck, Phase, given, settings

    failures: list[str] = []
    checked = 0
    for op in schema.get_all_operations():
        operation = op.ok()
        if operation.method.upper() == "POST" and "pipeline" in operation.path:
            continue  # each example would start a real pipeline; covered by the API tests

        @settings(
            max_examples=8,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def run(case) -> None:  # type: ignore[no-untyped-def]
            nonlocal checked
            response = case.call(headers={"Circle-Token": admin_token})
            checked += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

        run()
    server.svc.runs.wait_idle(60)
    assert checked >= 40
    assert failures == []
