"""The ``Dispatcher`` seam: where the scheduler hands each job copy to run.

A :class:`Dispatcher` runs one copy on a scheduler pool thread and returns how it
ended. :class:`LocalDispatcher` (the default) runs a JobRunner in this process;
``circlet.cluster``'s dispatcher sends runner-class jobs to a Celery queue and
waits for them there. A copy marked :data:`RESUMED` in ``JobRequest.extra`` was
dispatched before a restart: the dispatcher waits for it instead of sending it.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from circlet.engine import events as ev
from circlet.engine.runner import JobRequest, JobResult, JobRunner
from circlet.executors.base import Executor
from circlet.plan import JobSpec
from circlet.store.api import BlobStore, RecordsReader

RESUMED = "circlet.resumed"  # JobRequest.extra: this copy was dispatched before a restart


@dataclass(frozen=True)
class DispatchContext:
    """What a dispatcher gets besides the job copy: the run's shared parts.

    ``executor`` is None when the dispatcher said the job does not run here
    (:meth:`Dispatcher.is_local`)."""

    executor: Executor | None
    blobs: BlobStore
    sink: ev.EventSink
    records: RecordsReader | None
    cancel: threading.Event
    staging_root: Path | None


class Dispatcher(Protocol):
    """Runs one job copy somewhere and returns how it ended (called on a pool thread,
    it blocks until the copy is done; events go to ``ctx.sink`` in order). One whose
    copies' last events may reach ``ctx.sink`` after their result also has
    ``drain(job_ids)``, which the scheduler calls before it ends the workflows."""

    def is_local(self, spec: JobSpec) -> bool:
        """True if ``spec`` runs in this process (the scheduler then makes its executor)."""
        ...

    def __call__(self, request: JobRequest, ctx: DispatchContext) -> JobResult: ...


class LocalDispatcher:
    """The default: a JobRunner on the scheduler's own pool thread."""

    def is_local(self, spec: JobSpec) -> bool:  # noqa: ARG002 - every job runs here
        """Every job runs here."""
        return True

    def __call__(self, request: JobRequest, ctx: DispatchContext) -> JobResult:
        """Run the copy with ``ctx.executor`` and return its result."""
        if ctx.executor is None:
            raise ValueError("LocalDispatcher needs an executor")
        runner = JobRunner(
            request,
            executor=ctx.executor,
            blobs=ctx.blobs,
            sink=ctx.sink,
            records=ctx.records,
            cancel=ctx.cancel,
            staging_root=ctx.staging_root,
        )
        return _run(runner)


def dispatch_job(dispatcher: Dispatcher, request: JobRequest, ctx: DispatchContext) -> JobResult:
    """``dispatcher(request, ctx)``; should it raise, the copy ends ``infrastructure_fail``."""
    try:
        return dispatcher(request, ctx)
    except Exception as exc:  # a dispatcher reports its own failures; this is a last resort
        reason = f"{type(exc).__name__}: {exc}"
        ctx.sink(ev.JobFinished(request.job_id, "infrastructure_fail", reason))
        return JobResult(
            "infrastructure_fail",
            reason,
            job_id=request.job_id,
            node_index=request.identity.node_index,
        )


def _run(runner: JobRunner) -> JobResult:
    try:
        runner.run()
    except Exception as exc:  # the runner reports its own failures; this is a last resort
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        # The records must not keep the job "running": JobFinished is sent if it
        # was not. The sink itself may be what failed; the result still says why.
        with contextlib.suppress(Exception):
            runner.finish("infrastructure_fail", reason)
        if runner.result.status in ("queued", "running"):
            runner.result.status = "infrastructure_fail"
            runner.result.reason = reason
    return runner.result
