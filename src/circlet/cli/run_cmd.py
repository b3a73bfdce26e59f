"""Placeholder until the owning issue lands this command."""

import click


@click.group()
def command() -> None:
    """Not yet available."""
