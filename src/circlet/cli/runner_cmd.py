"""``circlet runner``: a Celery worker that runs the jobs of its resource classes.

``circlet runner --server URL --token T --resource-class ORG/NAME[,ORG/NAME]
[--concurrency N] [--broker URL]``: register with the server (the token must
allow every class), then consume the classes' queues and run each job with the
same JobRunner as ``circlet run``. SIGTERM/Ctrl-C finishes the running jobs
first (a second one stops at once; their jobs are then reported "runner lost").
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import click

from circlet import settings

EXIT_USAGE = 2


class RunnerUsageError(Exception):
    """An expected problem: one line, exit code 2."""


def _classes(text: str) -> list[str]:
    from circlet.cluster.wire import check_class

    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise RunnerUsageError("--resource-class needs at least one namespace/name")
    try:
        return [check_class(name) for name in names]
    except ValueError as exc:
        raise RunnerUsageError(f"--resource-class: {exc}") from None


def _register(client: Any, classes: list[str], concurrency: int) -> dict[str, Any]:
    """Tell the server who we are; its answer (name, broker, queue prefix…)."""
    from circlet.cluster.client import ServerError, UnreachableError

    try:
        info: dict[str, Any] = client.call(
            "POST",
            "/api/cluster/runners/register",
            json={
                "resource_classes": classes,
                "host": socket.gethostname(),
                "concurrency": concurrency,
            },
            retry_for=30.0,
        ).json()
    except ServerError as exc:
        raise RunnerUsageError(f"the server refused this runner: {exc}") from None
    except UnreachableError as exc:
        raise RunnerUsageError(f"cannot reach the server: {exc}") from None
    return info


def start(opts: dict[str, Any]) -> None:
    """Register, then run the Celery worker until it is stopped."""
    from circlet.cli.run_cmd import UsageError, make_executor_factory
    from circlet.cluster.celery_app import TASK_NAME, make_celery
    from circlet.cluster.client import ApiClient
    from circlet.cluster.wire import queue_name
    from circlet.cluster.worker import RunnerSetup, configure, run_job
    from circlet.testing.agent import install_agent

    classes = _classes(opts["resource_class"])
    if opts["concurrency"] < 1:
        raise RunnerUsageError("--concurrency must be at least 1")
    client = ApiClient(opts["server"], opts["token"])
    try:
        info = _register(client, classes, opts["concurrency"])
    except BaseException:
        client.close()
        raise
    broker = opts["broker"] or info.get("broker_url") or ""
    if not broker:
        raise RunnerUsageError("no broker: give --broker URL (the server does not announce one)")
    work_dir: Path = opts["work_dir"] or Path(settings.HOME.get()) / "runner"
    agent_bin = work_dir / "agent" / "bin"
    install_agent(agent_bin)
    kind = opts["executor"] or os.environ.get("CIRCLET_EXECUTOR") or "docker"
    images = settings.parse_image_map(",".join(opts["image"])) if opts["image"] else {}
    try:
        factory = make_executor_factory(
            kind, agent_bin=agent_bin, images=images, ca_bundle=opts["ca_bundle"] or ""
        )
    except UsageError as exc:
        raise RunnerUsageError(str(exc)) from None
    configure(
        RunnerSetup(
            client=client, name=str(info["name"]), executor_factory=factory, work_dir=work_dir
        )
    )
    app = make_celery(broker)
    app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)(
        run_job
    )
    queues = [queue_name(str(info.get("queue_prefix") or "circlet"), rc) for rc in classes]
    _log_to_stderr()
    click.echo(
        f"circlet runner {info['name']}: serving {', '.join(classes)} "
        f"(queues {', '.join(queues)}) with {opts['concurrency']} slot(s), "
        f"executor {kind}, pid {os.getpid()}",
        err=True,
    )
    node = f"{info['name']}.{os.getpid()}@{socket.gethostname()}"
    app.worker_main(
        [
            "--quiet",  # no banner: our line above says what this runner does
            "worker",
            "--queues",
            ",".join(queues),
            "--concurrency",
            str(opts["concurrency"]),
            "--pool",
            "threads",
            "--hostname",
            node,
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            opts["log_level"],
        ]
    )


def _log_to_stderr() -> None:
    """Our own lines (a job taken, finished, dropped) whatever Celery does with its logs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("circlet")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@click.command("runner")
@click.option("--server", required=True, envvar="CIRCLET_RUNNER_SERVER", help="The server's URL.")
@click.option("--token", required=True, envvar="CIRCLET_RUNNER_TOKEN", help="A runner token.")
@click.option(
    "--resource-class",
    required=True,
    metavar="NS/NAME[,NS/NAME]",
    help="The resource classes to serve (the token must allow them).",
)
@click.option("--concurrency", default=1, show_default=True, help="Jobs at once.")
@click.option(
    "--broker",
    envvar=settings.BROKER_URL.env,
    help="Celery broker URL (redis://… or amqp://…); default: the one the server announces.",
)
@click.option(
    "--executor",
    type=click.Choice(["docker", "host"]),
    help="Where docker jobs run (default: docker; machine jobs always run on the host).",
)
@click.option("--work-dir", type=click.Path(path_type=Path), help="Job files and caches.")
@click.option("--image", multiple=True, metavar="FROM=TO", help=settings.IMAGE_MAP.help)
@click.option("--ca-bundle", help=settings.CA_BUNDLE.help)
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    help="Celery's own log level.",
)
def command(**opts: Any) -> None:
    """Run jobs of some resource classes for a circlet server (a Celery worker)."""
    try:
        start(opts)
    except (RunnerUsageError, ValueError) as exc:
        click.echo(f"circlet runner: {exc}", err=True)
        raise SystemExit(EXIT_USAGE) from None


if __name__ == "__main__":  # `python -m circlet.cli.runner_cmd …` (before `circlet runner` exists)
    command()
