"""Shared pieces of the data steps (checkout, caches, workspaces, artifacts, test
results): CircleCI's number formats, globbing inside the job, scratch dirs."""

from __future__ import annotations

import math
import posixpath
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from circlet.engine.steps.base import StepContext

_IEC = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_GLOB_CHARS = frozenset("*?[")
# Expands shell-style globs (Go's filepath.Match syntax is the same subset)
# relative to $1, printing NUL-separated matches. `*` matches dot files, as
# in Go; bash is preferred for that (dotglob), plain sh is the fallback.
_GLOB_SCRIPT = r"""
cd "$1" 2>/dev/null || exit 3
shift
shopt -s dotglob nullglob 2>/dev/null
IFS=''
for pattern in "$@"; do
  for match in $pattern; do
    if [ -e "$match" ] || [ -L "$match" ]; then printf '%s\0' "$match"; fi
  done
done
"""


def ibytes(size: int) -> str:
    """Sizes as CircleCI prints them (go-humanize ``IBytes``): ``94 MiB``, ``1.5 KiB``, ``7 B``."""
    if size < 10:
        return f"{size} B"
    # Same float steps as go-humanize (so 1048575 is "1024 KiB" there and here).
    exp = min(math.floor(math.log(size) / math.log(1024)), len(_IEC) - 1)
    value = math.floor(size / 1024**exp * 10 + 0.5) / 10
    return f"{value:.1f} {_IEC[exp]}" if value < 10 else f"{value:.0f} {_IEC[exp]}"


def go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String`` prints it: ``2.761050053s``, ``512ms``."""
    nanos = round(seconds * 1e9)
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos < 1_000:
        return f"{sign}{nanos}ns"
    if nanos < 1_000_000:
        return f"{sign}{_trim(nanos / 1_000)}µs"
    if nanos < 1_000_000_000:
        return f"{sign}{_trim(nanos / 1_000_000)}ms"
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim(rest / 1e9) if rest % 1_000_000_000 else str(rest // 1_000_000_000)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def utc_stamp(epoch: float) -> str:
    """``2024-02-25 11:51:17 +0000 UTC``, the form of *Saving cache*'s "Found one created at"."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def scratch(ctx: StepContext, name: str) -> Path:
    """A new, empty host directory for this step under the job's staging directory."""
    base = ctx.staging / f"step-{ctx.index}-{name}"
    path = base
    n = 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    path.mkdir(parents=True)
    return path


def discard(path: Path) -> None:
    """Delete a scratch tree of :func:`scratch` without making the step wait.

    Unlinking thousands of files (a restored cache) can take seconds on a busy
    disk; nothing needs them gone before the job ends, when the job's staging
    directory is removed anyway (deleting what is left). Not for secrets.
    """
    threading.Thread(
        target=shutil.rmtree,
        args=(path,),
        kwargs={"ignore_errors": True},
        name="circlet-discard",
        daemon=True,
    ).start()


def has_glob(pattern: str) -> bool:
    """True when ``pattern`` uses ``*``, ``?`` or ``[``."""
    return any(ch in _GLOB_CHARS for ch in pattern)


def glob_inside(ctx: StepContext, root: str, patterns: list[str]) -> list[str] | None:
    """Expand ``patterns`` relative to ``root`` inside the job; None if ``root`` is missing."""
    chunks: list[bytes] = []
    script = _GLOB_SCRIPT
    argv = [
        "/bin/sh",
        "-c",
        f'if command -v bash >/dev/null 2>&1; then exec bash -c "$0" glob "$@"; fi; {script}',
        script,
        root,
        *patterns,
    ]
    result = ctx.environment.exec(
        argv, env=ctx.environ, cwd=None, on_output=chunks.append, cancel=ctx.cancel
    )
    if result.exit_code == 3:
        return None
    found = [p for p in b"".join(chunks).decode("utf-8", "surrogateescape").split("\0") if p]
    return sorted(set(found))


def relative_inside(path: str, root: str) -> str | None:
    """``path`` (relative to ``root``, or absolute below it) as a clean relative path;
    None when it would leave ``root``."""
    joined = posixpath.normpath(posixpath.join(root, path))
    rel = posixpath.relpath(joined, root)
    if rel == ".." or rel.startswith("../"):
        return None
    return rel


def elapsed(start: float) -> str:
    """Go-style duration since ``start`` (a ``time.monotonic()`` value)."""
    return go_duration(time.monotonic() - start)
