"""Workflows as CircleCI runs them: filters, the ``requires`` DAG, approval, cancel.

:func:`run_pipeline` runs every enabled workflow of a Pipeline whose jobs pass
their branch/tag filters, all workflows at once, on one pool of threads
(``max_parallel`` job copies at a time). A job starts when every job it
requires has ended with one of the required statuses (``success`` unless the
config says otherwise); if one ended otherwise the job is ``not_run``. An
approval job is ``on_hold`` (approved at once with ``approve=True``); a
``type: no-op`` job succeeds at once, without an environment. A workflow
with ``triggers`` (a schedule) runs only on ``schedule`` pipelines, unless
it is asked for by name.
``parallelism: N`` runs N copies of a job, one JobRunner each, under one
build number. Cancel (Ctrl-C) stops dispatching, cancels the running copies
and marks the waiting jobs ``canceled``.

Each job copy is handed to a :class:`Dispatcher` on a pool thread: by default
:class:`LocalDispatcher` (a JobRunner in this process); ``circlet.cluster``'s
dispatcher sends runner-class jobs to a Celery queue and waits for them there.

``resume`` continues workflows another scheduler left unfinished (a server that
was killed): their ids, the jobs that ended keep their status, the copies already
sent to runners are handed to the dispatcher to wait for (``JobRequest.extra``
:data:`RESUMED`), and the rest is scheduled as usual.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, cast

from circlet.engine import events as ev
from circlet.engine.environ import BuildIdentity
from circlet.engine.filters import job_runs
from circlet.engine.jobfiles import RERUN_TESTS
from circlet.engine.runner import JobRequest, JobResult, JobRunner, new_task_id
from circlet.engine.state import JobState
from circlet.engine.steps.workspace import INHERITED_WORKSPACE
from circlet.executors.base import Executor
from circlet.plan import JobNode, JobSpec, Pipeline, Workflow
from circlet.store.api import BlobStore, RecordsReader

ExecutorFactory = Callable[[JobSpec], Executor]
POLL = 0.1  # seconds between cancel checks while jobs run


@dataclass
class JobOutcome:
    """One workflow job (all its parallel copies)."""

    name: str
    workflow: str
    job_id: str  # the workflow job id (CIRCLE_WORKFLOW_JOB_ID; node 0's event id)
    status: ev.JobStatus
    build_num: int | None = None
    reason: str | None = None
    seconds: float = 0.0
    node_ids: list[str] = field(default_factory=list)
    nodes: list[JobResult] = field(default_factory=list)
    type: str = "build"

    @property
    def ran(self) -> bool:
        return bool(self.nodes)


@dataclass
class WorkflowResult:
    name: str
    workflow_id: str
    status: ev.WorkflowStatus
    jobs: dict[str, JobOutcome] = field(default_factory=dict)
    requires: dict[str, list[str]] = field(default_factory=dict)  # for the graph


@dataclass
class PipelineResult:
    pipeline_id: str
    number: int
    status: ev.WorkflowStatus
    workflows: list[WorkflowResult] = field(default_factory=list)
    canceled: bool = False

    def jobs(self) -> list[JobOutcome]:
        """Every job of every workflow, in workflow order."""
        return [j for wf in self.workflows for j in wf.jobs.values()]

    @property
    def ok(self) -> bool:
        """True when every job that ran succeeded (and nothing was canceled)."""
        ran = [j for j in self.jobs() if j.ran]
        return not self.canceled and all(j.status == "success" for j in ran)

    def job(self, name: str, workflow: str | None = None) -> JobOutcome:
        """The outcome of job ``name`` (KeyError if it is not part of the result)."""
        for wf in self.workflows:
            if (workflow is None or wf.name == workflow) and name in wf.jobs:
                return wf.jobs[name]
        raise KeyError(name)


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
    workflow order (:func:`upstream_of`); ``sources``: job name → id of the workflow
    whose workspace holds that job's layers (usually the original workflow)."""

    upstream: Mapping[str, Sequence[str]]
    sources: Mapping[str, str]


RESUMED = "circlet.resumed"  # JobRequest.extra: this copy was dispatched before a restart
DISPATCHED = "dispatched"  # a ResumedCopy sent to a runner and not handed back yet


