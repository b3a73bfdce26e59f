"""The fleet on RabbitMQ, the other broker Celery gives us: the same server and
runners, jobs on the runner of their class, and a broker restart with a job
queued loses nothing (durable queues, persistent messages, late acks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import (
    AMQP_URL,
    in_background,
    pipeline_from,
    rabbitmqctl,
    say,
    scheduler,
    wait_for,
)
from conftest import Fleet, close_fleet, make_fleet

from circlet.cluster.wire import queue_name

WORKFLOW = """
version: 2.1
jobs:
  build:
    machine: true
    resource_class: acme/a
    steps:
      - run: mkdir -p out && echo "from rabbit" > out/r.txt
      - persist_to_workspace: {root: out, paths: [r.txt]}
  test:
    machine: true
    resource_class: acme/b
    steps:
      - attach_workspace: {at: ws}
      - run: cat ws/r.txt
workflows:
  main:
    jobs:
      - build
      - test: {requires: [build]}
"""


def _check_rabbitmq() -> None:
    from kombu import Connection  # type: ignore[import-untyped]

    try:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.fail(
            f"RabbitMQ at {AMQP_URL} does not answer ({exc}); start it with "
            "`bash scripts/services`",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def rabbit_fleet(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    _check_rabbitmq()
    built = make_fleet(tmp_path_factory.mktemp("amqp-fleet"), broker=AMQP_URL)
    try:
        built.runner("rabbit-a", ["acme/a"])
        built.runner("rabbit-b", ["acme/b"])
        yield built
    finally:
        close_fleet(built)


def test_jobs_go_through_rabbitmq_to_the_runner_of_their_class(
    rabbit_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = rabbit_fleet
    with scheduler(fleet.home, fleet.database_url, AMQP_URL, fleet.queue_prefix) as sch:
        result = sch.run(pipeline_from(WORKFLOW, tmp_path))
        ran_on = {j.name: sch.runner_of(j.job_id) for j in result.jobs()}
        say(f"over RabbitMQ: workflow {result.status}, jobs ran on {ran_on}")
        assert result.status == "success", [(j.name, j.status, j.reason) for j in result.jobs()]
        assert ran_on == {"build": "rabbit-a", "test": "rabbit-b"}
        test_job = result.job("test")
        steps = sch.records.steps(test_job.job_id)
        assert "from rabbit" in sch.records.step_output(test_job.job_id, steps[-1].index)


def test_a_rabbitmq_restart_loses_no_queued_job(rabbit_fleet: Fleet, tmp_path: Path) -> None:
    fleet = rabbit_fleet
    runner_a = fleet.runners[0]
    runner_a.process.stop()  # nobody consumes acme/a: its job waits in the queue
    try:
        with (
            scheduler(fleet.home, fleet.database_url, AMQP_URL, fleet.queue_prefix) as sch,
            in_background(sch, WORKFLOW, tmp_path) as run,
        ):
            queue = queue_name(fleet.queue_prefix, "acme/a")

            def queued() -> bool:
                for line in rabbitmqctl("list_queues", "name", "messages").splitlines():
                    name, _, count = line.rpartition("\t")
                    if name == queue and count.strip().isdigit() and int(count) >= 1:
                        return True
                return False

            try:
                wait_for(queued, 60, f"the build job to wait in {queue}", interval=0.5)
            except AssertionError:
                listing = rabbitmqctl("list_queues", "name", "messages", "consumers")
                raise AssertionError(f"no job queued in {queue}; queues:\n{listing}") from None
            say(f"{queue} holds the build job; restarting RabbitMQ (stop_app, start_app)")
            started = time.monotonic()
            rabbitmqctl("stop_app")
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
            say(f"RabbitMQ back after {time.monotonic() - started:.1f}s")
            assert queued(), "the queued job did not survive the broker restart"
            runner_a.start()
            result = run.join(180, "the pipeline to end after the restart")
            say(f"after the restart: {[(j.name, j.status) for j in result.jobs()]}")
            assert result.status == "success"
            assert {j.name: j.status for j in result.jobs()} == {
                "build": "success",
                "test": "success",
            }
    finally:
        if not runner_a.process.alive():
            runner_a.start()
