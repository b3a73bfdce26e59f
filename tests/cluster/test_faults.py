"""Faults, for real: a runner killed with SIGKILL mid-job, the broker (Redis) killed
and restarted with jobs queued, the API server killed and restarted mid-run (the
fleet API alone, its scheduler elsewhere; then ``circlet server`` itself, whose
schedulers die with it and resume from the records). Each test prints what
happened and checks that no job vanished and no record was lost.

The fleet API here runs with a 4 s lease, 1 s heartbeats and a reaper every 0.5 s.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from cluster_helpers import (
    REDIS_URL,
    FullServer,
    PrivateRedis,
    Runner,
    drop_database,
    forget_queues,
    fresh_database,
    in_background,
    say,
    scheduler,
    wait_for,
)
from conftest import Fleet
from sqlalchemy import text

LEASE = 4.0


def _output(sch_or_records: Any, job_id: str) -> str:
    records = getattr(sch_or_records, "records", sch_or_records)
    return "".join(records.step_output(job_id, s.index) for s in records.steps(job_id))


def _running(sch: Any) -> int:
    """Jobs a runner has started (their JobStarted reached the records) and not ended."""
    return sum(
        job.status == "running"
        for pipeline in sch.records.list_pipelines(limit=5)
        for wf in sch.records.workflows(pipeline.id)
        for job in sch.records.jobs(wf.id)
    )


def _job_id(sch: Any, name: str) -> str | None:
    for pipeline in sch.records.list_pipelines(limit=5):
        for wf in sch.records.workflows(pipeline.id):
            for job in sch.records.jobs(wf.id):
                if job.name == name:
                    return str(job.id)
    return None


def test_runner_killed_mid_job_is_failed_runner_lost(fleet: Fleet, tmp_path: Path) -> None:
    victim = fleet.runner("runner-doomed", ["acme/doomed"])
    config = """
version: 2.1
jobs:
  doomed:
    machine: true
    resource_class: acme/doomed
    steps:
      - run:
          name: Count slowly
          command: for i in $(seq 0 300); do echo "line $i"; sleep 0.1; done
workflows:
  main:
    jobs: [doomed]
"""
    with (
        scheduler(fleet.home, fleet.database_url, fleet.broker, fleet.queue_prefix) as sch,
        in_background(sch, config, tmp_path) as run,
    ):
        job_id = wait_for(lambda: _job_id(sch, "doomed"), 30, "the job's record")
        wait_for(lambda: "line 5" in _output(sch, job_id), 30, "output from the runner")
        orphans = victim.process.kill9()
        killed = time.monotonic()
        say(f"kill -9 runner {victim.process.pid} (and its job's processes {orphans}) mid-job")
        result = run.join(LEASE + 20, "the pipeline to end after its runner died")
        took = time.monotonic() - killed
        job = result.job("doomed")
        say(f"job {job.status} ({job.reason}) {took:.1f}s after the kill (lease {LEASE:.0f}s)")
        assert (job.status, job.reason) == ("failed", "runner lost")
        assert took < LEASE + 6  # lease + reaper period + the dispatcher's poll, with slack
        record = sch.records.job(job_id)
        assert (record.status, record.reason) == ("failed", "runner lost")
        step = sch.records.steps(job_id)[2]
        assert (step.name, step.status) == ("Count slowly", "failed")
        log = sch.records.step_output(job_id, step.index)
        kept = [line for line in log.splitlines() if line.startswith("line ")]
        last = log.splitlines()[-1]
        say(f"partial log kept: {len(kept)} lines ({kept[0]} … {kept[-1]}), then {last!r}")
        assert kept[:6] == [f"line {i}" for i in range(6)]
        assert "runner lost" in log.splitlines()[-1]


def test_with_one_retry_a_lost_job_runs_again_on_another_runner(
    fleet: Fleet, tmp_path: Path
) -> None:
    runners = {
        name: fleet.runner(name, ["acme/twice"]) for name in ("runner-first", "runner-second")
    }
    config = """
version: 2.1
jobs:
  twice:
    machine: true
    resource_class: acme/twice
    steps:
      - run:
          name: Work
          command: for i in $(seq 1 20); do echo "step $i"; sleep 0.1; done
workflows:
  main:
    jobs: [twice]
