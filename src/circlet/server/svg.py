"""Pictures drawn on the server as inline SVG: the workflow graph (a layered
DAG from ``requires``), Gantt charts of steps or jobs, and the Insights charts.

Everything here is pure: plain values in, an SVG string out, every piece of
text escaped. No JavaScript is needed to see any of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from circlet.server.format import duration_text

NODE_W, NODE_H = 210, 34
COL_GAP, ROW_GAP, PAD = 64, 14, 8

STATUS_COLORS = {
    "success": "#16883a",
    "failed": "#d0312d",
    "infrastructure_fail": "#d0312d",
    "error": "#d0312d",
    "timedout": "#d0312d",
    "running": "#1f6fd1",
    "queued": "#8a8f98",
    "blocked": "#8a8f98",
    "on_hold": "#7b4bd1",
    "canceled": "#6b6f76",
    "not_run": "#b5b9bf",
    "skipped": "#b5b9bf",
}


def color(status: str) -> str:
    """The colour of a status (grey when unknown)."""
    return STATUS_COLORS.get(status, "#8a8f98")


@dataclass(frozen=True)
class GraphNode:
    name: str
    requires: tuple[str, ...]
    status: str
    seconds: float | None = None
    href: str | None = None
    kind: str = "build"  # "build" | "approval"


def layers(nodes: Sequence[GraphNode]) -> list[list[GraphNode]]:
    """Nodes in columns: a node sits one column right of its deepest requirement;
    inside a column, nodes are ordered by the mean row of their parents
    (barycenter), ties kept in workflow order. Unknown requirements and cycles
    are ignored, so any input draws."""
    by_name = {n.name: n for n in nodes}
    depth: dict[str, int] = {}

    def depth_of(name: str, visiting: frozenset[str]) -> int:
        if name in depth:
            return depth[name]
        node = by_name[name]
        parents = [r for r in node.requires if r in by_name and r not in visiting]
        value = 0
        if parents:
            value = 1 + max(depth_of(p, visiting | {name}) for p in parents)
        depth[name] = value
        return value

    for n in nodes:
        depth_of(n.name, frozenset())
    columns: list[list[GraphNode]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for n in nodes:
        columns[depth[n.name]].append(n)
    row: dict[str, float] = {n.name: float(i) for i, n in enumerate(columns[0] if columns else [])}
    for col in columns[1:]:
        order = {n.name: i for i, n in enumerate(col)}

        def centre(n: GraphNode, order: dict[str, int] = order) -> tuple[float, int]:
            rows = [row[r] for r in n.requires if r in row]
            return (sum(rows) / len(rows) if rows else math.inf, order[n.name])

        col.sort(key=centre)
        row.update({n.name: float(i) for i, n in enumerate(col)})
    return columns


def workflow_graph(nodes: Sequence[GraphNode]) -> str:
    """The job graph as an SVG element: boxes in columns, edges from each
    requirement's right side to the job's left side."""
    columns = layers(nodes)
    if not columns:
        return '<svg class="graph" width="0" height="0"></svg>'
    pos: dict[str, tuple[int, int]] = {}
    for c, col in enumerate(columns):
        for r, n in enumerate(col):
            pos[n.name] = (PAD + c * (NODE_W + COL_GAP), PAD + r * (NODE_H + ROW_GAP))
    width = PAD * 2 + len(columns) * NODE_W + (len(columns) - 1) * COL_GAP
    height = PAD * 2 + max(len(c) for c in columns) * (NODE_H + ROW_GAP) - ROW_GAP
    parts = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="workflow graph">'
    ]
    for n in nodes:
        x2, y2 = pos[n.name]
        for req in n.requires:
            if req not in pos:
                continue
            x1, y1 = pos[req]
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2
            mid = (sx + ex) // 2
            parts.append(
                f'<path class="edge" d="M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}" '
                'fill="none" stroke="#9aa0a6" stroke-width="1.5"/>'
            )
    for n in nodes:
        x, y = pos[n.name]
        label = n.name if len(n.name) <= 22 else n.name[:21] + "…"
        secs = duration_text(n.seconds) if n.seconds is not None else ""
        box = (
            f'<g class="node status-{escape(n.status)}" data-job="{escape(n.name)}">'
            f"<title>{escape(n.name)}: {escape(n.status)}</title>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="5" '
            f'fill="#fff" stroke="{color(n.status)}" stroke-width="1.5"/>'
            f'<circle cx="{x + 17}" cy="{y + NODE_H / 2}" r="9" fill="{color(n.status)}"/>'
            f'<text x="{x + 17}" y="{y + 21}" font-size="11" fill="#fff" '
            f'text-anchor="middle">{_glyph(n.status)}</text>'
            f'<text x="{x + 34}" y="{y + 22}" font-size="13" fill="#1b1f24">{escape(label)}</text>'
            f'<text x="{x + NODE_W - 8}" y="{y + 22}" font-size="12" fill="#5f6368" '
            f'text-anchor="end">{escape(secs)}</text></g>'
        )
        if n.href:
            box = f'<a href="{escape(n.href)}">{box}</a>'
        parts.append(box)
    parts.append("</svg>")
    return "".join(parts)


def _glyph(status: str) -> str:
    if status == "success":
        return "✓"
    if status in ("failed", "infrastructure_fail", "error", "timedout"):
        return "✗"
    if status == "on_hold":
        return "❚❚"
    return ""


def tick_text(seconds: float, span: float) -> str:
    """An axis label: tenths of a second on short axes, else like durations."""
    return f"{seconds:.1f}s" if span < 10 else duration_text(seconds)


@dataclass(frozen=True)
class Bar:
    label: str
    start: float | None  # epoch seconds
    stop: float | None
    status: str
    href: str | None = None


def gantt(bars: Sequence[Bar], *, now: float, width: int = 900) -> str:
    """A Gantt chart: one row per bar on a shared time axis (running bars end at ``now``)."""
    started = [b.start for b in bars if b.start is not None]
    if not started:
        return '<p class="muted">Nothing has started yet.</p>'
    t0 = min(started)
    t1 = max([(b.stop if b.stop is not None else now) for b in bars if b.start is not None])
    span = max(t1 - t0, 0.001)
    label_w, row_h = 260, 22
    plot_w = width - label_w - 70
    height = row_h * len(bars) + 28
    parts = [
        f'<svg class="gantt" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="timing">'
    ]
    for tick in range(5):
        x = label_w + plot_w * tick / 4
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 20}" stroke="#e3e5e8"/>'
            f'<text x="{x:.1f}" y="{height - 6}" font-size="11" fill="#5f6368" '
            f'text-anchor="middle">{escape(tick_text(span * tick / 4, span))}</text>'
        )
    for i, b in enumerate(bars):
        y = i * row_h + 3
        label = b.label if len(b.label) <= 36 else b.label[:35] + "…"
        text = f'<text x="0" y="{y + 13}" font-size="12" fill="#1b1f24">{escape(label)}</text>'
        if b.href:
            text = f'<a href="{escape(b.href)}">{text}</a>'
        parts.append(text)
        if b.start is None:
            continue
        stop = b.stop if b.stop is not None else now
        x = label_w + plot_w * (b.start - t0) / span
        w = max(2.0, plot_w * (stop - b.start) / span)
        parts.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 8}" rx="2" '
            f'fill="{color(b.status)}"><title>{escape(b.label)}: '
            f"{escape(duration_text(stop - b.start))}</title></rect>"
            f'<text x="{x + w + 4:.1f}" y="{y + 12}" font-size="11" fill="#5f6368">'
            f"{escape(duration_text(stop - b.start))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[float | None, ...]  # one per x label; None: no data
    color: str


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    unit: str = "s",
    width: int = 640,
    height: int = 220,
) -> str:
    """A line chart with a shared y axis from 0; ``unit`` "s" formats durations, "%" percents."""
    values = [v for s in series for v in s.points if v is not None]
    if not labels or not values:
        return '<p class="muted">No data yet.</p>'
    top = max(values) or 1.0
    if unit == "%":
        top = 100.0
    left, bottom, right, top_pad = 56, 24, 10, 22
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    step = plot_w / max(1, len(labels) - 1)

    def fmt(v: float) -> str:
        return f"{v:.0f}%" if unit == "%" else tick_text(v, top)

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">'
    ]
    for tick in range(5):
        v = top * tick / 4
        y = top_pad + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e3e5e8"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" fill="#5f6368" '
            f'text-anchor="end">{escape(fmt(v))}</text>'
        )
    every = max(1, math.ceil(len(labels) / 8))
    for i, label in enumerate(labels):
        if i % every == 0:
            parts.append(
                f'<text x="{left + i * step:.1f}" y="{height - 6}" font-size="11" '
                f'fill="#5f6368" text-anchor="middle">{escape(label)}</text>'
            )
    for s in series:
        points = [
            (left + i * step, top_pad + plot_h - plot_h * (v / top))
            for i, v in enumerate(s.points)
            if v is not None
        ]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="2">'
                f"<title>{escape(s.name)}</title></polyline>"
            )
        parts.extend(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s.color}"/>' for x, y in points
        )
    legend_x = left
    for s in series:
        parts.append(
            f'<rect x="{legend_x}" y="4" width="10" height="4" fill="{s.color}"/>'
            f'<text x="{legend_x + 14}" y="10" font-size="11" fill="#1b1f24">'
            f"{escape(s.name)}</text>"
        )
        legend_x += 14 + 8 * len(s.name) + 16
    parts.append("</svg>")
    return "".join(parts)