@dataclass(frozen=True)
class ResumedCopy:
    """One job copy of a resumed workflow: ``status`` is how it ended, or
    :data:`DISPATCHED` (it is on a runner: the dispatcher waits for it)."""

    status: str
    reason: str | None = None


@dataclass(frozen=True)
class ResumedJob:
    """A workflow job as the records had it when its scheduler stopped.

    With ``copies`` (node index → copy) the job had started: the copies named are
    waited for or counted as ended, the others start now. Without, ``status`` is
    where it waits (queued, blocked, on_hold) or how it ended without running."""

    job_id: str
    status: ev.JobStatus
    build_num: int | None = None
    copies: Mapping[int, ResumedCopy] = field(default_factory=dict)


@dataclass(frozen=True)
class ResumedWorkflow:
    """A recorded workflow to continue: its id, its jobs (by name) and their
    ``requires`` as recorded (a rerun workflow holds only some of the config's jobs)."""

    workflow_id: str
    name: str
    started_at: float
    jobs: Mapping[str, ResumedJob]
    requires: Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class Resume:
    """What :func:`run_pipeline` continues instead of starting a pipeline. It emits no
    pipeline events: the caller settles the pipeline (it may hold other workflows)."""

    workflows: Sequence[ResumedWorkflow]


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


class _Job:
    """The scheduler's bookkeeping for one workflow job."""

    def __init__(self, wf: _Workflow, node: JobNode) -> None:
        self.wf = wf
        self.node = node
        self.state = JobState(what=node.name)
        self.outcome = JobOutcome(
            node.name, wf.workflow.name, str(uuid.uuid4()), "queued", type=node.type
        )
        self.pending = 0
        self.t0 = 0.0
        self.resumed: ResumedJob | None = None

    @property
    def requires(self) -> list[str]:
        return [r.job for r in self.node.requires]

    def resume(self, prior: ResumedJob) -> None:
        """Take the recorded state (no event: the records have it already)."""
        self.resumed = prior
        self.outcome.job_id = prior.job_id
        self.outcome.build_num = prior.build_num
        # A job that had started is launched again (its copies are waited for).
        status: ev.JobStatus = "queued" if prior.copies else prior.status
        if status == "running":
            status = "queued"
        self.state = JobState(status, what=self.node.name)
        self.outcome.status = status


class _Workflow:
    def __init__(
        self,
        workflow: Workflow,
        nodes: list[JobNode],
        *,
        keep_requires: bool,
        resumed: ResumedWorkflow | None = None,
    ) -> None:
        self.workflow = workflow
        self.workflow_id = resumed.workflow_id if resumed else str(uuid.uuid4())
        self.resumed = resumed
        self.cancel = threading.Event()  # set by the run's cancel or a workflow cancel
        self.jobs: dict[str, _Job] = {}
        for node in nodes:
            kept = node if keep_requires else _without_requires(node)
            self.jobs[node.name] = _Job(self, kept)
        self.status: ev.WorkflowStatus = "running"
        for name, prior in (resumed.jobs if resumed else {}).items():
            if name in self.jobs:
                self.jobs[name].resume(prior)

    def upstream(self, name: str) -> tuple[str, ...]:
        """All jobs ``name`` requires, transitively, in workflow order."""
        return upstream_of(self.workflow, name)


def upstream_of(workflow: Workflow, name: str) -> tuple[str, ...]:
    """All jobs ``name`` requires in ``workflow``, transitively, in workflow order."""
    nodes = {n.name: n for n in workflow.jobs}
    seen: set[str] = set()
    stack = [r.job for r in nodes[name].requires] if name in nodes else []
    while stack:
        dep = stack.pop()
        if dep in seen:
            continue
        seen.add(dep)
        if dep in nodes:
            stack.extend(r.job for r in nodes[dep].requires)
    return tuple(n.name for n in workflow.jobs if n.name in seen)


def _without_requires(node: JobNode) -> JobNode:
    return replace(node, requires=())