"""
    with (
        scheduler(
            fleet.home, fleet.database_url, fleet.broker, fleet.queue_prefix, retries=1
        ) as sch,
        in_background(sch, config, tmp_path) as run,
    ):
        job_id = wait_for(lambda: _job_id(sch, "twice"), 30, "the job's record")
        wait_for(lambda: "step 3\n" in _output(sch, job_id), 30, "the first attempt's output")
        first = sch.runner_of(job_id)
        runners[first].process.kill9()
        say(f"kill -9 {first} mid-job; the dispatcher allows one retry")
        job = run.join(LEASE + 30, "the retried job to end").job("twice")
        found = sch.store.assignment(job_id)
        say(f"job {job.status} on {found.runner_name} at attempt {found.attempt}")
        assert job.status == "success"
        assert found.attempt == 2
        assert found.runner_name != first
        log = _output(sch, job_id)
        assert "runner lost" in log
        assert "retrying the job" in log
        assert log.rstrip().endswith("step 20")  # the second attempt ran to the end
        assert sch.records.job(job_id).status == "success"


def test_broker_restart_loses_no_queued_job(fleet: Fleet, tmp_path: Path) -> None:
    broker = PrivateRedis(tmp_path)
    broker.start()
    fleet.runner("runner-steady", ["acme/steady"], broker=broker.url)
    jobs = [f"job{i}" for i in range(5)]
    config = "version: 2.1\njobs:\n" + "".join(
        f"  {name}:\n    machine: true\n    resource_class: acme/steady\n"
        f"    steps:\n      - run: sleep 1; echo {name} done\n"
        for name in jobs
    )
    config += "workflows:\n  main:\n    jobs: [" + ", ".join(jobs) + "]\n"
    queue = f"{fleet.queue_prefix}:acme/steady"
    try:
        with (
            scheduler(fleet.home, fleet.database_url, broker.url, fleet.queue_prefix) as sch,
            in_background(sch, config, tmp_path, max_parallel=len(jobs)) as run,
        ):
            wait_for(lambda: _running(sch) == 1, 30, "the runner to start a job")
            wait_for(lambda: broker.client().llen(queue) == len(jobs) - 1, 30, "4 queued jobs")
            before = broker.client().llen(queue)
            broker.process.kill9()
            say(f"kill -9 redis with {before} jobs queued (1 running)")
            time.sleep(1.0)
            broker.start()
            after = broker.client().llen(queue)
            say(f"redis restarted from its append-only file: {after} jobs queued")
            assert after == before
            result = run.join(90, "the pipeline to end after the broker restart")
            statuses = {j.name: j.status for j in result.jobs()}
            say(f"after the restart: {statuses}")
            assert statuses == dict.fromkeys(jobs, "success")
            for job in result.jobs():
                assert f"{job.name} done" in _output(sch, job.job_id)
                assert sch.runner_of(job.job_id) == "runner-steady"
    finally:
        fleet.runners[-1].process.stop()
        broker.process.stop()


def test_server_restart_mid_run_loses_no_result(fleet: Fleet, tmp_path: Path) -> None:
    fleet.runner("runner-patient", ["acme/patient"], concurrency=2)
    config = """
version: 2.1
jobs:
  chatty:
    machine: true
    resource_class: acme/patient
    steps:
      - run:
          name: Tick
          command: for i in $(seq 1 40); do echo "tick $i"; sleep 0.1; done
  quick:
    machine: true
    resource_class: acme/patient
    steps:
      - run: echo quick one
  after:
    machine: true
    resource_class: acme/patient
    steps:
      - run: echo after the restart
workflows:
  main:
    jobs:
      - chatty
      - quick
      - after:
          requires: [chatty]
"""
    api = fleet.api
    with (
        scheduler(fleet.home, fleet.database_url, fleet.broker, fleet.queue_prefix) as sch,
        in_background(sch, config, tmp_path) as run,
    ):
        job_id = wait_for(lambda: _job_id(sch, "chatty"), 30, "the job's record")
        wait_for(lambda: "tick 3\n" in _output(sch, job_id), 30, "the first ticks")
        api.process.kill9()
        down = time.monotonic()
        say("kill -9 the API server mid-job (the runner keeps running and buffering)")
        time.sleep(2.5)
        seen_while_down = _output(sch, job_id).count("tick ")
        api.start()
        back = time.monotonic() - down
        say(f"server back after {back:.1f}s; {seen_while_down} ticks recorded so far")
        result = run.join(60, "the pipeline to end after the server restart")
        statuses = {j.name: j.status for j in result.jobs()}
        say(f"after the restart: {statuses}")
        assert statuses == {"chatty": "success", "quick": "success", "after": "success"}
        ticks = [line for line in _output(sch, job_id).splitlines() if line.startswith("tick ")]
        assert ticks == [f"tick {i}" for i in range(1, 41)]  # all, once each, in order
        say("all 40 ticks recorded exactly once, in order; the dependent job ran too")
        assert sch.records.job(job_id).status == "success"


RESUME_CONFIG = """
version: 2.1
jobs:
  build:
    machine: true
    resource_class: acme/patient
    steps:
      - run:
          name: Tick
          command: for i in $(seq 1 40); do echo "tick $i"; sleep 0.1; done
  deploy:
    machine: true
    resource_class: acme/patient
    steps:
      - run:
          name: Deploy
          command: echo "deploying after the build"
