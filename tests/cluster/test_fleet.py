"""The fleet end to end: a server, two ``circlet runner`` processes with different
resource classes, Redis as the broker, PostgreSQL as the records; jobs run on the
host executor of the runner of their class."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import in_background, pipeline_from, running, say, scheduler, wait_for
from conftest import Fleet
from sqlalchemy import text

SECRET = "s3cret-value-42"

WORKFLOW = """
version: 2.1
jobs:
  build:
    machine: true
    resource_class: acme/a
    steps:
      - checkout
      - run:
          name: Build
          command: |
            mkdir -p out deps
            echo "built from $(cat app.txt)" > out/result.txt
            echo "dependency of build $CIRCLE_BUILD_NUM" > deps/lib.txt
      - save_cache:
          key: deps-{{ checksum "app.txt" }}
          paths: [deps]
      - persist_to_workspace:
          root: out
          paths: [result.txt]
  test:
    machine: true
    resource_class: acme/b
    steps:
      - attach_workspace:
          at: ws
      - restore_cache:
          keys: [deps-]
      - run:
          name: Test
          command: |
            cat ws/result.txt deps/lib.txt
            test "$API_KEY" = "s3cret-value-42" && echo "secret ok: $API_KEY"
  lint:
    machine: true
    resource_class: acme/b
    steps:
      - run:
          name: Lint
          command: |
            mkdir -p reports results
            echo "no problems" > reports/lint.txt
            printf '<testsuite name="lint">%s</testsuite>' \
              '<testcase classname="style" name="pep8" time="0.5"/>' > results/lint.xml
      - store_artifacts:
          path: reports
      - store_test_results:
          path: results
  report:
    machine: true
    steps:
      - run: echo all done here
workflows:
  main:
    jobs:
      - build
      - lint
      - test:
          requires: [build]
      - report:
          requires: [test, lint]
"""


@pytest.fixture(scope="module")
def two_runners(fleet: Fleet) -> Fleet:
    fleet.runner("runner-a", ["acme/a"])
    fleet.runner("runner-b", ["acme/b"])
    return fleet


def test_each_job_runs_on_the_runner_of_its_class(
    two_runners: Fleet, git_project: tuple[Path, str], tmp_path: Path
) -> None:
    fleet = two_runners
    repo, commit = git_project
    with scheduler(fleet.home, fleet.database_url, fleet.broker, fleet.queue_prefix) as sch:
        started = time.monotonic()
        result = sch.run(
            pipeline_from(WORKFLOW, tmp_path),
            repo=repo,
            commit=commit,
            branch="main",
            secrets={"API_KEY": SECRET},
        )
        took = time.monotonic() - started
        ran_on = {j.name: sch.runner_of(j.job_id) for j in result.jobs()}
        say(f"workflow {result.status} in {took:.1f}s; jobs ran on {ran_on}")
        assert result.status == "success", [(j.name, j.status, j.reason) for j in result.jobs()]
        assert ran_on == {
            "build": "runner-a",
            "lint": "runner-b",
            "test": "runner-b",
            "report": None,  # no runner class: the local pool
        }
        test_job = result.job("test")
        records = sch.records
        assert records.job(test_job.job_id).status == "success"
        steps = {s.name: s for s in records.steps(test_job.job_id)}
        assert [s.status for s in steps.values()] == ["success"] * len(steps)
        output = records.step_output(test_job.job_id, steps["Test"].index)
        say(f"the test job printed: {output!r}")
        assert "built from version 1" in output  # the workspace, from runner-a's job
        assert "dependency of build" in output  # the cache saved by runner-a's job
        assert "secret ok: ********" in output  # the secret arrived, and was masked
        lint = result.job("lint")
        artifacts = records.artifacts(lint.job_id)
        assert len(artifacts) == 1
        assert artifacts[0].path.endswith("reports/lint.txt")
        with sch.blobs.open_blob(artifacts[0].digest) as fh:  # uploaded to the server's store
            assert fh.read() == b"no problems\n"
        assert [(c.classname, c.name) for c in records.test_cases(lint.job_id)] == [
            ("style", "pep8")
        ]
        build = result.job("build")
        checkout = records.steps(build.job_id)[2]
        assert checkout.name == "Checkout code"
        assert commit[:7] in records.step_output(build.job_id, checkout.index)
        everything = "".join(
            records.step_output(j.job_id, s.index)
            for j in result.jobs()
            for s in records.steps(j.job_id)
        )
        assert SECRET not in everything
    with fleet.engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM cluster_jobs WHERE secrets IS NOT NULL")
        ).scalar_one()
        events = conn.execute(text("SELECT count(*) FROM cluster_events")).scalar_one()
    assert left == 0  # secrets are dropped from the server once the jobs are done
    assert events == 0  # every event was handed to the records, then deleted


def test_cancel_reaches_the_runner_and_stops_the_job(two_runners: Fleet, tmp_path: Path) -> None:
    fleet = two_runners
    marks = tmp_path / "marks"
    marks.mkdir()
    config = f"""
