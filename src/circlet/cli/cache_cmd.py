"""``circlet cache ls|rm|prune``: look at and clean the local blob store
(``$CIRCLET_HOME/blobs``)."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import click

from circlet import settings
from circlet.store.blobs import LocalBlobStore, collect

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_AGE_UNITS = {"s": 1 / 86400, "m": 1 / 1440, "h": 1 / 24, "d": 1.0, "w": 7.0}


class CacheError(click.ClickException):
    """An expected failure (unknown key, unreadable store): one line, exit 2."""

    exit_code = 2


def parse_size(text: str) -> int:
    """``10G``, ``500M``, ``1.5GiB``, ``4096`` → bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"size {text!r} is not like 10G, 500M or 4096")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s``, ``7`` (days) → days."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise ValueError(f"age {text!r} is not like 30d, 12h or 90m")
    return float(match.group(1)) * _AGE_UNITS[match.group(2) or "d"]


def human(size: float) -> str:
    """Bytes as CircleCI prints them: ``94 MiB``, ``1.2 GiB``, ``512 B``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            if unit == "B":
                return f"{int(size)} B"
            return f"{size:.1f} {unit}" if size < 10 else f"{size:.0f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def default_namespace() -> str:
    """The cache namespace of the project in the current directory (what
    ``circlet run`` uses for caches: ``cache/local/<folder name>``)."""
    return f"cache/local/{Path.cwd().resolve().name}"


def _store() -> LocalBlobStore:
    try:
        return LocalBlobStore(settings.home_dir() / "blobs")
    except (OSError, sqlite3.Error) as exc:
        raise CacheError(f"cannot open the blob store: {exc}") from exc


class _SizeType(click.ParamType):  # type: ignore[type-arg]
    name = "SIZE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        try:
            return value if isinstance(value, int) else parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _AgeType(click.ParamType):  # type: ignore[type-arg]
    name = "AGE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return value if isinstance(value, float) else parse_age(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group()
def command() -> None:
    """List, remove and prune saved caches and workspaces."""


@command.command("ls")
@click.option("--namespace", "-n", default=None, help="Only this namespace (e.g. cache/local/app).")
def ls_command(namespace: str | None) -> None:
    """List saved trees: namespace, key, age, size, files."""
    with _store() as store:
        entries = store.list_trees(namespace)
    if not entries:
        click.echo("No caches." if namespace is None else f"No caches in {namespace}.")
        return
    now = time.time()
    rows = [
        (
            e.namespace,
            e.key,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.created_at)),
            _ago(now - e.created_at),
            human(e.size),
            str(e.files),
        )
        for e in entries
    ]
    head = ("NAMESPACE", "KEY", "CREATED", "AGE", "SIZE", "FILES")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)}s ago"
    if seconds < 7200:
        return f"{int(seconds // 60)}m ago"
    if seconds < 172800:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"


@command.command("rm")
@click.argument("args", nargs=-1, required=True, metavar="[NAMESPACE] KEY")
def rm_command(args: tuple[str, ...]) -> None:
    """Remove the tree KEY (from NAMESPACE; default: this project's caches).
    Its space is freed by the next ``prune``."""
    if len(args) > 2:
        raise click.UsageError("expected [NAMESPACE] KEY")
    namespace, key = (args[0], args[1]) if len(args) == 2 else (default_namespace(), args[0])
    with _store() as store:
        if not store.delete_tree(namespace, key):
            raise CacheError(f"no cache {key!r} in {namespace}")
    click.echo(f"Removed {key} from {namespace}.")


@command.command("prune")
@click.option(
    "--max-size",
    type=_SizeType(),
    default="10G",
    show_default=True,
    help="Keep at most this much (oldest trees go first).",
)
@click.option(
    "--max-age",
    type=_AgeType(),
    default="30d",
    show_default=True,
    help="Remove trees older than this (30d, 12h, 90m).",
)
def prune_command(max_size: int, max_age: float) -> None:
    """Remove old trees, then unreferenced blobs; print what was freed."""
    with _store() as store:
        result = collect(store, max_bytes=max_size, max_age_days=max_age)
    for namespace, key in result.trees_removed:
        click.echo(f"Removed {key} from {namespace}.")
    click.echo(
        f"Freed {human(result.freed)} ({len(result.trees_removed)} trees, "
        f"{result.chunks_removed} chunks, {result.packs_removed} packs)."
    )
