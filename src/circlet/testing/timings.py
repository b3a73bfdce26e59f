"""Timing tables for ``tests split --split-by=timings``.

The engine writes, before a job starts, a JSON file of the newest recorded run
of that job (``{"filename": {...}, "classname": {...}, "testname": {...}}``,
seconds) and names it in ``CIRCLET_TIMINGS_FILE`` inside the job; the agent
reads it back with :func:`load_timings`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from circlet.testing.agent import (
    TIMING_TYPES,
    TIMINGS_FILE_ENV,
    Timings,
    load_timings,
    normalize_path,
)
from circlet.testing.junit import TestCase

__all__ = [
    "TIMINGS_FILE_ENV",
    "TIMING_TYPES",
    "Timings",
    "empty_timings",
    "load_timings",
    "timings_from_cases",
    "write_timings_file",
]


def empty_timings() -> Timings:
    """A table with the three kinds and no entries."""
    return {kind: {} for kind in TIMING_TYPES}


def timings_from_cases(cases: Iterable[TestCase]) -> Timings:
    """Seconds per file, per classname and per test name, summed over ``cases``.

    Skipped tests count too (with their usually tiny time): they are part of the
    file's run. Files are keyed without a leading ``./``.
    """
    table = empty_timings()
    for case in cases:
        if case.file:
            key = normalize_path(case.file)
            table["filename"][key] = table["filename"].get(key, 0.0) + case.time
        if case.classname:
            table["classname"][case.classname] = (
                table["classname"].get(case.classname, 0.0) + case.time
            )
        if case.name:
            table["testname"][case.name] = table["testname"].get(case.name, 0.0) + case.time
    return table


def write_timings_file(path: Path, timings: Timings) -> Path:
    """Write ``timings`` as JSON atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({k: timings.get(k, {}) for k in TIMING_TYPES}, handle, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
