"""The job/step state machine: allowed moves pass, everything else is refused."""

from __future__ import annotations

import pytest

from circlet.engine.state import (
    JOB_TERMINAL,
    IllegalTransitionError,
    JobState,
    StepState,
    is_terminal_job,
)


@pytest.mark.parametrize(
    "path",
    [
        ["running", "success"],
        ["running", "failed"],
        ["running", "infrastructure_fail"],
        ["blocked", "queued", "running", "canceled"],
        ["blocked", "not_run"],
        ["on_hold", "success"],
        ["blocked", "on_hold", "canceled"],
    ],
)
def test_job_paths_allowed(path: list[str]) -> None:
    state = JobState()
    for status in path:
        state.to(status)  # type: ignore[arg-type]
    assert state.status == path[-1]
    assert state.terminal == (path[-1] in JOB_TERMINAL)


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (["running", "success"], "running"),
        (["running"], "queued"),
        (["running"], "blocked"),
        ([], "success"),  # a job never succeeds without running (or approval)
        (["not_run"], "running"),
    ],
)
def test_job_illegal_moves_raise(path: list[str], bad: str) -> None:
    state = JobState(what="build")
    for status in path:
        state.to(status)  # type: ignore[arg-type]
    with pytest.raises(IllegalTransitionError, match="build"):
        state.to(bad)  # type: ignore[arg-type]
    assert state.status == (path[-1] if path else "queued")


def test_step_machine() -> None:
    step = StepState(what="Run tests")
    with pytest.raises(IllegalTransitionError):
        step.finished()
    step.to("running")
    with pytest.raises(IllegalTransitionError):
        step.to("skipped")  # a started step cannot be skipped any more
    step.to("timedout")
    assert step.finished() == "timedout"
    with pytest.raises(IllegalTransitionError):
        step.to("success")


def test_skipped_step_never_runs() -> None:
    step = StepState()
    step.to("skipped")
    with pytest.raises(IllegalTransitionError):
        step.to("running")


def test_terminal_helper() -> None:
    assert is_terminal_job("not_run")
    assert not is_terminal_job("blocked")
    assert not is_terminal_job("on_hold")
