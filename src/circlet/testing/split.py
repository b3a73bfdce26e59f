"""``tests glob`` / ``tests split`` / ``tests run`` on the host side.

The logic lives in :mod:`circlet.testing.agent` (a stdlib-only script that is
also copied into job environments as ``circleci``); this module is the name the
rest of circlet imports it by, so there is one implementation.
"""

from __future__ import annotations

from circlet.testing.agent import (
    AUTODETECT_FAILED,
    NO_TESTS_FOUND,
    NO_TIMINGS,
    SPLIT_BY,
    TIMING_TYPES,
    AgentError,
    SplitOptions,
    cmd_glob,
    cmd_run,
    cmd_split,
    compute_weights,
    detect_timing_type,
    expand_braces,
    glob,
    node_from_env,
    parse_duration,
    parse_items,
    split,
    split_items,
)

__all__ = [
    "AUTODETECT_FAILED",
    "NO_TESTS_FOUND",
    "NO_TIMINGS",
    "SPLIT_BY",
    "TIMING_TYPES",
    "AgentError",
    "SplitOptions",
    "cmd_glob",
    "cmd_run",
    "cmd_split",
    "compute_weights",
    "detect_timing_type",
    "expand_braces",
    "glob",
    "node_from_env",
    "parse_duration",
    "parse_items",
    "split",
    "split_items",
]
