"""``circlet tests glob|split|run``: CircleCI's test splitting on the host.

The same functions as the ``circleci`` agent inside jobs (:mod:`circlet.testing.agent`),
so a command line behaves the same in both places.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from circlet.testing import split as splitting

F = TypeVar("F", bound=Callable[..., Any])


def _split_options(func: F) -> F:
    """The options ``split`` and ``run`` share; they arrive as one ``options`` argument."""
    options = [
        click.option(
            "--split-by",
            type=click.Choice(splitting.SPLIT_BY),
            default="name",
            show_default=True,
            help="Weigh tests equally (name), by file size, or by recorded timings.",
        ),
        click.option(
            "--timings-type",
            type=click.Choice((*splitting.TIMING_TYPES, "autodetect")),
            default="autodetect",
            show_default=True,
            help="What the names are, for --split-by=timings.",
        ),
        click.option(
            "--index", type=int, default=None, help="This node (default: $CIRCLE_NODE_INDEX or 0)."
        ),
        click.option(
            "--total", type=int, default=None, help="Nodes (default: $CIRCLE_NODE_TOTAL or 1)."
        ),
        click.option(
            "--time-default", default=None, help="Time for tests without timing data (10s, 1m30s)."
        ),
        click.option(
            "--timings-file",
            type=click.Path(dir_okay=False),
            default=None,
            help="Timings JSON (default: $CIRCLET_TIMINGS_FILE).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _options(params: dict[str, Any]) -> splitting.SplitOptions:
    names = ("split_by", "timings_type", "index", "total", "time_default", "timings_file")
    return splitting.SplitOptions(**{name: params.pop(name) for name in names})


def _agent_call(run: Callable[[], int]) -> None:
    try:
        code = run()
    except splitting.AgentError as exc:
        raise click.UsageError(str(exc)) from exc
    if code:
        sys.exit(code)


@click.group()
def command() -> None:
    """Glob, split and run tests as CircleCI's `circleci tests` does."""


@command.command("glob")
@click.argument("patterns", nargs=-1, required=True)
def glob_cmd(patterns: tuple[str, ...]) -> None:
    """Files matching PATTERNS (*, **, ?, [abc], {a,b}), one a line, sorted."""
    _agent_call(lambda: splitting.cmd_glob(patterns, sys.stdout))


@command.command("split")
@_split_options
@click.option("--show-counts", is_flag=True, help="Print how many tests this node got (stderr).")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
def split_cmd(show_counts: bool, files: tuple[str, ...], **params: Any) -> None:
    """This node's share of the test names in FILES (or stdin)."""
    options = _options(params)
    _agent_call(
        lambda: splitting.cmd_split(
            files,
            options,
            show_counts=show_counts,
            stdin=sys.stdin,
            out=sys.stdout,
            err=sys.stderr,
        )
    )


@command.command("run")
@_split_options
@click.option("--command", "shell_command", required=True, help="Gets this node's names on stdin.")
@click.option("--verbose", is_flag=True, help="Print the command and this node's tests (stderr).")
def run_cmd(shell_command: str, verbose: bool, **params: Any) -> None:
    """Split the names on stdin, then run --command with this node's share on its stdin."""
    options = _options(params)
    _agent_call(
        lambda: splitting.cmd_run(
            shell_command,
            options,
            verbose=verbose,
            stdin=sys.stdin,
            out=sys.stdout,
            err=sys.stderr,
        )
    )