def select_workflows(
    pipeline: Pipeline,
    *,
    branch: str | None,
    tag: str | None,
    workflow: str | None = None,
    job: str | None = None,
    trigger: str = "local",
) -> list[tuple[Workflow, list[JobNode]]]:
    """The workflows to run and, for each, the jobs that pass their filters.

    A workflow with ``triggers`` (a schedule) runs only on a ``schedule``
    pipeline, and a schedule pipeline runs only such workflows, as on
    CircleCI; ``workflow`` naming one runs it whatever the trigger.
    With ``job``, only that job (by workflow name, else by job definition
    name: all matrix copies) in the first workflow that has it, filters and
    ``requires`` ignored: the user asked for it by name.
    """
    chosen: list[tuple[Workflow, list[JobNode]]] = []
    for wf in pipeline.workflows:
        if workflow is not None and wf.name != workflow:
            continue
        if workflow is None and job is None and bool(wf.triggers) != (trigger == "schedule"):
            continue
        if job is not None:
            nodes = [n for n in wf.jobs if n.name == job] or [
                n for n in wf.jobs if n.job.name == job
            ]
            if nodes:
                return [(wf, nodes)]
            continue
        if not wf.enabled:
            continue
        nodes = [n for n in wf.jobs if job_runs(n.filters, branch=branch, tag=tag)]
        if nodes:
            chosen.append((wf, nodes))
    return chosen


def run_pipeline(
    pipeline: Pipeline,
    *,
    options: RunOptions,
    executor_factory: ExecutorFactory,
    blobs: BlobStore,
    sink: ev.EventSink,
    records: RecordsReader | None = None,
    workflow: str | None = None,
    job: str | None = None,
    max_parallel: int = 2,
    cancel: threading.Event | None = None,
    approve: bool = False,
    pipeline_id: str | None = None,
    number: int | None = None,
    trigger: str = "local",
    dispatcher: Dispatcher | None = None,
    workflow_cancels: WorkflowCancels | None = None,
    resume: Resume | None = None,
) -> PipelineResult:
    """Run the selected workflows of ``pipeline`` to the end; see the module doc.
    ``dispatcher`` runs each job copy (default: :class:`LocalDispatcher`);
    ``cancel`` cancels every workflow, ``workflow_cancels`` one at a time;
    ``resume`` continues recorded workflows instead (see :class:`Resume`)."""
    scheduler = _Scheduler(
        pipeline,
        options=options,
        executor_factory=executor_factory,
        blobs=blobs,
        sink=sink,
        records=records,
        max_parallel=max_parallel,
        cancel=cancel or threading.Event(),
        approve=approve,
        dispatcher=dispatcher or LocalDispatcher(),
        workflow_cancels=workflow_cancels or WorkflowCancels(),
        resume=resume,
    )
    return scheduler.run(
        workflow=workflow, job=job, pipeline_id=pipeline_id, number=number, trigger=trigger
    )


