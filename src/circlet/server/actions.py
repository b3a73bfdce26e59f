"""Actions on workflows: cancel, rerun (from start, from failed, failed tests only,
some jobs), approve. They reuse the scheduler on part of a workflow, with a
:class:`~circlet.server.runs.Relay` rewriting ids (see ``server.runs``)."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from circlet.engine import events as ev
from circlet.engine.jobfiles import failed_test_names
from circlet.engine.run_options import InheritedWorkspace
from circlet.engine.workflow_dag import upstream_of
from circlet.plan import JobNode, Pipeline, Requirement
from circlet.server import code as code_mod
from circlet.server.runs import (
    ActionError,
    Relay,
    RunPool,
)
from circlet.store.accounts import PipelineMeta, ProjectSettings

FAILED = ("failed", "infrastructure_fail", "canceled", "not_run")


class Runs(RunPool):
    """The runner pool plus the workflow actions the API and pages offer."""

    def cancel(self, workflow_id: str, actor: str) -> None:
        """Cancel a running workflow (only its jobs: the pipeline's other workflows go
        on) or one waiting for approval."""
        wf = self.records.get_workflow(workflow_id)
        if wf is None:
            raise ActionError("Workflow not found", 404)
        with self._lock:
            key = self._run_of_workflow.get(workflow_id)
            flags = self._workflow_cancels.get(key) if key else None
        if flags is not None:
            # Workflow names are unique in a run; the scheduler's ids differ from the
            # records' once a Relay rewrote them (an approval continuing a workflow).
            flags.cancel_workflow(wf.name)
            return
        if wf.status not in ("on_hold", "running"):
            raise ActionError(f"Workflow is {wf.status}, not running.", 409)
        # Nothing runs it any more (an approval wait, or a server restart): settle the records.
        reason = f"canceled by {actor}" if actor else "canceled"
        for job in self.records.jobs(wf.id):
            if job.status in ("on_hold", "blocked", "queued", "running"):
                self.sink(ev.JobStatusChanged(wf.id, job.id, job.name, "canceled", reason))
        self.sink(ev.WorkflowFinished(wf.id, "canceled"))
        self._finish_pipeline(wf.pipeline_id)

    def rerun(
        self,
        workflow_id: str,
        *,
        from_failed: bool,
        job_ids: list[str],
        actor: str,
        failed_tests: bool = False,
    ) -> str:
        """Run a workflow again as a new workflow of its pipeline; its id.

        ``failed_tests`` ("Rerun failed tests"): from failed, and each failed job that
        recorded failed tests gets only those through ``circleci tests run``."""
        if failed_tests:
            if job_ids:
                raise ActionError("Rerun failed tests reruns the failed jobs, not chosen ones.")
            from_failed = True
        wf = self.records.get_workflow(workflow_id)
        if wf is None:
            raise ActionError("Workflow not found", 404)
        if self.running_workflow(workflow_id):
            raise ActionError("Workflow is still running; cancel it first.", 409)
        pipeline = self.records.get_pipeline(wf.pipeline_id)
        project = self.accounts.project(pipeline.project) if pipeline else None
        if pipeline is None or project is None:
            raise ActionError("Project not found", 404)
        jobs = {j.name: j for j in self.records.jobs(workflow_id) if j.node_index == 0}
        with self._lock:
            earlier = dict(self._workspace_sources.get(workflow_id, {}))
        if job_ids:
            by_id = {j.id: j.name for j in jobs.values()}
            unknown = [i for i in job_ids if i not in by_id]
            if unknown:
                raise ActionError(f"Job {unknown[0]} is not part of this workflow.", 400)
            names: set[str] | None = {by_id[i] for i in job_ids}
        elif from_failed:
            names = {n for n, j in jobs.items() if j.status in FAILED}
            if not names:
                raise ActionError("Nothing failed in this workflow.", 400)
        else:
            names = None
        rerun_tests = self._failed_tests(workflow_id, names or set()) if failed_tests else None
        if rerun_tests == {}:
            raise ActionError(
                "No failed tests were recorded in this workflow's failed jobs "
                "(they need store_test_results and `circleci tests run`).",
                400,
            )
        meta = self.accounts.pipeline_meta([pipeline.id]).get(pipeline.id)
        started = threading.Event()
        new_id: list[str] = []

        def note(workflow: str) -> None:
            new_id.append(workflow)
            started.set()

        def work() -> None:
            try:
                code, plan = self._recompile(project, pipeline.number, pipeline.id, meta, pipeline)
                chosen = _subset(plan, wf.name, names, with_downstream=from_failed)
                inherited = _inherited_workspace(plan, wf.name, wf.id, set(jobs), earlier)
                self._execute(
                    chosen,
                    project=project,
                    code=code,
                    contexts=self._contexts(chosen, project.slug),
                    pipeline_id=str(uuid.uuid4()),
                    number=pipeline.number,
                    trigger=pipeline.trigger,
                    actor=actor,
                    workflow=wf.name,
                    sink=self.sink,
                    rerun_failed_tests=rerun_tests,
                    inherited_workspace=inherited,
                    relay=lambda sink, owned: Relay(
                        sink,
                        pipeline_id=pipeline.id,
                        keep_pipeline_events=False,
                        on_workflow=lambda w: _both(
                            owned, note, w, lambda x: self._note_sources(x, inherited)
                        ),
                    ),
                )
                self._finish_pipeline(pipeline.id)
            finally:
                started.set()

        self._submit(work)
        if not started.wait(60) or not new_id:
            raise ActionError("The rerun could not start (see the server log).", 500)
        return new_id[0]

    def _note_sources(self, workflow_id: str, inherited: InheritedWorkspace | None) -> None:
        if inherited is not None:
            with self._lock:
                self._workspace_sources[workflow_id] = dict(inherited.sources)

    def _failed_tests(self, workflow_id: str, names: set[str]) -> dict[str, list[str]]:
        """Job name → the files/classnames of its failed tests (every parallel copy's),
        for the jobs ``names`` that recorded any."""
        found: dict[str, list[str]] = {}
        for job in self.records.jobs(workflow_id):
            if job.name in names:
                failed = failed_test_names(self.records.test_cases(job.id))
                if failed:
                    merged = found.setdefault(job.name, [])
                    merged.extend(n for n in failed if n not in merged)
        return found

    def approve(self, workflow_id: str, approval_id: str, actor: str) -> None:
        """Approve an approval job; the jobs behind it then run in the same workflow."""
        wf = self.records.get_workflow(workflow_id)
        if wf is None:
            raise ActionError("Workflow not found", 404)
        job = self.records.job(approval_id)
        if job is None or job.workflow_id != workflow_id:
            raise ActionError("Approval request not found", 404)
        kinds = {str(j.get("name")): str(j.get("type", "build")) for j in wf.jobs}
        if kinds.get(job.name) != "approval":
            raise ActionError(f"Job {job.name} is not an approval job.", 400)
        if job.status != "on_hold":
            raise ActionError(f"Job {job.name} is {job.status}, not on hold.", 409)
        reason = f"approved by {actor}" if actor else "approved"
        self.sink(ev.JobStatusChanged(workflow_id, job.id, job.name, "success", reason))

        def work() -> None:
            self._continue(workflow_id, job.name, actor)

        with self._lock:
            key = self._run_of_workflow.get(workflow_id)
            if key is not None:  # its run still has other jobs going: continue after it
                self._after_run.setdefault(key, []).append(work)
                return
        self._submit(work)

    def _continue(self, workflow_id: str, approved: str, actor: str) -> None:
        wf = self.records.get_workflow(workflow_id)
        pipeline = self.records.get_pipeline(wf.pipeline_id) if wf else None
        project = self.accounts.project(pipeline.project) if pipeline else None
        if wf is None or pipeline is None or project is None:
            return
        meta = self.accounts.pipeline_meta([pipeline.id]).get(pipeline.id)
        code, plan = self._recompile(project, pipeline.number, pipeline.id, meta, pipeline)
        status = {j.name: j for j in self.records.jobs(workflow_id) if j.node_index == 0}
        flow = next((w for w in plan.workflows if w.name == wf.name), None)
        if flow is None:
            return
        waiting = {
            n.name
            for n in flow.jobs
            if n.name != approved
            and (
                status.get(n.name) is None
                or status[n.name].status in ("not_run", "on_hold", "blocked")
            )
        }
        chosen = _subset(plan, wf.name, _downstream(flow.jobs, {approved}) & waiting, False)
        # Back to running, keeping its start time (the wait counts, as on CircleCI).
        self.sink(
            ev.WorkflowStarted(
                pipeline.id, workflow_id, wf.name, wf.jobs, at=wf.started_at or time.time()
            )
        )
        self._execute(
            chosen,
            project=project,
            code=code,
            contexts=self._contexts(chosen, project.slug),
            pipeline_id=str(uuid.uuid4()),
            number=pipeline.number,
            trigger=pipeline.trigger,
            actor=actor,
            workflow=wf.name,
            sink=self.sink,
            run_key=workflow_id,
            relay=lambda sink, owned: Relay(
                sink,
                workflow_id=workflow_id,
                job_ids={name: j.id for name, j in status.items()},
                keep_pipeline_events=False,
                on_workflow=owned,
            ),
        )
        final = [j.status for j in self.records.jobs(workflow_id) if j.node_index == 0]
        self.sink(ev.WorkflowFinished(workflow_id, _workflow_status(final)))
        self._finish_pipeline(pipeline.id)

    def _recompile(
        self,
        project: ProjectSettings,
        number: int,
        pipeline_id: str,
        meta: PipelineMeta | None,
        record: Any,
    ) -> tuple[code_mod.Code, Pipeline]:
        code = code_mod.resolve(
            project,
            self.settings.checkouts_dir,
            branch=record.branch,
            tag=meta.tag if meta else None,
            revision=record.revision,
        )
        fake = meta or PipelineMeta(
            pipeline_id,
            project.slug,
            number,
            "created",
            record.trigger,
            "",
            record.branch,
            None,
            record.revision,
            None,
            None,
            {},
            [],
            record.created_at,
        )
        return code, self._compile(project, code, fake)

    def _finish_pipeline(self, pipeline_id: str) -> None:
        """The pipeline's status from the newest workflow of each name."""
        newest: dict[str, str] = {}
        for w in self.records.workflows(pipeline_id):
            newest[w.name] = w.status
        statuses = list(newest.values())
        if any(s in ("running", "on_hold") for s in statuses):
            return
        for word in ("canceled", "failed", "error"):
            if word in statuses:
                self.sink(ev.PipelineFinished(pipeline_id, cast(ev.WorkflowStatus, word)))
                return
        self.sink(ev.PipelineFinished(pipeline_id, "success" if statuses else "not_run"))


def _inherited_workspace(
    plan: Pipeline,
    workflow: str,
    workflow_id: str,
    ran: set[str],
    earlier: dict[str, str],
) -> InheritedWorkspace | None:
    """Where a rerun of ``workflow_id`` finds each job's workspace layers: there for
    the jobs that ran in it (``ran``), else where that workflow found them."""
    flow = next((w for w in plan.workflows if w.name == workflow), None)
    if flow is None:
        return None
    return InheritedWorkspace(
        upstream={n.name: upstream_of(flow, n.name) for n in flow.jobs},
        sources={
            n.name: workflow_id if n.name in ran else earlier.get(n.name, workflow_id)
            for n in flow.jobs
        },
    )


def _both(
    first: Callable[[str], None],
    second: Callable[[str], None],
    value: str,
    third: Callable[[str], None] | None = None,
) -> None:
    first(value)
    second(value)
    if third is not None:
        third(value)


def _downstream(nodes: tuple[JobNode, ...], roots: set[str]) -> set[str]:
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for n in nodes:
            if n.name in found:
                continue
            if any(r.job in roots or r.job in found for r in n.requires):
                found.add(n.name)
                changed = True
    return found


def _subset(
    plan: Pipeline, workflow: str, names: set[str] | None, with_downstream: bool
) -> Pipeline:
    """``plan`` with only ``workflow``, and in it only the jobs ``names`` (all when
    None; plus their downstream jobs when asked), requirements outside the set dropped."""
    flow = next((w for w in plan.workflows if w.name == workflow), None)
    if flow is None:
        raise ActionError(f"Workflow {workflow} is no longer in the config.", 409)
    if names is None:
        return replace(plan, workflows=(flow,))
    keep = set(names) | (_downstream(flow.jobs, names) if with_downstream else set())
    nodes = tuple(
        replace(
            n, requires=tuple(Requirement(r.job, r.statuses) for r in n.requires if r.job in keep)
        )
        for n in flow.jobs
        if n.name in keep
    )
    return replace(plan, workflows=(dataclasses.replace(flow, jobs=nodes),))


def _workflow_status(statuses: list[str]) -> ev.WorkflowStatus:
    if "canceled" in statuses:
        return "canceled"
    if "failed" in statuses or "infrastructure_fail" in statuses:
        return "failed"
    if "on_hold" in statuses:
        return "on_hold"
    if statuses and all(s == "not_run" for s in statuses):
        return "not_run"
    return "success"