workflows:
  main:
    jobs:
      - build
      - deploy:
          requires: [build]
"""


def _project_repo(dest: Path) -> Path:
    (dest / ".circleci").mkdir(parents=True)
    (dest / ".circleci" / "config.yml").write_text(RESUME_CONFIG)
    env = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*env, "commit", "-qm", "first"]):
        subprocess.run(["git", *args], cwd=dest, check=True, capture_output=True)
    return dest


def test_server_killed_mid_workflow_resumes_it_after_restart(
    services: None, tmp_path: Path
) -> None:
    """``circlet server`` (the scheduler inside) killed while a runner runs ``build``
    of build -> deploy: restarted, it takes the runner's result and runs ``deploy``."""
    from circlet.cluster.tokens import create_runner_token
    from circlet.store.accounts import AccountStore, SecretBox
    from circlet.store.records import RecordStore

    home = tmp_path / "home"
    home.mkdir()
    database_url = fresh_database()
    prefix = "tr" + uuid.uuid4().hex[:10]
    slug = "circlet/acme/resume"
    records = RecordStore(database_url)
    accounts = AccountStore(records.engine, SecretBox(home / "server-secrets.key"))
    user = accounts.create_user("admin", "admin-password-1", is_admin=True)
    api_token = accounts.create_token(user.id, "test")[0]
    accounts.add_project(slug, str(_project_repo(tmp_path / "repo")), kind="path", name="resume")
    server = FullServer(home, database_url, queue_prefix=prefix, broker_url=REDIS_URL)
    runner = Runner(
        home,
        "runner-steadfast",
        server=server.url,
        token=create_runner_token(records.engine, "runner-steadfast", ["acme/patient"]),
        classes="acme/patient",
        broker=REDIS_URL,
    )
    try:
        server.start()
        runner.start()
        answer = httpx.post(
            f"{server.url}/api/v2/project/{slug}/pipeline",
            json={"branch": "main"},
            headers={"Circle-Token": api_token},
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        pipeline_id = answer.json()["id"]

        def job(name: str) -> Any:
            for wf in records.workflows(pipeline_id):
                for found in records.jobs(wf.id):
                    if found.name == name and found.node_index == 0:
                        return found
            return None

        build = wait_for(lambda: job("build"), 60, "the build job's record")
        wait_for(lambda: "tick 3\n" in _output(records, build.id), 30, "the first ticks")
        server.process.kill9()
        say("kill -9 circlet server (its scheduler with it) while the runner runs build")
        time.sleep(2.5)
        ticks_while_down = _output(records, build.id).count("tick ")
        statuses = {n: job(n).status if job(n) else None for n in ("build", "deploy")}
        assert statuses == {"build": "running", "deploy": "blocked"}
        restarted = time.time()
        server.start()
        say(f"server back; {ticks_while_down} ticks recorded so far; records say {statuses}")

        def ended() -> str | None:
            found = records.get_pipeline(pipeline_id)
            return found.status if found is not None and found.status != "running" else None

        status = wait_for(ended, 90, "the pipeline to end after the restart")
        workflows = records.workflows(pipeline_id)
        jobs = {j.name: j for wf in workflows for j in records.jobs(wf.id)}
        say(
            f"pipeline {status}; workflow {[w.status for w in workflows]}; "
            f"jobs { ({n: j.status for n, j in jobs.items()}) }"
        )
        assert status == "success", server.process.tail()
        assert [(w.name, w.status) for w in workflows] == [("main", "success")]
        assert {n: j.status for n, j in jobs.items()} == {"build": "success", "deploy": "success"}
        ticks = [
            line for line in _output(records, build.id).splitlines() if line.startswith("tick ")
        ]
        assert ticks == [f"tick {i}" for i in range(1, 41)]  # all, once each, in order
        deploy = jobs["deploy"]
        assert deploy.started_at is not None
        assert deploy.started_at > restarted
        assert "deploying after the build" in _output(records, deploy.id)
        with records.engine.connect() as conn:
            ran_on = conn.execute(
                text("SELECT name, runner_name, state FROM cluster_jobs ORDER BY created_at")
            ).all()
        assert [tuple(r) for r in ran_on] == [
            ("build", "runner-steadfast", "done"),
            ("deploy", "runner-steadfast", "done"),
        ]
        assert "resuming pipeline" in server.process.log.read_text()
        say(
            f"all 40 ticks recorded once, in order; deploy started "
            f"{deploy.started_at - restarted:.1f}s after the restart began, on the runner"
        )
    finally:
        runner.process.stop()
        server.process.stop()
        forget_queues(REDIS_URL, prefix)
        records.close()
        drop_database(database_url)