version: 2.1
jobs:
  long:
    machine: true
    resource_class: acme/a
    steps:
      - run: |
          echo $$ > {marks}/shell.pid
          sleep 120 &
          echo $! > {marks}/sleep.pid
          echo started
          wait
workflows:
  main:
    jobs: [long]
"""
    with (
        scheduler(fleet.home, fleet.database_url, fleet.broker, fleet.queue_prefix) as sch,
        in_background(sch, config, tmp_path) as run,
    ):
        wait_for((marks / "sleep.pid").exists, 30, "the job to start on runner-a")
        pids = [int((marks / f).read_text()) for f in ("shell.pid", "sleep.pid")]
        t0 = time.monotonic()
        run.cancel.set()
        job = run.join(30, "the canceled pipeline to end").job("long")
        took = time.monotonic() - t0
        runner = sch.runner_of(job.job_id)
        say(f"cancel: job {job.status} {took:.1f}s after the cancel, on {runner}")
        assert job.status == "canceled"
        assert sch.records.job(job.job_id).status == "canceled"
        wait_for(lambda: not any(running(pid) for pid in pids), 5, f"processes {pids} to end")
        say(f"the job's processes {pids} are gone")


def _job_containers() -> set[str]:
    """The ``circlet.job`` labels of every container (running or not)."""
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            "label=circlet.job",
            "--format",
            '{{.Label "circlet.job"}}',
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


def _job_key(sch: Any, name: str) -> str | None:
    """Job ``name``'s container key (``<task id>-<node>``), from its BASH_ENV line."""
    for pipeline in sch.records.list_pipelines(limit=1):
        for wf in sch.records.workflows(pipeline.id):
            for job in sch.records.jobs(wf.id):
                if job.name != name:
                    continue
                found = re.search(r"\.bash_env-([0-9a-f]{24}-\d+)-build", _output(sch, job.id))
                if found:
                    return found.group(1)
    return None


def _output(sch: Any, job_id: str) -> str:
    return "".join(sch.records.step_output(job_id, s.index) for s in sch.records.steps(job_id))


@pytest.mark.docker
def test_cancel_stops_the_jobs_containers_on_a_docker_runner(fleet: Fleet, tmp_path: Path) -> None:
    fleet.runner("runner-docker", ["acme/docker"], executor="docker")
    config = """
version: 2.1
jobs:
  in-docker:
    docker:
      - image: circlet/debian-python:bookworm
    resource_class: acme/docker
    steps:
      - run: echo in a container; sleep 120
workflows:
  main:
    jobs: [in-docker]
"""
    with (
        scheduler(fleet.home, fleet.database_url, fleet.broker, fleet.queue_prefix) as sch,
        in_background(sch, config, tmp_path) as run,
    ):
        job_key = wait_for(lambda: _job_key(sch, "in-docker"), 60, "the job on runner-docker")
        wait_for(lambda: job_key in _job_containers(), 60, "the job's container")
        say(f"the job runs in the container labelled circlet.job={job_key} on runner-docker")
        time.sleep(1.0)
        run.cancel.set()
        job = run.join(60, "the canceled pipeline to end").job("in-docker")
        assert job.status == "canceled"
        assert sch.runner_of(job.job_id) == "runner-docker"
        left = job_key in _job_containers()
        say(f"after the cancel: job {job.status}, its container left: {left}")
        assert not left
