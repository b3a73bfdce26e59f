"""Placeholder: ``circlet runs`` and ``circlet logs``."""

import click

commands: dict[str, click.Command] = {}
