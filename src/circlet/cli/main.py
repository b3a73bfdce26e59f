"""The ``circlet`` command: a click group; each sub-command lives in its own module."""

from __future__ import annotations

import sys

import click

from circlet import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="circlet")
def cli() -> None:
    """circlet: run CircleCI pipelines anywhere."""


def _register() -> None:
    from circlet.cli import (
        cache_cmd,
        config_cmd,
        records_cmd,
        run_cmd,
        runner_cmd,
        server_cmd,
        tests_cmd,
    )

    cli.add_command(config_cmd.command, "config")
    cli.add_command(run_cmd.command, "run")
    cli.add_command(cache_cmd.command, "cache")
    cli.add_command(tests_cmd.command, "tests")
    cli.add_command(server_cmd.command, "server")
    cli.add_command(runner_cmd.command, "runner")
    for name, cmd in records_cmd.commands.items():
        cli.add_command(cmd, name)


_register()


def main() -> None:
    """Entry point: expected failures exit 1 or 2 with one line, never a traceback."""
    sys.exit(cli.main(standalone_mode=True))
