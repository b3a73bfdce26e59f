"""``circlet runs`` (recent pipelines) and ``circlet logs JOB`` (replay a job's steps)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from circlet.store.records import JobRecord, RecordStore

STATUS_STYLE = {
    "success": "green",
    "failed": "red",
    "error": "red",
    "infrastructure_fail": "red",
    "timedout": "red",
    "canceled": "yellow",
    "running": "cyan",
    "queued": "cyan",
    "on_hold": "magenta",
    "blocked": "dim",
    "not_run": "dim",
    "skipped": "dim",
}


class RecordsUsageError(click.ClickException):
    """Unknown job or step: one line, exit 1 (a failed look-up, not bad usage)."""

    exit_code = 1


class RecordsUnavailable(click.ClickException):
    """The records database cannot be opened: an expected failure, exit 2."""

    exit_code = 2


def _open_store() -> RecordStore:
    try:
        return RecordStore()
    except (SQLAlchemyError, ImportError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecordsUnavailable(f"cannot open the records database: {reason}") from exc


def _styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{escape(status)}[/]"


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


# ------------------------------------------------------------------ runs


@click.command("runs")
@click.option("--project", "-p", default=None, help="Only this project (slug).")
@click.option("--branch", default=None, help="Only pipelines of this branch.")
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1, 1000))
def runs(project: str | None, branch: str | None, limit: int) -> None:
    """Recent pipelines, newest first."""
    with _open_store() as store:
        pipelines = store.list_pipelines(project=project, branch=branch, limit=limit)
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("#", "project", "status", "workflows", "branch", "revision"):
            table.add_column(column)
        table.add_column("started")
        table.add_column("duration", justify="right")
        for p in pipelines:
            flows = ", ".join(
                f"{escape(w.name)} {_styled(w.status)}" for w in store.workflows(p.id)
            )
            duration = p.duration
            if duration is None and p.started_at is not None and p.status == "running":
                duration = time.time() - p.started_at
            table.add_row(
                str(p.number),
                escape(p.project),
                _styled(p.status),
                flows or "-",
                escape(p.branch or "-"),
                escape((p.revision or "-")[:8]),
                _when(p.started_at),
                format_duration(duration),
            )
    console = Console()
    if not pipelines:
        where = f" for project {project}" if project else ""
        console.print(f"No pipelines recorded{escape(where)} yet.")
        return
    console.print(table)


# ------------------------------------------------------------------ logs


def _current_project_names() -> set[str]:
    """Names the current folder may be known by (its git top-level's name, else its own)."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        top = ""
    return {Path(top or Path.cwd()).name}


def resolve_job(store: RecordStore, ref: str, project: str | None) -> list[JobRecord]:
    """The job (all its parallel nodes) named by a build number or a job id (prefix)."""
    if ref.isdigit():
        nodes = store.jobs_by_build_num(project, int(ref))
        projects = sorted({n.project or "" for n in nodes})
        if len(projects) > 1:
            # Build numbers are per project: prefer the one this folder is.
            names = _current_project_names()
            here = [p for p in projects if p.rsplit("/", 1)[-1] in names]
            if len(here) != 1:
                raise RecordsUsageError(
                    f"build {ref} exists in several projects ({', '.join(projects)}): "
                    "choose one with --project"
                )
            nodes = [n for n in nodes if (n.project or "") == here[0]]
        if nodes:
            return nodes
    exact = store.job(ref)
    if exact is not None:
        return [exact]
    matches = store.jobs_by_id_prefix(ref) if len(ref) >= 4 else []
    if len(matches) == 1:
        return matches
    if len(matches) > 1:
        raise RecordsUsageError(f"job id prefix {ref!r} is ambiguous: give more characters")
    where = f" in project {project}" if project else ""
    raise RecordsUsageError(f"no job {ref!r}{where} in the records (see `circlet runs`)")


@click.command("logs")
@click.argument("job")
@click.option("--project", "-p", default=None, help="Project of the build number.")
@click.option("--step", "step_index", type=int, default=None, help="Only step N (0 = spin up).")
@click.option("--node", type=int, default=None, help="Only parallel node N.")
def logs(job: str, project: str | None, step_index: int | None, node: int | None) -> None:
    """Replay a job's steps and their output. JOB is a build number or a job id."""
    console = Console(highlight=False)
    with _open_store() as store:
        nodes = resolve_job(store, job, project)
        if node is not None:
            nodes = [n for n in nodes if n.node_index == node]
            if not nodes:
                raise RecordsUsageError(f"job {job} has no parallel node {node}")
        for record in nodes:
            _print_job(console, store, record, step_index)


def _print_job(
    console: Console, store: RecordStore, job: JobRecord, step_index: int | None
) -> None:
    steps = store.steps(job.id)
    if step_index is not None:
        steps = [s for s in steps if s.index == step_index]
        if not steps:
            raise RecordsUsageError(f"job {job.id} has no step {step_index}")
    build = f" #{job.build_num}" if job.build_num is not None else ""
    node = f" node {job.node_index}/{job.node_total}" if job.node_total > 1 else ""
    console.print(
        f"[bold]{escape(job.name)}{build}[/]{node}  {_styled(job.status)}"
        f"  {format_duration(job.duration)}  [dim]{escape(job.id)}[/]"
    )
    if job.reason:
        console.print(f"  [dim]{escape(job.reason)}[/]")
    for step in steps:
        exit_text = f"  exit {step.exit_code}" if step.exit_code is not None else ""
        console.print(
            f"[bold]── {step.index}. {escape(step.name)}[/]  {_styled(step.status)}"
            f"  {format_duration(step.duration)}{exit_text}"
        )
        output = store.step_output(job.id, step.index)
        if output:
            # Output is the job's own bytes (already masked): print it raw, no markup.
            click.echo(output, nl=not output.endswith("\n"))
        if step.reason:
            console.print(f"   [dim]{escape(step.reason)}[/]")


commands: dict[str, click.Command] = {"runs": runs, "logs": logs}
