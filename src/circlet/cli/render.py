"""What ``circlet run`` shows: live steps with ✓/✗ and durations, then a summary.

The :class:`Renderer` is an event sink. On a terminal it keeps a live view of
the running jobs (rich) and prints each job's steps once it ends; elsewhere
(CI logs, pipes) it prints plain lines: a line per step start and end. Either
way a failed step is followed by its last lines of output, and the run ends
with a table (job, status, duration, build #) and each workflow's graph.
``verbose`` streams every line of output as it comes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from circlet.engine import events as ev

if TYPE_CHECKING:
    from circlet.engine.results import PipelineResult, WorkflowResult

TAIL_LINES = 20

SYMBOLS: dict[str, tuple[str, str]] = {
    "success": ("✓", "green"),
    "failed": ("✗", "red"),
    "timedout": ("✗", "red"),
    "infrastructure_fail": ("✗", "red"),
    "canceled": ("⊘", "yellow"),
    "skipped": ("↷", "dim"),
    "not_run": ("○", "dim"),
    "blocked": ("○", "dim"),
    "on_hold": ("⏸", "magenta"),
    "queued": ("…", "dim"),
    "running": ("▶", "cyan"),
}


def duration(seconds: float) -> str:
    """CircleCI-like durations: ``0.4s``, ``14s``, ``3m 47s``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s"


def symbol(status: str) -> Text:
    mark, style = SYMBOLS.get(status, ("?", ""))
    return Text(mark, style=style)


@dataclass
class _StepView:
    index: int
    name: str
    started: float
    status: str = "running"
    ended: float | None = None
    reason: str | None = None
    background: bool = False
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    partial: str = ""

    @property
    def seconds(self) -> float:
        return (self.ended or time.time()) - self.started

    def add_output(self, text: str) -> list[str]:
        """Append text; return the complete lines it finished."""
        data = self.partial + text
        lines = data.split("\n")
        self.partial = lines.pop()
        self.tail.extend(lines)
        return lines

    def last_lines(self) -> list[str]:
        lines = list(self.tail)
        if self.partial:
            lines.append(self.partial)
        while lines and not lines[-1].strip():
            lines.pop()
        lines = lines[-TAIL_LINES:]
        while lines and not lines[0].strip():
            lines.pop(0)
        return lines


@dataclass
class _JobView:
    job_id: str
    name: str
    build_num: int
    node_index: int
    node_total: int
    started: float
    steps: dict[int, _StepView] = field(default_factory=dict)
    status: str = "running"
    ended: float | None = None
    reason: str | None = None

    @property
    def label(self) -> str:
        node = f" [{self.node_index}/{self.node_total}]" if self.node_total > 1 else ""
        return f"{self.name} #{self.build_num}{node}"


