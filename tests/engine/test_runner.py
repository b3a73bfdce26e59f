"""The JobRunner on the real host executor: step order, ``when``, halt, background
steps, cancel, masking, per-job files, and failures of our own."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import NoSharedStaging, StopFails

from circlet.engine import events as ev
from circlet.engine.masking import MASK
from circlet.executors.host import HostExecutor
from circlet.plan import DockerImage, ExecutorSpec, JobSpec, RunStep

RunJob = Callable[..., Any]  # the run_job fixture (conftest.py)

FIXED = ["Spin up environment", "Preparing environment variables"]


def test_steps_in_display_order(run_job: RunJob) -> None:
    runner, sink = run_job((RunStep(name="a", command="echo a"), RunStep(name="b", command="true")))
    started = sink.of(ev.StepStarted)
    assert [(e.index, e.name) for e in started] == [
        (0, "Spin up environment"),
        (1, "Preparing environment variables"),
        (2, "a"),
        (3, "b"),
    ]
    assert started[2].command == "#!/bin/bash -eo pipefail\necho a"
    assert isinstance(sink.events[0], ev.JobStarted)
    assert sink.events[0].executor == "host"
    assert isinstance(sink.events[-1], ev.JobFinished)
    assert runner.result.status == "success"
    assert "Running on this machine" in sink.output("Spin up environment")
    assert "CIRCLE_BUILD_NUM=7" in sink.output("Preparing environment variables")


def test_when_semantics(run_job: RunJob) -> None:
    steps = (
        RunStep(name="ok", command="true"),
        RunStep(name="on_fail before failure", command="true", when="on_fail"),
        RunStep(name="boom", command="exit 2"),
        RunStep(name="after", command="echo should not run"),
        RunStep(name="always", command="echo cleanup", when="always"),
        RunStep(name="on_fail", command="echo report", when="on_fail"),
    )
    runner, sink = run_job(steps)
    assert sink.steps() == {
        **dict.fromkeys(FIXED, "success"),
        "ok": "success",
        "on_fail before failure": "skipped",
        "boom": "failed",
        "after": "skipped",
        "always": "success",
        "on_fail": "success",
    }
    assert "should not run" not in sink.output()
    assert runner.result.status == "failed"
    assert runner.result.reason == "boom: Exited with code exit status 2"


def test_halt_ends_the_job_successfully(run_job: RunJob) -> None:
    steps = (
        RunStep(name="check", command="echo nothing to do; circleci-agent step halt"),
        RunStep(name="never", command="echo never"),
        RunStep(name="never always", command="echo never", when="always"),
    )
    runner, sink = run_job(steps)
    assert runner.result.status == "success"
    assert sink.steps()["check"] == "success"
    assert sink.steps()["never"] == "skipped"
    assert sink.steps()["never always"] == "skipped"
    assert "never" not in sink.output()


def test_background_step_runs_alongside_and_is_stopped(run_job: RunJob, tmp_path: Path) -> None:
    marker = tmp_path / "served"
    steps = (
        RunStep(
            name="server",
            command=f"echo serving; touch {marker}; sleep 60",
            background=True,
        ),
        RunStep(
            name="client",
            command=f"for i in $(seq 50); do [ -e {marker} ] && break; "
            "sleep 0.1; done; test -e " + str(marker),
        ),
    )
    t0 = time.monotonic()
    runner, sink = run_job(steps)
    assert time.monotonic() - t0 < 20  # the sleeping server did not hold the job
    assert runner.result.status == "success"
    assert sink.steps()["client"] == "success"
    assert sink.steps()["server"] == "success"  # stopped by us: not a failure
    assert "serving" in sink.output("server")
    started = {e.name: e for e in sink.of(ev.StepStarted)}
    assert started["server"].background


def test_failing_background_step_does_not_fail_the_job(run_job: RunJob) -> None:
    steps = (
        RunStep(name="bg", command="exit 3", background=True),
        RunStep(name="fg", command="sleep 0.5"),
    )
    runner, sink = run_job(steps)
    assert sink.steps()["bg"] == "failed"
    assert runner.result.status == "success"


def test_cancel_kills_the_running_step(run_job: RunJob) -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.7, cancel.set)
    timer.start()
    try:
        t0 = time.monotonic()
        runner, sink = run_job(
            (
                RunStep(name="long", command="echo started; sleep 60"),
                RunStep(name="later", command="true", when="always"),
            ),
            cancel=cancel,
        )
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 15
    assert runner.result.status == "canceled"
    assert sink.steps()["long"] == "canceled"
    assert sink.steps()["later"] == "skipped"


def test_secrets_masked_everywhere(run_job: RunJob) -> None:
    secret = "sup3r-s3cret-value"
    steps = (
        RunStep(name="echo", command='echo "token: $TOKEN"; echo "$TOKEN" >&2'),
        RunStep(name="split", command="printf '%s' sup3r-s3; sleep 0.2; printf '%s\\n' cret-value"),
        RunStep(name=f"named {secret}", command=f"exit 1  # {secret}"),
    )
    runner, sink = run_job(steps, secrets={"TOKEN": secret})
    everything = repr(sink.events)
    assert secret not in everything
    assert f"token: {MASK}" in sink.output("echo")
    assert MASK in sink.output("split")
    assert "TOKEN=**REDACTED**" in sink.output("Preparing environment variables")
    assert secret not in repr(runner.result)


def test_parallel_copy_sees_its_node(run_job: RunJob) -> None:
    _, sink = run_job(
        (RunStep(name="node", command="echo $CIRCLE_NODE_INDEX/$CIRCLE_NODE_TOTAL"),),
        node_index=2,
        node_total=3,
    )
    assert "2/3" in sink.output("node")
    started = sink.of(ev.JobStarted)[0]
    assert (started.node_index, started.node_total) == (2, 3)


class _Timings:
    """A records reader with known timings (RecordStore's query is tested in tests/store)."""

    def test_timing_table(self, project: str, job_name: str) -> dict[str, dict[str, float]]:
        assert (project, job_name) == ("local/demo", "build")
        return {"filename": {"tests/test_a.py": 3.5}, "classname": {}, "testname": {}}

    def test_timings(self, project: str, job_name: str) -> dict[str, float]:
        return {}

    def next_build_num(self, project: str) -> int:
        return 1

    def next_pipeline_number(self, project: str) -> int:
        return 1


def test_per_job_files(run_job: RunJob) -> None:
    steps = (
        RunStep(name="files", command='test -f "$BASH_ENV" && cat "$CIRCLET_TIMINGS_FILE"'),
        RunStep(name="where", command='echo "$BASH_ENV $CIRCLE_INTERNAL_TASK_DATA"'),
    )
    _, sink = run_job(steps, records=_Timings())
    timings = json.loads(sink.output("files").strip())
    assert timings["filename"] == {"tests/test_a.py": 3.5}
    bash_env, task_data = sink.output("where").split()
    assert not os.path.exists(bash_env)  # cleaned up: host /tmp is shared
    assert not os.path.exists(task_data)


def test_spin_up_failure_is_an_infrastructure_fail(run_job: RunJob, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the job directories should go")
    broken = HostExecutor(blocker / "work", ca_bundle="")
    runner, sink = run_job((RunStep(name="x", command="true"),), executor=broken)
    assert runner.result.status == "infrastructure_fail"
    assert runner.result.reason is not None
    assert "cannot create the job directory" in runner.result.reason
    assert sink.steps() == {"Spin up environment": "failed"}
    assert sink.of(ev.JobFinished)[0].status == "infrastructure_fail"


def test_environment_is_stopped(run_job: RunJob, tmp_path: Path) -> None:
    run_job((RunStep(name="x", command="echo hi > ~/file"),))
    assert list((tmp_path / "work").iterdir()) == []  # the job directory is gone


class _BrokenRecords(_Timings):
    def test_timing_table(self, project: str, job_name: str) -> dict[str, dict[str, float]]:
        raise OSError("database is locked")


def test_our_own_failure_ends_the_running_step(run_job: RunJob, tmp_path: Path) -> None:
    runner, sink = run_job((RunStep(name="x", command="true"),), records=_BrokenRecords())
    assert runner.result.status == "infrastructure_fail"
    assert runner.result.reason == "OSError: database is locked"
    assert sink.steps() == {
        "Spin up environment": "success",
        "Preparing environment variables": "failed",
    }
    assert "circlet: OSError: database is locked" in sink.output("Preparing environment variables")
    assert list((tmp_path / "work").iterdir()) == []  # stopped all the same


# ----------------------------------------------------------- staging and halt


HALT_STEPS = (
    RunStep(name="where", command='echo "flag=$CIRCLET_HALT_FILE"; circleci-agent step halt'),
    RunStep(name="never", command="echo never"),
)


def _flag(sink: Any) -> str:
    return str(sink.output("where").split("flag=")[1].split()[0])


def test_halt_flag_is_in_the_shared_staging_dir(run_job: RunJob, tmp_path: Path) -> None:
    runner, sink = run_job(HALT_STEPS)
    assert runner.result.status == "success"
    assert sink.steps()["never"] == "skipped"
    flag = Path(_flag(sink))
    # In the host executor's staging directory (looked for with a stat on the host),
    # not in the task-data directory inside the job.
    assert (tmp_path / "work").resolve() in flag.resolve().parents
    assert not str(flag).startswith("/tmp/.circleci-task-data")
    assert not flag.exists()  # removed with the job


def test_staging_root_is_created_when_there_is_no_shared_dir(
    run_job: RunJob, host_executor: HostExecutor, tmp_path: Path
) -> None:
    root = tmp_path / "not" / "yet" / "there"
    runner, sink = run_job(HALT_STEPS, executor=NoSharedStaging(host_executor), staging_root=root)
    assert runner.result.status == "success", runner.result.reason
    assert sink.steps()["never"] == "skipped"  # the flag copied out into the job's staging dir
    assert _flag(sink).startswith("/tmp/.circleci-task-data-")  # stays inside the job
    assert root.is_dir()
    assert list(root.iterdir()) == []  # the job's own directory is gone


def test_unusable_staging_root_fails_the_spin_up(
    run_job: RunJob, host_executor: HostExecutor, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    runner, sink = run_job(
        (RunStep(name="x", command="true"),),
        executor=NoSharedStaging(host_executor),
        staging_root=blocker / "staging",
    )
    assert runner.result.status == "infrastructure_fail"
    assert "cannot create the job's staging directory" in (runner.result.reason or "")
    assert sink.steps() == {"Spin up environment": "failed"}
    assert [e.status for e in sink.of(ev.JobFinished)] == ["infrastructure_fail"]
    assert list((tmp_path / "work").iterdir()) == []  # the environment was stopped


def test_a_failing_teardown_still_finishes_the_job(
    run_job: RunJob, agent_bin: Path, tmp_path: Path
) -> None:
    executor = StopFails(tmp_path / "work", agent_bin=agent_bin, ca_bundle="")
    runner, sink = run_job((RunStep(name="x", command="true"),), executor=executor)
    assert runner.result.status == "infrastructure_fail"
    assert runner.result.reason == "RuntimeError: the engine went away while removing the job"
    assert sink.steps()["x"] == "success"
    finished = sink.of(ev.JobFinished)
    assert [e.status for e in finished] == ["infrastructure_fail"]
    assert isinstance(sink.events[-1], ev.JobFinished)


@pytest.mark.docker
@pytest.mark.parametrize(
    ("image", "shared"),
    [("circlet/debian-python:bookworm", True), ("circlet/cimg-python:3.11", False)],
)
def test_halt_on_docker(run_job: RunJob, agent_bin: Path, image: str, shared: bool) -> None:
    """Root in the container can write into the shared staging directory: the flag
    is looked for on the host. The ``circleci`` user cannot enter it (0700): the
    flag stays in the task-data directory inside."""
    from circlet.executors.docker import DockerExecutor

    executor = DockerExecutor(agent_bin=agent_bin, ca_bundle="")
    spec = JobSpec("build", ExecutorSpec(kind="docker", images=(DockerImage(image),)), HALT_STEPS)
    runner, sink = run_job(spec, executor=executor)
    assert runner.result.status == "success", runner.result.reason
    assert sink.steps()["never"] == "skipped"
    details = sink.output("Spin up environment")
    assert "never" not in sink.output()
    flag = _flag(sink)
    assert flag.startswith("/tmp/.circleci-task-data-") is not shared, (flag, details)
