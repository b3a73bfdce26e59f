"""``circlet run`` end to end: a real git project, the real compiler, engine,
host executor (Docker where marked), records and renderer; exit codes 0/1/2/130."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from circlet.cli.main import cli
from circlet.store.records import RecordStore

CONFIG = """\
version: 2.1
executors:
  py:
    docker:
      - image: cimg/python:3.11
jobs:
  build:
    executor: py
    steps:
      - checkout
      - run:
          name: Show the code
          command: cat notes.txt; echo "token=$TOKEN"; echo "branch=$CIRCLE_BRANCH"
  test:
    executor: py
    steps:
      - run:
          name: Run tests
          command: echo testing << pipeline.git.branch >>
workflows:
  main:
    jobs:
      - build
      - test:
          requires: [build]
"""


MAIN = "from circlet.cli.main import main; main()"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "T",
            "GIT_AUTHOR_EMAIL": "t@e",
            "GIT_COMMITTER_NAME": "T",
            "GIT_COMMITTER_EMAIL": "t@e",
        },
    ).stdout


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("CIRCLET_HOME", str(path))
    monkeypatch.delenv("CIRCLET_DATABASE_URL", raising=False)
    monkeypatch.delenv("CIRCLET_EXECUTOR", raising=False)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    repo = tmp_path / "demo"
    (repo / ".circleci").mkdir(parents=True)
    (repo / ".circleci" / "config.yml").write_text(CONFIG)
    (repo / "notes.txt").write_text("committed notes\n")
    git(repo, "init", "-q", "-b", "feature-x")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    return repo


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["run", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_green_run_on_host(project: Path, home: Path) -> None:
    (project / "notes.txt").write_text("uncommitted notes\n")  # the working tree is tested
    code, out = invoke(str(project), "--executor", "host", "-e", "TOKEN=t0p-s3cret-token")
    assert code == 0, out
    assert "✓ Show the code" in out
    assert "pipeline #1 ✓ success" in out
    assert "Traceback" not in out
    with RecordStore() as records:
        (pipeline,) = records.list_pipelines()
        assert pipeline.status == "success"
        assert pipeline.branch == "feature-x"
        jobs = {j.name: j for wf in records.workflows(pipeline.id) for j in records.jobs(wf.id)}
        assert {n: j.status for n, j in jobs.items()} == {"build": "success", "test": "success"}
        steps = records.steps(jobs["build"].id)
        show = next(s for s in steps if s.name == "Show the code")
        text = records.step_output(jobs["build"].id, show.index)
        assert "uncommitted notes" in text
        assert "token=********" in text
        assert "t0p-s3cret-token" not in text
        assert "branch=feature-x" in text
        test_out = records.step_output(jobs["test"].id, 2)
        assert "testing feature-x" in test_out
    code, out = invoke(str(project), "--executor", "host")
    assert code == 0
    assert "pipeline #2" in out


def test_failed_job_exit_1_with_its_last_lines(project: Path, home: Path) -> None:
    config = project / ".circleci" / "config.yml"
    config.write_text(CONFIG.replace("cat notes.txt;", "echo before-failure; exit 4;"))
    code, out = invoke(str(project), "--executor", "host", "--branch", "main")
    assert code == 1
    assert "✗ Show the code" in out
    assert "before-failure" in out
    assert "Exited with code exit status 4" in out
    assert "test: not_run" in out


def test_config_error_is_located(project: Path, home: Path) -> None:
    (project / ".circleci" / "config.yml").write_text(
        "version: 2.1\njobs:\n  a:\n    docker: [{image: x}]\n    steps: [bogus_step]\n"
        "workflows:\n  w:\n    jobs: [a, missing]\n"
    )
    code, out = invoke(str(project), "--executor", "host")
    assert code == 1
    assert "config.yml:" in out
    assert "Traceback" not in out


def test_usage_errors_exit_2(project: Path, home: Path, tmp_path: Path) -> None:
    code, out = invoke(str(tmp_path / "nowhere"))
    assert code == 2
    assert "no such directory" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = invoke(str(empty))
    assert code == 2
    assert "no CircleCI config" in out
    code, out = invoke(str(project), "--executor", "host", "-e", "NOEQUALS")
    assert code == 2
    assert "not KEY=VALUE" in out
    code, out = invoke(str(project), "--executor", "host", "--job", "nope")
    assert code == 2
    assert "--job nope" in out
    (project / ".circlet.yml").write_text("executor: podman\n")
    code, out = invoke(str(project))
    assert code == 2
    assert ".circlet.yml: executor must be docker or host" in out
    assert len(out.strip().splitlines()) == 1


# docker-py's UnixHTTPConnection leaks its socket when connect() fails (third-party);
# collect it here, where that warning is expected, not at the end of the session.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_no_docker_engine_is_one_line(
    project: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{home}/no-such-docker.sock")
    code, out = invoke(str(project), "--executor", "docker")
    assert code == 2
    assert "cannot reach the Docker engine" in out
    assert len(out.strip().splitlines()) == 1
    gc.collect()


def test_single_job_and_project_settings(project: Path, home: Path) -> None:
    (project / ".circlet.yml").write_text("executor: host\n")
    code, out = invoke(str(project), "--job", "test")
    assert code == 0, out
    assert "test #1" in out
    assert "Show the code" not in out  # build (upstream) did not run


def test_tag_without_tag_filters_runs_nothing(project: Path, home: Path) -> None:
    code, out = invoke(str(project), "--executor", "host", "--tag", "v1.0")
    assert code == 0
    assert "no workflow has a job to run for tag v1.0" in out


SCHEDULED = """
  nightly:
    triggers:
      - schedule:
          cron: "0 3 * * *"
          filters: {branches: {only: [feature-x]}}
    jobs:
      - test
