"""Faults, for real: a runner killed with SIGKILL mid-job, the broker (Redis) killed
and restarted with jobs queued, the API server killed and restarted mid-run. Each
test prints what happened and checks that no job vanished and no record was lost.

The server here runs with a 4 s lease, 1 s heartbeats and a reaper every 0.5 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cluster_helpers import PrivateRedis, in_background, say, scheduler, wait_for
from conftest import Fleet

LEASE = 4.0


def _output(sch: Any, job_id: str) -> str:
    return "".join(sch.records.step_output(job_id, s.index) for s in sch.records.steps(job_id))


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
