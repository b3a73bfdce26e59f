"""The ``run`` step on the real host executor: shells, directories, environment,
exit codes and timeouts printed as CircleCI prints them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from circlet.engine.steps.run import go_duration, header, run_argv
from circlet.plan import DockerImage, ExecutorSpec, JobSpec, RunStep

PY_IMAGE = ExecutorSpec(kind="docker", images=(DockerImage("cimg/python:3.11"),))
RunJob = Callable[..., Any]  # the run_job fixture of tests/engine/conftest.py


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(600, "10m0s"), (1, "1s"), (90, "1m30s"), (3600, "1h0m0s"), (1.5, "1.5s"), (0.25, "250ms")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_header_like_circleci() -> None:
    assert header("/bin/bash -eo pipefail", "pipenv install\n") == (
        "#!/bin/bash -eo pipefail\npipenv install"
    )


def test_big_command_goes_through_stdin() -> None:
    argv, stdin = run_argv("/bin/bash -eo pipefail", "/tmp/s.sh", "/w", "echo x\n" * 20_000)
    assert stdin is not None
    assert stdin.startswith(b"echo x")
    assert argv[-3:] == ["/bin/bash", "-eo", "pipefail"]


def test_multiline_and_errexit(run_job: RunJob) -> None:
    step = RunStep(name="multi", command="echo one\nfalse\necho never")
    _, sink = run_job((step,))
    assert sink.steps()["multi"] == "failed"
    out = sink.output("multi")
    assert "one" in out
    assert "never" not in out  # -e stops at the first failing command
    assert out.rstrip().endswith("Exited with code exit status 1")


def test_pipefail(run_job: RunJob) -> None:
    _, sink = run_job((RunStep(name="pipe", command="false | true"),))
    assert sink.steps()["pipe"] == "failed"


def test_custom_shell(run_job: RunJob) -> None:
    step = RunStep(
        name="py", command="import sys\nprint('py', sys.version_info[0])", shell="python3"
    )
    _, sink = run_job((step,))
    assert sink.steps()["py"] == "success"
    assert "py 3" in sink.output("py")


def test_job_shell_applies_unless_the_step_has_one(run_job: RunJob) -> None:
    spec = JobSpec(
        "build",
        PY_IMAGE,
        (
            RunStep(name="sh", command="echo $0 ran; false; echo survived"),
            RunStep(name="bash", command="false; echo nope", shell="/bin/bash -eo pipefail"),
        ),
        shell="/bin/sh",
    )
    _, sink = run_job(spec)
    assert "survived" in sink.output("sh")  # /bin/sh without -e goes on
    assert sink.steps() == {
        "Spin up environment": "success",
        "Preparing environment variables": "success",
        "sh": "success",
        "bash": "failed",
    }


def test_working_directory(run_job: RunJob) -> None:
    steps = (
        RunStep(name="home", command='pwd; test "$PWD" = "$HOME/project"'),
        RunStep(name="rel", command="pwd", working_directory="sub/dir"),
        RunStep(name="tilde", command="pwd", working_directory="~"),
    )
    _, sink = run_job(steps)
    assert sink.steps()["home"] == "success"
    assert sink.output("rel").strip().endswith("/home/project/sub/dir")
    assert sink.output("tilde").strip().endswith("/home")


def test_step_environment_and_bash_env(run_job: RunJob) -> None:
    steps = (
        RunStep(
            name="export", command='echo "export CARRIED=yes-$CIRCLE_BUILD_NUM" >> "$BASH_ENV"'
        ),
        RunStep(
            name="read", command="echo carried=$CARRIED step=$ONLY", environment={"ONLY": "me"}
        ),
        RunStep(name="again", command="echo only=${ONLY:-unset}"),
    )
    _, sink = run_job(steps)
    assert "carried=yes-7 step=me" in sink.output("read")
    assert "only=unset" in sink.output("again")


def test_no_output_timeout(run_job: RunJob) -> None:
    step = RunStep(name="quiet", command="echo start; sleep 30", no_output_timeout=0.5)
    runner, sink = run_job((step,))
    assert sink.steps()["quiet"] == "timedout"
    out = sink.output("quiet")
    assert "Too long with no output (exceeded 500ms): context deadline exceeded" in out
    assert runner.result.status == "failed"
    assert runner.result.seconds < 15


def test_exit_code_is_reported(run_job: RunJob) -> None:
    runner, _sink = run_job((RunStep(name="seven", command="exit 7"),))
    finished = next(r for r in runner.result.steps if r.name == "seven")
    assert finished.status == "failed"
    assert finished.reason == "Exited with code exit status 7"


def test_auto_rerun(run_job: RunJob, tmp_path: object) -> None:
    command = 'n=$(cat ~/n 2>/dev/null || echo 0); echo $((n+1)) > ~/n; [ "$n" -ge 2 ]'
    _, sink = run_job((RunStep(name="flaky", command=command, max_auto_reruns=3),))
    assert sink.steps()["flaky"] == "success"
    assert sink.output("flaky").count("rerunning the step") == 2
