"""The per-job files *Preparing environment variables* makes, in one exec.

The job's working directory, ``$BASH_ENV``, and the agent's task-data
directory holding the test timings and every ``run`` step's script (written
once, so a step costs exactly one process start). The files arrive as a tar
on stdin: ``tar`` is in every image CircleCI supports (its caches need it).
The same exec tries to create the halt probe (see :mod:`circlet.engine.jobstaging`).
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from circlet.engine.steps import run as run_step_module
from circlet.plan import RunStep, Step

# JobRequest.extra key: the failed tests (files and classnames) of a "rerun failed
# tests" job copy; the agent's ``tests run`` keeps only stdin items naming one of them.
RERUN_TESTS = "rerun_failed_tests"
RERUN_TESTS_NAME = "rerun-tests.txt"

# $1 working directory, $2 $BASH_ENV, $3 task data, $4 the halt probe ("" for
# none), tried in a subshell: a failed redirection of `:` would end a POSIX shell.
INIT_SCRIPT = (
    'mkdir -p "$1" "$3" && : > "$2" && tar -x -o -f - -C "$3" '
    '&& { [ -z "$4" ] || (: > "$4") 2>/dev/null || :; }'
)


class _TestCase(Protocol):
    @property
    def classname(self) -> str: ...
    @property
    def file(self) -> str: ...
    @property
    def result(self) -> str: ...


def failed_test_names(cases: Iterable[_TestCase]) -> list[str]:
    """The ``file`` and ``classname`` of each failed (or errored) case, once each, in
    order: what ``circleci tests run`` matches its input against in a rerun."""
    names: dict[str, None] = {}
    for case in cases:
        if case.result in ("failure", "error"):
            for name in (case.file, case.classname):
                if name:
                    names.setdefault(name, None)
    return list(names)


def init_argv(working_directory: str, bash_env: str, task_data: str, probe: str) -> list[str]:
    """The argv of the exec that makes the per-job files (its stdin: :func:`task_data_bundle`)."""
    return [
        "/bin/sh",
        "-c",
        INIT_SCRIPT,
        "circlet-init",
        working_directory,
        bash_env,
        task_data,
        probe,
    ]


def task_data_bundle(
    steps: tuple[Step, ...],
    task_data: str,
    timings: Mapping[str, Any],
    failed_tests: Sequence[str] | None = None,
) -> tuple[bytes, dict[int, str]]:
    """A tar of the agent's timings and every run step's script, and the scripts' paths
    inside (by step display index: the plan's steps start at 2). ``failed_tests`` (a
    "rerun failed tests" job) become :data:`RERUN_TESTS_NAME`, one a line."""
    files = {"timings.json": json.dumps(timings)}
    if failed_tests is not None:
        files[RERUN_TESTS_NAME] = "".join(f"{name}\n" for name in failed_tests)
    scripts: dict[int, str] = {}
    for offset, step in enumerate(steps):
        if isinstance(step, RunStep):
            name = f"step-{offset + 2}.sh"
            files[name] = run_step_module.script_text(step.command)
            scripts[offset + 2] = f"{task_data}/{name}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), scripts
