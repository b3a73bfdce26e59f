"""Small text formats shared by pages and pictures (durations, ages, sizes)."""

from __future__ import annotations

import datetime as dt
import time


def duration_text(seconds: float | None) -> str:
    """``3m 13s`` / ``19s`` / ``1h 2m`` like CircleCI; ``-`` when unknown."""
    if seconds is None:
        return "-"
    total = round(seconds)
    if seconds < 1 and seconds > 0:
        return "<1s" if seconds >= 0.05 else "0s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def ago_text(at: float | None, now: float | None = None) -> str:
    """``19h ago`` / ``just now``; ``-`` when unknown."""
    if at is None:
        return "-"
    delta = max(0.0, (now if now is not None else time.time()) - at)
    if delta < 10:
        return "just now"
    for size, unit in ((86400 * 30, "mo"), (86400, "d"), (3600, "h"), (60, "m")):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return f"{int(delta)}s ago"


def iso(at: float | None) -> str | None:
    """An epoch time as RFC 3339 UTC with milliseconds (CircleCI's format)."""
    if at is None:
        return None
    stamp = dt.datetime.fromtimestamp(at, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def size_text(size: int) -> str:
    """``1.2 MB`` style."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def change_percent(current: float | None, previous: float | None) -> int | None:
    """Duration change vs the previous run in whole percent (negative: faster)."""
    if current is None or previous is None or previous <= 0:
        return None
    return round((current - previous) * 100 / previous)
