"""``circlet config validate|process``: check a config, or print it expanded."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from circlet import plan, settings
from circlet.config import (
    Problem,
    compile_file_with_problems,
    pipeline_values,
    render_processed_yaml,
)

DEFAULT_CONFIG = Path(".circleci/config.yml")


@click.group()
def command() -> None:
    """Validate a CircleCI config, or print it with everything expanded."""


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        click.echo(str(problem), err=True)


def _orb_dirs(given: tuple[Path, ...]) -> list[Path]:
    """``--orb-dir`` folders first, then the configured one (if it exists)."""
    dirs = list(given)
    default = Path(settings.ORB_DIR.get())
    if default.is_dir() and default not in dirs:
        dirs.append(default)
    return dirs


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--pipeline-param {pair!r} is not KEY=VALUE")
        params[key] = value
    return params


@command.command()
@click.argument("path", type=click.Path(path_type=Path), default=DEFAULT_CONFIG)
@click.option(
    "--orb-dir",
    "orb_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help=settings.ORB_DIR.help,
)
def validate(path: Path, orb_dirs: tuple[Path, ...]) -> None:
    """Check PATH (default .circleci/config.yml); print every problem with file:line:col."""
    pipeline, problems = compile_file_with_problems(path, orb_dirs=_orb_dirs(orb_dirs))
    _print_problems(problems)
    if pipeline is None:
        errors = sum(1 for p in problems if p.is_error)
        click.echo(f"Config file at {path} is invalid: {errors} error(s).", err=True)
        sys.exit(1)
    click.echo(f"Config file at {path} is valid.")


@command.command()
@click.argument("path", type=click.Path(path_type=Path), default=DEFAULT_CONFIG)
@click.option(
    "--pipeline-param",
    "pipeline_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A pipeline parameter (repeatable); converted to the declared type.",
)
@click.option("--branch", help="The value of << pipeline.git.branch >>.")
@click.option("--tag", help="The value of << pipeline.git.tag >>.")
@click.option("--revision", help="The value of << pipeline.git.revision >>.")
@click.option(
    "--orb-dir",
    "orb_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help=settings.ORB_DIR.help,
)
@click.option("--json", "as_json", is_flag=True, help="Print the compiled Plan as JSON.")
def process(
    *,
    path: Path,
    pipeline_params: tuple[str, ...],
    branch: str | None,
    tag: str | None,
    revision: str | None,
    orb_dirs: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Print PATH with orbs, commands, executors, parameters and matrices expanded."""
    values = pipeline_values(branch=branch, tag=tag, revision=revision)
    pipeline, problems = compile_file_with_problems(
        path, values=values, params=_params(pipeline_params), orb_dirs=_orb_dirs(orb_dirs)
    )
    _print_problems(problems)
    if pipeline is None:
        sys.exit(1)
    if as_json:
        click.echo(plan.to_json(pipeline))
    else:
        click.echo(render_processed_yaml(pipeline), nl=False)
