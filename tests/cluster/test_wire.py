"""What crosses the wire: every event kind survives JSON, requests lose their
secrets, resource classes map to queues, secrets open only with their token."""

from __future__ import annotations

import json

import pytest

from circlet.cluster.wire import (
    EVENT_TYPES,
    WireError,
    check_class,
    event_from_dict,
    event_to_dict,
    open_for_runner,
    queue_name,
    request_from_dict,
    request_to_dict,
    runner_class,
    seal_for_runner,
)
from circlet.engine import events as ev
from circlet.engine.environ import BuildIdentity
from circlet.engine.runner import JobRequest
from circlet.plan import DockerImage, ExecutorSpec, JobSpec, RunStep, SaveCacheStep

EXAMPLES: list[ev.Event] = [
    ev.PipelineStarted("p", 3, "gh/a/b", "main", "abc", "api", "version: 2.1"),
    ev.PipelineFinished("p", "success"),
    ev.WorkflowStarted("p", "w", "main", ({"name": "a", "requires": [], "type": "build"},)),
    ev.WorkflowFinished("w", "failed"),
    ev.JobStatusChanged("w", "j", "a", "blocked", "waiting"),
    ev.JobStarted("w", "j", "a", 7, 1, 2, "host"),
    ev.JobFinished("j", "infrastructure_fail", "runner lost"),
    ev.StepStarted("j", 2, "Build", "run", "#!/bin/bash\nmake", True),
    ev.Output("j", 2, "héllo\n"),
    ev.StepFinished("j", 2, "timedout", None, "no output"),
    ev.TestsRecorded("j", ({"name": "t", "result": "success"},)),
    ev.ArtifactStored("j", "out/a.txt", "0" * 64, 12, 1),
]


def test_every_event_kind_survives_json() -> None:
    assert {e.kind for e in EXAMPLES} == set(EVENT_TYPES)
    for event in EXAMPLES:
        assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


@pytest.mark.parametrize(
    "data",
    [{"kind": "nope"}, {"kind": "output", "job_id": "j"}, {"text": "no kind"}],
)
def test_malformed_events_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(WireError):
        event_from_dict(data)


def _request() -> JobRequest:
    spec = JobSpec(
        name="build",
        executor=ExecutorSpec(
            kind="docker",
            images=(DockerImage("cimg/base:stable", environment={"A": "1"}),),
            resource_class="acme/big",
        ),
        steps=(RunStep(name="make", command="make"), SaveCacheStep("k-{{ .Branch }}", ("x",))),
        environment={"PLAIN": "yes"},
    )
    identity = BuildIdentity(
        job_name="build",
        build_num=4,
        project="gh/acme/app",
        pipeline_id="p",
        workflow_id="w",
        workflow_job_id="j",
        working_directory="~/project",
        task_id="a" * 24,
        branch="main",
    )
    return JobRequest(
        spec=spec,
        identity=identity,
        job_id="j",
        secrets={"TOKEN": "very-secret"},
        commit="c0ffee",
        upstream=("lint",),
        extra={"ok": 1, "not_json": object()},
    )


def test_requests_travel_without_secrets_and_come_back_whole() -> None:
    request = _request()
    data = json.loads(json.dumps(request_to_dict(request, repo_bundle="d" * 64)))
    assert "very-secret" not in json.dumps(data)
    assert data["repo_bundle"] == "d" * 64
    back = request_from_dict(data, {"TOKEN": "very-secret"})
    assert back.spec == request.spec
    assert back.identity == request.identity
    assert (back.job_id, back.commit, back.upstream) == ("j", "c0ffee", ("lint",))
    assert back.secrets == {"TOKEN": "very-secret"}
    assert back.extra == {"ok": 1}  # what cannot cross a process boundary stays behind


def test_runner_classes_name_queues() -> None:
    request = _request()
    assert runner_class(request.spec) == "acme/big"  # from the executor
    plain = JobSpec(name="x", executor=ExecutorSpec(kind="docker", resource_class="large"))
    assert runner_class(plain) is None  # a cloud size, not a runner class: runs locally
    assert queue_name("circlet", "acme/big") == "circlet:acme/big"
    assert check_class("default") == "default"
    with pytest.raises(ValueError, match="namespace/name"):
        check_class("acme")


def test_secrets_open_only_with_the_token_they_were_sealed_for() -> None:
    sealed = seal_for_runner("crt_one", {"KEY_NAME": "value"})
    assert "KEY_NAME" not in sealed
    assert "value" not in sealed
    assert open_for_runner("crt_one", sealed) == {"KEY_NAME": "value"}
    with pytest.raises(WireError, match="not sealed for this runner"):
        open_for_runner("crt_two", sealed)
