"""``circlet runs`` and ``circlet logs`` against a real records database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from circlet.cli.records_cmd import commands, format_duration
from circlet.engine import events as ev
from circlet.store.records import RecordStore

T0 = 1_700_000_000.0


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CIRCLET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CIRCLET_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def record_run(store: RecordStore, project: str, pid: str, number: int, build: int) -> str:
    """A one-job pipeline whose second step fails; returns the job id."""
    wf, job = f"{pid}-wf", f"{pid}-job-0123456789"
    store.sink(
        ev.PipelineStarted(
            pid, number, project, "feature/x", "deadbeefcafe", "local", at=T0 + number
        )
    )
    store.sink(ev.WorkflowStarted(pid, wf, "build-and-test", (), at=T0 + number))
    store.sink(ev.JobStarted(wf, job, "test", build, at=T0 + number))
    store.sink(ev.StepStarted(job, 0, "Spin up environment", "spin_up", at=T0 + number))
    store.sink(ev.Output(job, 0, "Starting container [bold]x[/bold]\n"))
    store.sink(ev.StepFinished(job, 0, "success", 0, at=T0 + number + 2))
    store.sink(ev.StepStarted(job, 1, "Run tests", "run", at=T0 + number + 2))
    store.sink(ev.Output(job, 1, "collected 3 items\nFAILED test_x\n"))
    store.sink(ev.StepFinished(job, 1, "failed", 1, at=T0 + number + 75))
    store.sink(ev.JobFinished(job, "failed", at=T0 + number + 75))
    store.sink(ev.WorkflowFinished(wf, "failed", at=T0 + number + 75))
    store.sink(ev.PipelineFinished(pid, "failed", at=T0 + number + 75))
    return job


def invoke(name: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(commands[name], list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def test_runs_lists_newest_first_with_workflows_and_durations(home: Path) -> None:
    with RecordStore() as store:
        record_run(store, "gh/acme/shop", "p1", 1, 1)
        record_run(store, "gh/acme/shop", "p2", 2, 2)
        store.sink(ev.PipelineStarted("p3", 3, "gh/acme/shop", "main", None, "local"))
    code, out = invoke("runs")
    assert code == 0
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0].split()[:4] == ["#", "project", "status", "workflows"]
    assert lines[1].split()[:4] == ["3", "gh/acme/shop", "running", "-"]
    assert lines[2].split()[:5] == ["2", "gh/acme/shop", "failed", "build-and-test", "failed"]
    assert "feature/x" in lines[2]
    assert "deadbeef" in lines[2]
    assert "deadbeefc" not in lines[2]  # short revision
    assert lines[2].rstrip().endswith("1m15s")
    assert lines[3].split()[0] == "1"


def test_runs_filters_by_project_and_limit(home: Path) -> None:
    with RecordStore() as store:
        record_run(store, "gh/acme/shop", "p1", 1, 1)
        record_run(store, "gh/acme/web", "w1", 1, 1)
        record_run(store, "gh/acme/web", "w2", 2, 2)
    code, out = invoke("runs", "--project", "gh/acme/web", "--limit", "1")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    assert [(r[0], r[1]) for r in rows] == [("2", "gh/acme/web")]
    code, out = invoke("runs", "--project", "gh/none/x")
    assert (code, out.strip()) == (0, "No pipelines recorded for project gh/none/x yet.")


def test_logs_by_build_number_replays_steps_and_output(home: Path) -> None:
    with RecordStore() as store:
        record_run(store, "gh/acme/shop", "p1", 1, 7)
    code, out = invoke("logs", "7")
    assert code == 0
    assert out.splitlines()[0].startswith("test #7  failed  1m15s  p1-job-0123456789")
    assert "── 0. Spin up environment  success  2.0s" in out
    # Output is printed as it was: no rich markup interpreted.
    assert "Starting container [bold]x[/bold]\n" in out
    assert "── 1. Run tests  failed  1m13s  exit 1" in out
    assert out.endswith("collected 3 items\nFAILED test_x\n")


def test_logs_one_step_by_job_id_prefix(home: Path) -> None:
    with RecordStore() as store:
        job = record_run(store, "gh/acme/shop", "p1", 1, 7)
    code, out = invoke("logs", job[:8], "--step", "1")
    assert code == 0
    assert "Spin up environment" not in out
    assert "collected 3 items" in out
    code, out = invoke("logs", job, "--step", "9")
    assert code == 1
    assert out.strip() == f"Error: job {job} has no step 9"


def test_logs_unknown_job_is_one_line_and_exit_1(home: Path) -> None:
    RecordStore().close()
    code, out = invoke("logs", "99")
    assert code == 1
    assert out.strip() == "Error: no job '99' in the records (see `circlet runs`)"


def test_logs_build_number_in_two_projects_needs_a_project(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RecordStore() as store:
        record_run(store, "gh/acme/shop", "p1", 1, 3)
        record_run(store, "gh/acme/web", "w1", 1, 3)
    code, out = invoke("logs", "3")
    assert code == 1
    assert "build 3 exists in several projects (gh/acme/shop, gh/acme/web)" in out
    code, out = invoke("logs", "3", "--project", "gh/acme/web")
    assert code == 0
    assert "w1-job-0123456789" in out
    # Inside a checkout named like one of them, that one is meant.
    (home.parent / "shop").mkdir()
    monkeypatch.chdir(home.parent / "shop")
    code, out = invoke("logs", "3")
    assert code == 0
    assert "p1-job-0123456789" in out


def test_unusable_database_is_an_expected_error(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIRCLET_DATABASE_URL", f"sqlite:///{home}/missing/dir/x.db")
    code, out = invoke("runs")
    assert code == 2
    assert out.startswith("Error: cannot open the records database:")


def test_the_installed_command_exits_1_without_a_traceback(home: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from circlet.cli.main import main; main()", "logs", "12345"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error: no job '12345' in the records (see `circlet runs`)"


def test_format_duration() -> None:
    assert format_duration(None) == "-"
    assert format_duration(3.25) == "3.2s"
    assert format_duration(42) == "42s"
    assert format_duration(185) == "3m05s"
    assert format_duration(3720) == "1h02m"