"""


def test_scheduled_workflow_runs_only_when_named(project: Path, home: Path) -> None:
    (project / ".circleci" / "config.yml").write_text(CONFIG + SCHEDULED)
    code, out = invoke(str(project), "--executor", "host")
    assert code == 0, out
    assert "workflow nightly runs only on its schedule (0 3 * * *): not run" in out
    with RecordStore() as records:
        (pipeline,) = records.list_pipelines()
        assert [wf.name for wf in records.workflows(pipeline.id)] == ["main"]
    code, out = invoke(str(project), "--executor", "host", "--workflow", "nightly")
    assert code == 0, out
    assert "workflow nightly runs on a schedule (0 3 * * *): running it now" in out
    assert "✓ Run tests" in out
    with RecordStore() as records:
        latest = max(records.list_pipelines(), key=lambda p: p.number)
        (wf,) = records.workflows(latest.id)
        assert wf.name == "nightly"
        assert [(j.name, j.status) for j in records.jobs(wf.id)] == [("test", "success")]


def test_ctrl_c_cancels_cleanly(project: Path, home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    (project / ".circleci" / "config.yml").write_text(
        CONFIG.replace("cat notes.txt;", f"touch {marker}; sleep 120;")
    )
    env = {**os.environ, "CIRCLET_HOME": str(home)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from circlet.cli.main import main; main()",
            "run",
            str(project),
            "--executor",
            "host",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        for _ in range(300):
            if marker.exists():
                break
            time.sleep(0.1)
        assert marker.exists(), "the job never started"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "canceling" in out
    assert "Traceback" not in out
    with RecordStore() as records:
        (pipeline,) = records.list_pipelines()
        assert pipeline.status == "canceled"
        jobs = {
            j.name: j.status for wf in records.workflows(pipeline.id) for j in records.jobs(wf.id)
        }
        assert jobs == {"build": "canceled", "test": "canceled"}
    assert list((home / "work").iterdir()) == []  # the job directory was removed


@pytest.mark.docker
def test_green_run_on_docker(project: Path, home: Path) -> None:
    code, out = invoke(
        str(project),
        "--executor",
        "docker",
        "--image",
        "cimg/python:3.11=circlet/cimg-python:3.11",
        "-e",
        "TOKEN=t0p-s3cret-token",
    )
    assert code == 0, out
    assert "started on docker" in out
    assert "t0p-s3cret-token" not in out