class _Scheduler:
    def __init__(
        self,
        pipeline: Pipeline,
        *,
        options: RunOptions,
        executor_factory: ExecutorFactory,
        blobs: BlobStore,
        sink: ev.EventSink,
        records: RecordsReader | None,
        max_parallel: int,
        cancel: threading.Event,
        approve: bool,
        dispatcher: Dispatcher,
        workflow_cancels: WorkflowCancels,
        resume: Resume | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.resume = resume
        self.workflow_cancels = workflow_cancels
        self.dispatcher = dispatcher
        self.options = options
        self.executor_factory = executor_factory
        self.blobs = blobs
        self.records = records
        self.max_parallel = max(1, max_parallel)
        self.cancel = cancel
        self.approve = approve
        self._sink_lock = threading.Lock()
        self._raw_sink = sink
        self._build_counter = 0
        self._groups_busy: set[str] = set()

    def emit(self, event: ev.Event) -> None:
        # Jobs finish on pool threads; every sink sees one event at a time.
        with self._sink_lock:
            self._raw_sink(event)

    def _next_build_num(self) -> int:
        if self.records is not None:
            return self.records.next_build_num(self.options.project)
        self._build_counter += 1
        return self._build_counter

    # ------------------------------------------------------------------- run

    def run(
        self,
        *,
        workflow: str | None,
        job: str | None,
        pipeline_id: str | None,
        number: int | None,
        trigger: str,
    ) -> PipelineResult:
        opts = self.options
        pipeline_id = pipeline_id or str(uuid.uuid4())
        if number is None:
            number = self.records.next_pipeline_number(opts.project) if self.records else 1
        if self.resume is None:
            self.emit(
                ev.PipelineStarted(
                    pipeline_id,
                    number,
                    opts.project,
                    opts.branch,
                    opts.revision,
                    trigger,
                    self.pipeline.source,
                )
            )
            selected = select_workflows(
                self.pipeline,
                branch=opts.branch,
                tag=opts.tag,
                workflow=workflow,
                job=job,
                trigger=trigger,
            )
            flows = [_Workflow(wf, nodes, keep_requires=job is None) for wf, nodes in selected]
        else:
            flows = [self._resumed_flow(rw) for rw in self.resume.workflows]
        for flow in flows:
            flow.cancel = self.workflow_cancels.bind(flow.workflow.name, flow.workflow_id)
        for flow in flows:
            self._start_workflow(pipeline_id, flow)
        self._loop(flows, pipeline_id)
        # A dispatcher may hand a copy's last events on after its result (a fleet's
        # forwarder): they reach the sinks before the workflows end.
        drain = getattr(self.dispatcher, "drain", None)
        if drain is not None:
            drain([i for flow in flows for j in flow.jobs.values() for i in j.outcome.node_ids])
        results = [self._finish_workflow(flow) for flow in flows]
        status = _pipeline_status([r.status for r in results], canceled=self.cancel.is_set())
        if self.resume is None:
            self.emit(ev.PipelineFinished(pipeline_id, status))
        return PipelineResult(pipeline_id, number, status, results, self.cancel.is_set())

    def _resumed_flow(self, rw: ResumedWorkflow) -> _Workflow:
        """The config's workflow ``rw.name`` with the recorded jobs and requirements."""
        found = next((w for w in self.pipeline.workflows if w.name == rw.name), None)
        if found is None:
            raise ValueError(f"workflow {rw.name!r} is no longer in the config")
        nodes = [
            replace(
                n,
                requires=tuple(r for r in n.requires if r.job in rw.requires.get(n.name, ())),
            )
            for n in found.jobs
            if n.name in rw.jobs
        ]
        return _Workflow(found, nodes, keep_requires=True, resumed=rw)

    def _start_workflow(self, pipeline_id: str, flow: _Workflow) -> None:
        jobs = tuple(
            {"name": j.node.name, "requires": j.requires, "type": j.node.type}
            for j in flow.jobs.values()
        )
        if flow.resumed is not None:  # running again, since it first started
            at = flow.resumed.started_at
            self.emit(
                ev.WorkflowStarted(pipeline_id, flow.workflow_id, flow.workflow.name, jobs, at=at)
            )
            return
        self.emit(ev.WorkflowStarted(pipeline_id, flow.workflow_id, flow.workflow.name, jobs))
        for j in flow.jobs.values():
            if j.requires:
                self._set(j, "blocked")

    def _set(self, j: _Job, status: ev.JobStatus, reason: str | None = None) -> None:
        j.state.to(status)
        j.outcome.status = status
        j.outcome.reason = reason
        self.emit(
            ev.JobStatusChanged(j.wf.workflow_id, j.outcome.job_id, j.node.name, status, reason)
        )

    def _loop(self, flows: list[_Workflow], pipeline_id: str) -> None:
        running: dict[Future[JobResult], tuple[_Job, int]] = {}
        with ThreadPoolExecutor(self.max_parallel, thread_name_prefix="circlet-job") as pool:
            while True:
                if self.cancel.is_set():  # the whole run: every workflow's jobs see it
                    for flow in flows:
                        flow.cancel.set()
                live = [flow for flow in flows if not flow.cancel.is_set()]
                self._cancel_waiting([flow for flow in flows if flow.cancel.is_set()])
                progressed = True
                while progressed and live:  # a decision can unlock further decisions
                    progressed = self._dispatch(live, pipeline_id, pool, running)
                if not running:
                    break
                done, _ = wait(list(running), timeout=POLL, return_when=FIRST_COMPLETED)
                for future in done:
                    j, _index = running.pop(future)
                    self._node_done(j, future)
        self._settle_leftovers(flows)

    def _dispatch(
        self,
        flows: list[_Workflow],
        pipeline_id: str,
        pool: ThreadPoolExecutor,
        running: dict[Future[JobResult], tuple[_Job, int]],
    ) -> bool:
        progressed = False
        for flow in flows:
            for j in flow.jobs.values():
                if j.state.status not in ("queued", "blocked"):
                    continue
                verdict = self._ready(j)
                if verdict is None:
                    continue
                ok, reason = verdict
                progressed = True
                if not ok:
                    self._set(j, "not_run", reason)
                elif j.node.type == "approval":
                    self._set(j, "on_hold", "waiting for approval")
                    if self.approve:
                        self._set(j, "success", "approved (--approve)")
                elif j.node.type == "no-op":
                    j.state.to("running")  # nothing to start: it succeeds at once
                    self._set(j, "success", "no-op job")
                elif j.node.serial_group and j.node.serial_group in self._groups_busy:
                    progressed = False  # wait for the group's running job
                else:
                    self._launch(j, pipeline_id, pool, running)
        return progressed

    def _ready(self, j: _Job) -> tuple[bool, str | None] | None:
        """None: wait; (True, None): run; (False, reason): will never run."""
        for req in j.node.requires:
            dep = j.wf.jobs.get(req.job)
            if dep is None:
                return False, f"requires {req.job}, which does not run for this pipeline"
            status = dep.state.status
            if status == "on_hold" or not dep.state.terminal:
                return None
            if status not in req.statuses:
                return False, f"requires {req.job} ({'/'.join(req.statuses)}), which is {status}"
        return True, None

    def _launch(
        self,
        j: _Job,
        pipeline_id: str,
        pool: ThreadPoolExecutor,
        running: dict[Future[JobResult], tuple[_Job, int]],
    ) -> None:
        opts = self.options
        spec = j.node.job
        if j.state.status == "blocked":
            self._set(j, "queued")
        copies = j.resumed.copies if j.resumed is not None else {}
        total = max(1, spec.parallelism)
        build_num = j.outcome.build_num if copies and j.outcome.build_num else None
        build_num = build_num or self._next_build_num()
        j.outcome.build_num = build_num
        j.t0 = time.monotonic()
        if j.node.serial_group:
            self._groups_busy.add(j.node.serial_group)
        # Some copy goes to the dispatcher (not every one ended before a restart).
        starts = any(i not in copies or copies[i].status == DISPATCHED for i in range(total))
        try:
            local = starts and self.dispatcher.is_local(spec)
            executor = self.executor_factory(spec) if local else None
        except Exception as exc:  # no docker engine and the like: this job cannot start
            self._set(j, "infrastructure_fail", str(exc).splitlines()[0] if str(exc) else "")
            self._release(j)
            return
        secrets: dict[str, str] = dict(opts.secrets)
        for context in j.node.contexts:
            secrets.update(opts.contexts.get(context, {}))
        task_id = new_task_id()
        upstream = j.wf.upstream(j.node.name) if j.node.requires else ()
        j.pending = total
        # The job's own status moves with its copies: queued → running once dispatched.
        j.state.to("running")
        j.outcome.status = "running"
        ctx = DispatchContext(
            executor, self.blobs, self.emit, self.records, j.wf.cancel, opts.staging_root
        )
        for index in range(total):
            job_id = (
                j.outcome.job_id
                if index == 0
                else str(uuid.uuid5(uuid.UUID(j.outcome.job_id), str(index)))
            )
            j.outcome.node_ids.append(job_id)
            known = copies.get(index)
            if known is not None and known.status != DISPATCHED:  # it ended before
                ended: Future[JobResult] = Future()
                status = cast(ev.JobStatus, known.status)
                ended.set_result(JobResult(status, known.reason, job_id=job_id, node_index=index))
                running[ended] = (j, index)
                continue
            identity = BuildIdentity(
                job_name=j.node.name,
                build_num=build_num,
                project=opts.project,
                pipeline_id=pipeline_id,
                workflow_id=j.wf.workflow_id,
                workflow_job_id=j.outcome.job_id,
                working_directory=spec.working_directory,
                task_id=task_id,
                node_index=index,
                node_total=total,
                branch=opts.branch,
                tag=opts.tag,
                revision=opts.revision,
                username=opts.username,
                repository_url=opts.repository_url,
                build_url=opts.build_url(build_num) if opts.build_url else "",
            )
            request = JobRequest(
                spec=spec,
                identity=identity,
                job_id=job_id,
                secrets=secrets,
                repo=opts.repo,
                commit=opts.commit,
                upstream=upstream,
                extra={
                    **_rerun_extra(opts, j.node.name),
                    **_workspace_extra(opts, j.node.name),
                    **({RESUMED: True} if known is not None else {}),
                },
            )
            future = pool.submit(_dispatch, self.dispatcher, request, ctx)
            running[future] = (j, index)

    def _release(self, j: _Job) -> None:
        if j.node.serial_group:
            self._groups_busy.discard(j.node.serial_group)

    def _node_done(self, j: _Job, future: Future[JobResult]) -> None:
        result = future.result()
        j.outcome.nodes.append(result)
        j.pending -= 1
        if j.pending:
            return
        statuses = [r.status for r in j.outcome.nodes]
        status: ev.JobStatus
        if "canceled" in statuses:
            status = "canceled"
        elif "infrastructure_fail" in statuses:
            status = "infrastructure_fail"
        elif "failed" in statuses:
            status = "failed"
        else:
            status = "success"
        j.state.to(status)
        j.outcome.status = status
        j.outcome.reason = next((r.reason for r in j.outcome.nodes if r.reason), None)
        j.outcome.seconds = time.monotonic() - j.t0
        self._release(j)

    def _cancel_waiting(self, flows: list[_Workflow]) -> None:
        what = "pipeline" if self.cancel.is_set() else "workflow"
        for flow in flows:
            for j in flow.jobs.values():
                if j.state.status in ("queued", "blocked", "on_hold"):
                    self._set(j, "canceled", f"the {what} was canceled")

    def _settle_leftovers(self, flows: list[_Workflow]) -> None:
        """Jobs still waiting when nothing runs any more wait on an approval: not run here."""
        for flow in flows:
            for j in flow.jobs.values():
                if j.state.status in ("queued", "blocked"):
                    holds = [d for d in j.requires if d in flow.jobs]
                    self._set(j, "not_run", f"waiting for approval upstream ({', '.join(holds)})")

    def _finish_workflow(self, flow: _Workflow) -> WorkflowResult:
        statuses = [j.state.status for j in flow.jobs.values()]
        status = _workflow_status(statuses, canceled=flow.cancel.is_set())
        self.emit(ev.WorkflowFinished(flow.workflow_id, status))
        return WorkflowResult(
            flow.workflow.name,
            flow.workflow_id,
            status,
            {name: j.outcome for name, j in flow.jobs.items()},
            {name: j.requires for name, j in flow.jobs.items()},
        )


def _rerun_extra(opts: RunOptions, job_name: str) -> dict[str, Any]:
    """The JobRequest extra of a "rerun failed tests" job (empty for any other job)."""
    failed = (opts.rerun_failed_tests or {}).get(job_name)
    return {} if failed is None else {RERUN_TESTS: list(failed)}


def _workspace_extra(opts: RunOptions, job_name: str) -> dict[str, Any]:
    """The JobRequest extra of a rerun job whose upstream layers live elsewhere."""
    inherited = opts.inherited_workspace
    if inherited is None or not inherited.upstream.get(job_name):
        return {}
    upstream = list(inherited.upstream[job_name])
    sources = {n: inherited.sources[n] for n in upstream if n in inherited.sources}
    return {INHERITED_WORKSPACE: {"upstream": upstream, "sources": sources}}


def _dispatch(dispatcher: Dispatcher, request: JobRequest, ctx: DispatchContext) -> JobResult:
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


def _workflow_status(statuses: Sequence[str], *, canceled: bool) -> ev.WorkflowStatus:
    """CircleCI's workflow status from its jobs' statuses."""
    if canceled or "canceled" in statuses:
        return "canceled"
    if "failed" in statuses or "infrastructure_fail" in statuses:
        return "failed"
    if "on_hold" in statuses:
        return "on_hold"
    if statuses and all(s == "not_run" for s in statuses):
        return "not_run"
    return "success"


def _pipeline_status(statuses: list[ev.WorkflowStatus], *, canceled: bool) -> ev.WorkflowStatus:
    if not statuses:
        return "not_run"
    for word in ("canceled", "failed", "error", "on_hold"):
        if word in statuses:
            return word
    if canceled:
        return "canceled"
    if all(s == "not_run" for s in statuses):
        return "not_run"
    return "success"
