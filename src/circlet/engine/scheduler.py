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

Each job copy is handed to a :class:`~circlet.engine.dispatcher.Dispatcher` on a
pool thread: by default :class:`~circlet.engine.dispatcher.LocalDispatcher` (a
JobRunner in this process); ``circlet.cluster``'s dispatcher sends runner-class
jobs to a Celery queue and waits for them there.

``resume`` continues workflows another scheduler left unfinished (a server that
was killed): their ids, the jobs that ended keep their status, the copies already
sent to runners are handed to the dispatcher to wait for (``JobRequest.extra``
:data:`~circlet.engine.dispatcher.RESUMED`), and the rest is scheduled as usual.

The parts live next door: ``dispatcher`` (the seam), ``run_options`` (what a run
is told), ``resume`` (what it continues), ``workflow_dag`` (which jobs run and
their state), ``results`` (what it returns).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import cast

from circlet.engine import events as ev
from circlet.engine.dispatcher import (
    RESUMED,
    DispatchContext,
    Dispatcher,
    LocalDispatcher,
    dispatch_job,
)
from circlet.engine.environ import BuildIdentity
from circlet.engine.results import PipelineResult, WorkflowResult, pipeline_status, workflow_status
from circlet.engine.resume import DISPATCHED, Resume, ResumedWorkflow
from circlet.engine.run_options import RunOptions, WorkflowCancels, rerun_extra, workspace_extra
from circlet.engine.runner import JobRequest, JobResult, new_task_id
from circlet.engine.workflow_dag import ScheduledJob, ScheduledWorkflow, select_workflows
from circlet.executors.base import Executor
from circlet.plan import JobSpec, Pipeline
from circlet.store.api import BlobStore, RecordsReader

ExecutorFactory = Callable[[JobSpec], Executor]
POLL = 0.1  # seconds between cancel checks while jobs run


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
            flows = [
                ScheduledWorkflow(wf, nodes, keep_requires=job is None) for wf, nodes in selected
            ]
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
        status = pipeline_status([r.status for r in results], canceled=self.cancel.is_set())
        if self.resume is None:
            self.emit(ev.PipelineFinished(pipeline_id, status))
        return PipelineResult(pipeline_id, number, status, results, self.cancel.is_set())

    def _resumed_flow(self, rw: ResumedWorkflow) -> ScheduledWorkflow:
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
        return ScheduledWorkflow(found, nodes, keep_requires=True, resumed=rw)

    def _start_workflow(self, pipeline_id: str, flow: ScheduledWorkflow) -> None:
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

    def _set(self, j: ScheduledJob, status: ev.JobStatus, reason: str | None = None) -> None:
        j.state.to(status)
        j.outcome.status = status
        j.outcome.reason = reason
        self.emit(
            ev.JobStatusChanged(j.wf.workflow_id, j.outcome.job_id, j.node.name, status, reason)
        )

    def _loop(self, flows: list[ScheduledWorkflow], pipeline_id: str) -> None:
        running: dict[Future[JobResult], tuple[ScheduledJob, int]] = {}
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
        flows: list[ScheduledWorkflow],
        pipeline_id: str,
        pool: ThreadPoolExecutor,
        running: dict[Future[JobResult], tuple[ScheduledJob, int]],
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

    def _ready(self, j: ScheduledJob) -> tuple[bool, str | None] | None:
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
        j: ScheduledJob,
        pipeline_id: str,
        pool: ThreadPoolExecutor,
        running: dict[Future[JobResult], tuple[ScheduledJob, int]],
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
                    **rerun_extra(opts, j.node.name),
                    **workspace_extra(opts, j.node.name),
                    **({RESUMED: True} if known is not None else {}),
                },
            )
            future = pool.submit(dispatch_job, self.dispatcher, request, ctx)
            running[future] = (j, index)

    def _release(self, j: ScheduledJob) -> None:
        if j.node.serial_group:
            self._groups_busy.discard(j.node.serial_group)

    def _node_done(self, j: ScheduledJob, future: Future[JobResult]) -> None:
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

    def _cancel_waiting(self, flows: list[ScheduledWorkflow]) -> None:
        what = "pipeline" if self.cancel.is_set() else "workflow"
        for flow in flows:
            for j in flow.jobs.values():
                if j.state.status in ("queued", "blocked", "on_hold"):
                    self._set(j, "canceled", f"the {what} was canceled")

    def _settle_leftovers(self, flows: list[ScheduledWorkflow]) -> None:
        """Jobs still waiting when nothing runs any more wait on an approval: not run here."""
        for flow in flows:
            for j in flow.jobs.values():
                if j.state.status in ("queued", "blocked"):
                    holds = [d for d in j.requires if d in flow.jobs]
                    self._set(j, "not_run", f"waiting for approval upstream ({', '.join(holds)})")

    def _finish_workflow(self, flow: ScheduledWorkflow) -> WorkflowResult:
        statuses = [j.state.status for j in flow.jobs.values()]
        status = workflow_status(statuses, canceled=flow.cancel.is_set())
        self.emit(ev.WorkflowFinished(flow.workflow_id, status))
        return WorkflowResult(
            flow.workflow.name,
            flow.workflow_id,
            status,
            {name: j.outcome for name, j in flow.jobs.items()},
            {name: j.requires for name, j in flow.jobs.items()},
        )
