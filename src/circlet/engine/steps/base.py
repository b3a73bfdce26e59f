"""What a built-in step handler receives and returns.

The JobRunner builds one :class:`StepContext` per job (per parallel copy) and
calls ``HANDLERS[step.type](step, ctx)`` for each step. A handler never calls
Docker or subprocess itself: it goes through ``ctx.environment`` (the
executor's Environment) or ``ctx.shell`` (which also masks and streams).

CHANGED (engine core, additive):
- ``write`` accepts ``str`` or ``bytes`` (bytes are decoded incrementally), so
  it can be passed straight to ``Environment.exec(on_output=ctx.write)``;
  everything written is masked and becomes ``Output`` events of the current step.
- ``shell(command, *, cwd=None, env=None, stdin=None, timeout=None,
  no_output_timeout=None, quiet=False) -> ExecResult`` runs ``/bin/sh -c
  command`` in the environment with ``ctx.environ`` (plus ``env``), ``cwd``
  default ``ctx.working_directory``, cancellable by ``ctx.cancel``; its output
  is masked and streamed to the current step unless ``quiet=True``.
- ``capture(command, *, cwd=None, env=None, stdin=None) -> tuple[ExecResult,
  str]``: the same, but the (masked) output is returned, not shown.
- ``index``: the current step's display index (Spin up environment is 0).
- ``task_data``: a private directory inside the environment for engine files.
- A handler returning ``StepOutcome("skipped")`` (nothing to do, e.g. the cache
  key exists) is shown and recorded as ``success``, as CircleCI shows it.
- The JobRunner gives each step its own copy of the context
  (``dataclasses.replace``), so a handler may not keep state in it between steps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from circlet.engine.events import EventSink
from circlet.executors.base import Environment, ExecResult
from circlet.plan import JobSpec, Step
from circlet.store.api import BlobStore


@dataclass(frozen=True)
class StepOutcome:
    status: Literal["success", "failed", "canceled", "timedout", "skipped"]
    exit_code: int | None = None
    reason: str | None = None  # one line, shown under a failed step


@dataclass
class StepContext:
    """Everything a step may use. Built by the JobRunner; handlers treat it read-only
    except ``environ`` (``run`` steps append nothing: BASH_ENV carries state)."""

    job: JobSpec
    job_id: str
    job_name: str  # the workflow's name for this job (after matrix/alias)
    project: str  # project slug, e.g. "local/lettings" or "gh/org/repo"
    workflow_id: str
    pipeline_id: str
    build_num: int
    node_index: int
    node_total: int
    branch: str | None
    tag: str | None
    revision: str | None
    environment: Environment
    environ: dict[str, str]  # the job's variables, passed to every exec
    working_directory: str  # absolute path inside the environment
    blobs: BlobStore
    staging: Path  # a private host directory for this job copy (removed after the job)
    sink: EventSink
    write: Callable[[str | bytes], None]  # append to the current step's output (masked)
    shell: Callable[..., ExecResult]  # shell(command, *, cwd=None, env=None, ...) masked+streamed
    capture: Callable[..., tuple[ExecResult, str]]  # capture(command, …) → (result, output)
    cancel: threading.Event
    # checkout: the host repository and the commit to check out (a snapshot of the
    # working tree unless --commit was given); None when there is no repository.
    repo: Path | None = None
    commit: str | None = None
    # attach_workspace: upstream jobs of this node, in workflow order (transitive)
    upstream: tuple[str, ...] = ()
    secrets: Mapping[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    index: int = 0  # the current step's display index
    task_data: str = ""  # private engine directory inside the environment


StepHandler = Callable[[Step, StepContext], StepOutcome]
