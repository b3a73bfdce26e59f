"""What a run of :func:`~circlet.engine.scheduler.run_pipeline` is told besides
the Pipeline: :class:`RunOptions` (the facts every job copy needs), where a rerun
finds the workspace layers of the jobs it does not rerun (:class:`InheritedWorkspace`),
per-workflow cancels (:class:`WorkflowCancels`), and the ``JobRequest.extra``
entries some of those options give a job copy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circlet.engine.jobfiles import RERUN_TESTS
from circlet.engine.steps.workspace import INHERITED_WORKSPACE


@dataclass(frozen=True)
class RunOptions:
    """Facts about the pipeline run that every job copy needs."""

    project: str
    branch: str | None = None
    tag: str | None = None
    revision: str | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)  # project variables
    contexts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    repo: Path | None = None
    commit: str | None = None
    username: str = ""
    repository_url: str = ""
    build_url: Callable[[int], str] | None = None
    staging_root: Path | None = None
    # "Rerun failed tests": job name → the files/classnames of its tests that failed in
    # the previous run; those jobs' ``circleci tests run`` keep only these (jobfiles).
    rerun_failed_tests: Mapping[str, Sequence[str]] | None = None
    # "Rerun from failed" / rerun some jobs: the jobs not rerun keep their workspace
    # layers from the workflow they ran in (attach_workspace reads them from there).
    inherited_workspace: InheritedWorkspace | None = None


@dataclass(frozen=True)
class InheritedWorkspace:
    """Where a rerun workflow's jobs find the layers of upstream jobs it does not rerun.

    ``upstream``: job name → its transitive upstream in the *original* workflow, in
    workflow order (:func:`~circlet.engine.workflow_dag.upstream_of`); ``sources``:
    job name → id of the workflow whose workspace holds that job's layers (usually
    the original workflow)."""

    upstream: Mapping[str, Sequence[str]]
    sources: Mapping[str, str]


class WorkflowCancels:
    """Per-workflow cancel flags of one :func:`run_pipeline` call.

    :meth:`cancel_workflow` (by workflow name or scheduler workflow id, before or
    during the run) cancels that workflow's jobs only; the run's own ``cancel``
    event still cancels every workflow."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}

    def cancel_workflow(self, name_or_id: str) -> None:
        """Cancel the workflow called (or with id) ``name_or_id``."""
        with self._lock:
            self._events.setdefault(name_or_id, threading.Event()).set()

    def bind(self, *keys: str) -> threading.Event:
        """The one flag of the workflow known by ``keys`` (shared by all of them)."""
        with self._lock:
            flag = next((self._events[k] for k in keys if k in self._events), None)
            flag = flag or threading.Event()
            for key in keys:
                self._events[key] = flag
            return flag


def rerun_extra(opts: RunOptions, job_name: str) -> dict[str, Any]:
    """The JobRequest extra of a "rerun failed tests" job (empty for any other job)."""
    failed = (opts.rerun_failed_tests or {}).get(job_name)
    return {} if failed is None else {RERUN_TESTS: list(failed)}


def workspace_extra(opts: RunOptions, job_name: str) -> dict[str, Any]:
    """The JobRequest extra of a rerun job whose upstream layers live elsewhere."""
    inherited = opts.inherited_workspace
    if inherited is None or not inherited.upstream.get(job_name):
        return {}
    upstream = list(inherited.upstream[job_name])
    sources = {n: inherited.sources[n] for n in upstream if n in inherited.sources}
    return {INHERITED_WORKSPACE: {"upstream": upstream, "sources": sources}}