class Renderer:
    """An EventSink that draws the run; call :meth:`close` then :meth:`summary`."""

    def __init__(
        self, console: Console | None = None, *, live: bool | None = None, verbose: bool = False
    ) -> None:
        self.console = console or Console()
        self.verbose = verbose
        self.live_mode = self.console.is_terminal if live is None else live
        self.jobs: dict[str, _JobView] = {}
        self._lock = threading.RLock()
        self._live: Live | None = None
        if self.live_mode:
            self._live = Live(
                self,
                console=self.console,
                refresh_per_second=8,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()

    # ------------------------------------------------------------------ sink

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            self._handle(event)

    def _print(self, *items: RenderableType | str) -> None:
        for item in items:
            self.console.print(item, highlight=False, markup=False, soft_wrap=True)

    def _handle(self, event: ev.Event) -> None:
        if isinstance(event, ev.JobStarted):
            view = _JobView(
                event.job_id,
                event.name,
                event.build_num,
                event.node_index,
                event.node_total,
                event.at,
            )
            self.jobs[event.job_id] = view
            if not self.live_mode:
                self._print(f"{view.label} ▶ started on {event.executor or 'executor'}")
        elif isinstance(event, ev.StepStarted):
            job = self.jobs.get(event.job_id)
            if job is None:
                return
            job.steps[event.index] = _StepView(
                event.index, event.name, event.at, background=event.background
            )
            if self.verbose and event.command:
                for line in event.command.splitlines():
                    self._out(job, line, style="dim")
            elif not self.live_mode:
                self._print(f"{job.label} │ {event.name} …")
        elif isinstance(event, ev.Output):
            job = self.jobs.get(event.job_id)
            step = job.steps.get(event.index) if job else None
            if job is None or step is None:
                return
            for line in step.add_output(event.text):
                if self.verbose:
                    self._out(job, line)
        elif isinstance(event, ev.StepFinished):
            self._step_finished(event)
        elif isinstance(event, ev.JobFinished):
            self._job_finished(event)
        elif isinstance(event, ev.JobStatusChanged) and event.status in (
            "not_run",
            "on_hold",
            "canceled",
            "infrastructure_fail",
        ):
            why = f" ({event.reason})" if event.reason else ""
            self._print(Text.assemble(symbol(event.status), f" {event.name}: {event.status}{why}"))

    def _out(self, job: _JobView, line: str, style: str = "") -> None:
        self._print(Text.assemble((f"{job.label} │ ", "dim"), (line, style)))

    def _step_finished(self, event: ev.StepFinished) -> None:
        job = self.jobs.get(event.job_id)
        step = job.steps.get(event.index) if job else None
        if job is None or step is None:
            return
        step.status = event.status
        step.ended = event.at
        step.reason = event.reason
        if self.verbose and step.partial:
            self._out(job, step.partial)
        if not self.live_mode:
            self._print(self._step_line(job, step, prefix=True))
            if event.status in ("failed", "timedout"):
                self._print(self._tail(step))

    def _job_finished(self, event: ev.JobFinished) -> None:
        job = self.jobs.get(event.job_id)
        if job is None:
            return
        job.status = event.status
        job.ended = event.at
        job.reason = event.reason
        if self.live_mode:
            self._print(self._job_block(job))
            for step in job.steps.values():
                if step.status in ("failed", "timedout"):
                    self._print(self._tail(step))
        else:
            why = f" ({event.reason})" if event.reason else ""
            self._print(
                Text.assemble(
                    symbol(job.status),
                    f" {job.label} {job.status} in {duration(job.ended - job.started)}{why}",
                )
            )

    # ------------------------------------------------------------- drawing

    def _step_line(self, job: _JobView, step: _StepView, *, prefix: bool = False) -> Text:
        text = Text()
        if prefix:
            text.append(f"{job.label} │ ", style="dim")
        text.append_text(symbol(step.status))
        text.append(f" {step.name}")
        if step.background:
            text.append(" (background)", style="dim")
        if step.status != "skipped":
            text.append(f"  {duration(step.seconds)}", style="dim")
        if step.reason and step.status not in ("success", "skipped"):
            text.append(f"  {step.reason}", style=SYMBOLS.get(step.status, ("", ""))[1])
        return text

    def _tail(self, step: _StepView) -> RenderableType:
        lines = step.last_lines()
        body = Text("\n".join(f"    {line}" for line in lines) or "    (no output)", style="")
        return Group(Text(f"  last lines of {step.name}:", style="bold red"), body)

    def _job_block(self, job: _JobView) -> RenderableType:
        head = Text.assemble(symbol(job.status), (f" {job.label}", "bold"))
        if job.ended is not None:
            head.append(f"  {job.status} in {duration(job.ended - job.started)}", style="dim")
        lines: list[RenderableType] = [head]
        for step in sorted(job.steps.values(), key=lambda s: s.index):
            if step.status == "running":
                row = Table.grid(padding=(0, 1))
                row.add_row(
                    Spinner("dots", style="cyan"),
                    Text(step.name),
                    Text(duration(step.seconds), style="dim"),
                )
                lines.append(Group(Text("  ", end=""), row))
            else:
                lines.append(Text("  ") + self._step_line(job, step))
        return Group(*lines)

    def __rich__(self) -> RenderableType:
        with self._lock:
            running = [j for j in self.jobs.values() if j.ended is None]
            return Group(*(self._job_block(j) for j in running)) if running else Text("")

    # ------------------------------------------------------------- the end

    def close(self) -> None:
        """Stop the live view (idempotent)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def summary(self, result: PipelineResult) -> None:
        """The final table and the workflow graphs."""
        self.close()
        table = Table(title=None, show_edge=False, header_style="bold")
        table.add_column("workflow")
        table.add_column("job")
        table.add_column("status")
        table.add_column("duration", justify="right")
        table.add_column("build #", justify="right")
        for wf in result.workflows:
            for job in wf.jobs.values():
                _, style = SYMBOLS.get(job.status, ("", ""))
                table.add_row(
                    wf.name,
                    job.name,
                    Text.assemble(symbol(job.status), (f" {job.status}", style)),
                    duration(job.seconds) if job.ran else "",
                    str(job.build_num) if job.build_num is not None else "",
                )
        self._print(Text(""))
        if result.workflows:
            self._print(table)
            for wf in result.workflows:
                self._print(workflow_graph(wf))
        _, style = SYMBOLS.get(result.status, ("", ""))
        self._print(
            Text.assemble(
                ("pipeline ", "bold"),
                (f"#{result.number} ", "bold"),
                symbol(result.status),
                (f" {result.status}", style),
            )
        )


def workflow_graph(wf: WorkflowResult) -> Tree:
    """A workflow's ``requires`` graph as a tree: each job under the first job it requires."""
    tree = Tree(
        Text.assemble(
            ("workflow ", "dim"),
            (wf.name, "bold"),
            ("  ", ""),
            symbol(wf.status),
            (f" {wf.status}", SYMBOLS.get(wf.status, ("", ""))[1]),
        )
    )
    nodes: dict[str, Tree] = {}

    def label(name: str) -> Text:
        job = wf.jobs[name]
        text = Text.assemble(symbol(job.status), f" {name}")
        if job.ran:
            text.append(f"  {duration(job.seconds)}", style="dim")
        others = wf.requires.get(name, [])[1:]
        if others:
            text.append(f"  (also requires {', '.join(others)})", style="dim")
        return text

    remaining = list(wf.jobs)
    while remaining:
        placed = False
        for name in list(remaining):
            requires = [r for r in wf.requires.get(name, []) if r in wf.jobs]
            if not requires:
                nodes[name] = tree.add(label(name))
            elif requires[0] in nodes:
                nodes[name] = nodes[requires[0]].add(label(name))
            else:
                continue
            remaining.remove(name)
            placed = True
        if not placed:  # a requirement outside this run: hang the rest on the root
            for name in remaining:
                nodes[name] = tree.add(label(name))
            break
    return tree
