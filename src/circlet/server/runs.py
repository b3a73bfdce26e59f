"""The server's in-process runner pool: triggers, reruns, approvals, cancels.

A trigger is accepted at once (a pipeline number and id, state ``pending``)
and run on a pool thread: resolve the code (``server.code``), compile the
config for this pipeline's values, then ``engine.scheduler.run_pipeline`` with
the records store and the live notifier as sinks — the same call
``circlet run`` makes.

Reruns and approvals reuse the scheduler on a part of the workflow. A
:class:`Relay` sits between it and the sinks and rewrites ids, so that

* a rerun is a new workflow of the *same* pipeline (as on CircleCI), and
* the jobs after an approval continue the *same* workflow and keep the job
  ids the page already shows (the scheduler itself stops at an approval: it
  marks the jobs behind it ``not_run`` and ends the workflow ``on_hold``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circlet.engine import events as ev
from circlet.engine.resume import Resume
from circlet.engine.run_options import InheritedWorkspace, RunOptions, WorkflowCancels
from circlet.engine.scheduler import run_pipeline
from circlet.executors.base import Executor
from circlet.plan import JobSpec, Pipeline
from circlet.server import code as code_mod
from circlet.server.settings import ServerSettings
from circlet.store.accounts import AccountStore, PipelineMeta, ProjectSettings
from circlet.store.api import BlobStore
from circlet.store.records import RecordStore

if TYPE_CHECKING:
    from circlet.cluster.resume import Unfinished
    from circlet.cluster.store_base import Sealer

log = logging.getLogger(__name__)


class ActionError(Exception):
    """A rerun/approve/cancel that cannot be done now; ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TriggerRequest:
    project: str
    branch: str | None = None
    tag: str | None = None
    revision: str | None = None  # a webhook's pushed commit
    parameters: dict[str, Any] = field(default_factory=dict)
    trigger_type: str = "api"  # api | explicit | webhook | schedule
    actor: str = ""
    subject: str | None = None
    author: str | None = None
    workflow: str | None = None  # schedule: only the workflow whose cron fired
    schedule_name: str | None = None


class Relay:
    """An EventSink that rewrites the scheduler's ids before the real sinks."""

    def __init__(
        self,
        sink: ev.EventSink,
        *,
        pipeline_id: str | None = None,
        workflow_id: str | None = None,
        job_ids: dict[str, str] | None = None,
        keep_pipeline_events: bool = True,
        on_workflow: Callable[[str], None] | None = None,
    ) -> None:
        self._sink = sink
        self._pipeline_id = pipeline_id  # rewrite WorkflowStarted.pipeline_id to this
        self._workflow_id = workflow_id  # continue this workflow (drop its start/finish)
        self._job_ids = dict(job_ids or {})  # job name → existing job id
        self._keep = keep_pipeline_events
        self._on_workflow = on_workflow
        self._workflows: dict[str, str] = {}
        self._jobs: dict[str, str] = {}

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.PipelineStarted | ev.PipelineFinished) and not self._keep:
            return
        if isinstance(event, ev.WorkflowStarted):
            target = self._workflow_id or event.workflow_id
            self._workflows[event.workflow_id] = target
            if self._on_workflow is not None:
                self._on_workflow(target)
            if self._workflow_id is not None:
                return
            if self._pipeline_id is not None:
                event = replace(event, pipeline_id=self._pipeline_id)
        elif isinstance(event, ev.WorkflowFinished) and self._workflow_id is not None:
            return
        if isinstance(event, ev.JobStatusChanged | ev.JobStarted):
            first = not isinstance(event, ev.JobStarted) or event.node_index == 0
            if first and event.name in self._job_ids:
                self._jobs[event.job_id] = self._job_ids[event.name]
        changes: dict[str, str] = {}
        wf = getattr(event, "workflow_id", None)
        if wf is not None and wf in self._workflows:
            changes["workflow_id"] = self._workflows[wf]
        job = getattr(event, "job_id", None)
        if job is not None and job in self._jobs:
            changes["job_id"] = self._jobs[job]
        self._sink(replace(event, **changes) if changes else event)  # type: ignore[arg-type]


class RunPool:
    """Triggers and runs pipelines in this process (``Runs`` adds the actions)."""

    def __init__(
        self,
        settings: ServerSettings,
        records: RecordStore,
        accounts: AccountStore,
        blobs: BlobStore,
        sink: ev.EventSink,
        *,
        sealer: Sealer | None = None,
    ) -> None:
        self.settings = settings
        self.records = records
        self.accounts = accounts
        self.blobs = blobs
        self.sink = sink  # records + live notifier
        self._pool = ThreadPoolExecutor(max(1, settings.workers), "circlet-pipeline")
        self._lock = threading.Lock()
        self._cancels: dict[str, threading.Event] = {}  # run key → cancel flag
        self._workflow_cancels: dict[str, WorkflowCancels] = {}  # run key → one per workflow
        # rerun workflow id → job name → workflow whose workspace holds its layers
        self._workspace_sources: dict[str, dict[str, str]] = {}
        self._run_of_workflow: dict[str, str] = {}  # workflow id → run key
        self._after_run: dict[str, list[Callable[[], None]]] = {}  # run key → deferred work
        self._futures: set[Future[None]] = set()
        self._executors: dict[tuple[str, tuple[tuple[str, str], ...]], Executor] = {}
        self._agent_bin: Path | None = None
        self._closed = False
        # With a broker configured, jobs of runner classes (org/name) go to the fleet;
        # None (no broker, or no sealer for their secrets) keeps every job local.
        from circlet.cluster.dispatch import fleet_dispatcher  # imports Celery: only here

        self.dispatcher = (
            fleet_dispatcher(records, sealer, queue_prefix=settings.queue_prefix)
            if sealer is not None
            else None
        )

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Cancel what runs and wait for it to stop."""
        self._closed = True
        with self._lock:
            for flag in self._cancels.values():
                flag.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.dispatcher is not None:
            self.dispatcher.close()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until nothing runs (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = [f for f in self._futures if not f.done()]
            if not busy:
                return True
            time.sleep(0.05)
        return False

    def resume_unfinished(self) -> int:
        """Continue the pipelines a previous server process left running (it was
        killed: see :mod:`circlet.cluster.resume`); how many. Call once at start,
        before the fleet's reaper, so the jobs on runners are taken over first."""
        from circlet.cluster.resume import resume_state, running_pipelines

        candidates = running_pipelines(self.records)
        metas = self.accounts.pipeline_meta([p.id for p in candidates])
        store = self.dispatcher.store if self.dispatcher is not None else None
        count = 0
        for pipeline in candidates:
            if pipeline.id not in metas:  # not triggered here (a `circlet run` on this database)
                continue
            found = resume_state(self.records, store, self.sink, pipeline)
            if self.dispatcher is not None:
                self.dispatcher.hold(found.dispatched)
            log.warning(
                "circlet server: resuming pipeline %s #%d (%d workflows, %d jobs on runners)",
                pipeline.project,
                pipeline.number,
                len(found.resume.workflows),
                len(found.dispatched),
            )
            self._submit(functools.partial(self._resume, found, metas[pipeline.id]))
            count += 1
        return count

    def _resume(self, found: Unfinished, meta: PipelineMeta) -> None:
        from circlet.cluster.resume import check_plan, give_up, settle_pipeline

        pipeline = found.pipeline
        try:
            project = _existing(self.accounts.project(pipeline.project), pipeline.project)
            code = code_mod.resolve(
                project,
                self.settings.checkouts_dir,
                branch=pipeline.branch,
                tag=meta.tag,
                revision=pipeline.revision,
            )
            plan = self._compile(project, code, meta)
            contexts = self._contexts(plan, project.slug)
            check_plan(plan, found)
        except (code_mod.CodeError, _CompileError, PermissionError, KeyError) as exc:
            why = str(exc.args[0]) if exc.args else str(exc)
            log.warning("circlet server: cannot resume pipeline %s: %s", pipeline.id, why)
            if self.dispatcher is not None:
                self.dispatcher.release(found.dispatched)
            give_up(self.records, self.sink, found, why)
            return
        if found.resume.workflows:
            self._execute(
                plan,
                project=project,
                code=code,
                contexts=contexts,
                pipeline_id=pipeline.id,
                number=pipeline.number,
                trigger=pipeline.trigger,
                actor=meta.actor,
                workflow=None,
                sink=self.sink,
                resume=found.resume,
            )
        settle_pipeline(self.records, self.sink, pipeline.id)

    def running_workflow(self, workflow_id: str) -> bool:
        """Whether a run in this process owns ``workflow_id`` now."""
        with self._lock:
            return workflow_id in self._run_of_workflow

    def _submit(self, fn: Callable[[], None]) -> None:
        future = self._pool.submit(self._guard, fn)
        with self._lock:
            self._futures = {f for f in self._futures if not f.done()}
            self._futures.add(future)

    @staticmethod
    def _guard(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # a server thread must not die silently
            log.exception("circlet server: a pipeline run failed")

    # ------------------------------------------------------------------ trigger

    def trigger(self, req: TriggerRequest) -> PipelineMeta:
        """Accept a pipeline; it runs on the pool. KeyError if the project is unknown."""
        project = self.accounts.project(req.project)
        if project is None:
            raise KeyError(req.project)
        number = self.records.next_pipeline_number(project.slug)
        meta = PipelineMeta(
            pipeline_id=str(uuid.uuid4()),
            project=project.slug,
            number=number,
            state="pending",
            trigger_type=req.trigger_type,
            actor=req.actor,
            branch=req.branch if req.branch or req.tag else project.default_branch,
            tag=req.tag,
            revision=req.revision,
            subject=req.subject,
            author=req.author,
            parameters=dict(req.parameters),
            errors=[],
            created_at=time.time(),
        )
        self.accounts.record_trigger(meta)
        self._submit(lambda: self._run_trigger(project, meta, req))
        return meta

    def _run_trigger(
        self, project: ProjectSettings, meta: PipelineMeta, req: TriggerRequest
    ) -> None:
        record_trigger = "api" if meta.trigger_type == "explicit" else meta.trigger_type
        try:
            code = code_mod.resolve(
                project,
                self.settings.checkouts_dir,
                branch=None if req.tag else (req.branch or None),
                tag=req.tag,
                revision=req.revision,
            )
            plan = self._compile(project, code, meta)
            contexts = self._contexts(plan, project.slug)
        except (code_mod.CodeError, _CompileError, PermissionError, KeyError) as exc:
            kind = "config" if isinstance(exc, _CompileError) else "plan"
            message = str(exc.args[0]) if exc.args else str(exc)
            self.accounts.update_trigger(
                meta.pipeline_id, state="errored", errors=[{"type": kind, "message": message}]
            )
            self.sink(
                ev.PipelineStarted(
                    meta.pipeline_id,
                    meta.number,
                    project.slug,
                    meta.branch,
                    meta.revision,
                    record_trigger,
                )
            )
            self.sink(ev.PipelineFinished(meta.pipeline_id, "error"))
            return
        self.accounts.update_trigger(
            meta.pipeline_id,
            state="created",
            job_info=job_info(plan),
            branch=code.branch,
            revision=code.commit,
            subject=meta.subject or code.subject or None,
            author=meta.author or code.author or None,
        )
        self._execute(
            plan,
            project=project,
            code=code,
            contexts=contexts,
            pipeline_id=meta.pipeline_id,
            number=meta.number,
            trigger=record_trigger,
            actor=meta.actor,
            workflow=req.workflow,
            sink=self.sink,
        )

    def plan_for(self, project: ProjectSettings, branch: str) -> Pipeline:
        """The project's config compiled for ``branch`` now (for schedules)."""
        code = code_mod.resolve(
            project, self.settings.checkouts_dir, branch=branch, tag=None, revision=None
        )
        probe = PipelineMeta(
            str(uuid.uuid4()),
            project.slug,
            0,
            "created",
            "schedule",
            "",
            branch,
            None,
            code.commit,
            None,
            None,
            {},
            [],
            time.time(),
        )
        return self._compile(project, code, probe)

    # --------------------------------------------------------------- internals

    def _compile(
        self, project: ProjectSettings, code: code_mod.Code, meta: PipelineMeta
    ) -> Pipeline:
        from circlet import settings as global_settings
        from circlet.config.compile import compile_text
        from circlet.config.errors import ConfigError
        from circlet.config.values import pipeline_values

        values = pipeline_values(
            branch=code.branch,
            tag=code.tag,
            revision=code.commit,
            number=meta.number,
            project_url=code.origin_url,
            project_type="git" if project.kind == "git" else "local",
            trigger_source=meta.trigger_type,
            pipeline_id=meta.pipeline_id,
        )
        values["pipeline.project.slug"] = project.slug
        values["pipeline.trigger.type"] = meta.trigger_type
        values["pipeline.git.commit.subject"] = code.subject
        values["pipeline.git.commit.author_name"] = code.author.split(" <")[0]
        orb_dir = Path(global_settings.ORB_DIR.get())
        try:
            return compile_text(
                code.config_text,
                filename=code.config_name,
                values=values,
                params=meta.parameters,
                orb_dirs=[orb_dir] if orb_dir.is_dir() else [],
            )
        except ConfigError as exc:
            first = "; ".join(str(p) for p in exc.problems[:3]) or "invalid config"
            raise _CompileError(first) from exc

    def _contexts(self, plan: Pipeline, project: str) -> dict[str, dict[str, str]]:
        names = {c for wf in plan.workflows for node in wf.jobs for c in node.contexts}
        result = {}
        for name in sorted(names):
            try:
                result[name] = self.accounts.context_values(name, project)
            except KeyError:
                raise KeyError(f"context {name!r} does not exist") from None
        return result

    def _executor_factory(self, code: code_mod.Code) -> Callable[[JobSpec], Executor]:
        from circlet.executors.host import HostExecutor
        from circlet.testing.agent import install_agent

        with self._lock:
            if self._agent_bin is None:
                self._agent_bin = self.settings.home / "server" / "agent" / "bin"
                install_agent(self._agent_bin)
            agent_bin = self._agent_bin
        raw_images = code.local_settings.get("images")
        images = (
            {str(k): str(v) for k, v in raw_images.items()} if isinstance(raw_images, dict) else {}
        )
        kind = str(code.local_settings.get("executor") or self.settings.executor)
        host_key = ("host", ())
        with self._lock:
            host = self._executors.get(host_key)
            if host is None:
                host = HostExecutor(self.settings.work_dir, agent_bin=agent_bin)
                self._executors[host_key] = host
        if kind == "host":
            return lambda _spec: host
        docker_key = ("docker", tuple(sorted(images.items())))

        def factory(spec: JobSpec) -> Executor:
            if spec.executor is None or spec.executor.kind != "docker":
                return host
            with self._lock:
                docker = self._executors.get(docker_key)
                if docker is None:
                    from circlet.executors.docker import DockerExecutor

                    docker = DockerExecutor(agent_bin=agent_bin, image_map=images)
                    self._executors[docker_key] = docker
            return docker

        return factory

    def _execute(
        self,
        plan: Pipeline,
        *,
        project: ProjectSettings,
        code: code_mod.Code,
        contexts: dict[str, dict[str, str]],
        pipeline_id: str,
        number: int,
        trigger: str,
        actor: str,
        workflow: str | None,
        sink: ev.EventSink,
        run_key: str | None = None,
        relay: Callable[[ev.EventSink, Callable[[str], None]], ev.EventSink] | None = None,
        rerun_failed_tests: Mapping[str, Sequence[str]] | None = None,
        inherited_workspace: InheritedWorkspace | None = None,
        resume: Resume | None = None,
    ) -> None:
        run_key = run_key or pipeline_id
        cancel = threading.Event()
        workflow_cancels = WorkflowCancels()
        with self._lock:
            self._cancels[run_key] = cancel
            self._workflow_cancels[run_key] = workflow_cancels
            if self._closed:
                cancel.set()

        def owned(workflow_id: str) -> None:
            with self._lock:
                self._run_of_workflow[workflow_id] = run_key

        sink = relay(sink, owned) if relay is not None else Relay(sink, on_workflow=owned)
        base = self.settings.base_url.rstrip("/")
        staging = self.settings.home / "server" / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        options = RunOptions(
            project=project.slug,
            branch=code.branch,
            tag=code.tag,
            revision=code.commit,
            secrets=self.accounts.env_values(project.slug),
            contexts=contexts,
            repo=code.repo,
            commit=code.commit,
            username=actor,
            repository_url=code.origin_url,
            build_url=(lambda n: f"{base}/gh-job/{project.slug}/{n}") if base else None,
            staging_root=staging,
            rerun_failed_tests=rerun_failed_tests,
            inherited_workspace=inherited_workspace,
        )
        try:
            run_pipeline(
                plan,
                options=options,
                executor_factory=self._executor_factory(code),
                blobs=self.blobs,
                sink=sink,
                records=self.records,
                workflow=workflow,
                max_parallel=self.settings.job_parallelism,
                cancel=cancel,
                pipeline_id=pipeline_id,
                number=number,
                trigger=trigger,
                dispatcher=self.dispatcher,
                workflow_cancels=workflow_cancels,
                resume=resume,
            )
        finally:
            with self._lock:
                self._cancels.pop(run_key, None)
                self._workflow_cancels.pop(run_key, None)
                for wf, key in list(self._run_of_workflow.items()):
                    if key == run_key:
                        del self._run_of_workflow[wf]
                deferred = self._after_run.pop(run_key, [])
            for work in deferred:
                self._submit(work)


def _existing(project: ProjectSettings | None, slug: str) -> ProjectSettings:
    if project is None:
        raise code_mod.CodeError(f"project {slug} no longer exists")
    return project


def job_info(plan: Pipeline) -> dict[str, dict[str, Any]]:
    """What the job page shows about each job's executor, from the Plan."""
    info: dict[str, dict[str, Any]] = {}
    for wf in plan.workflows:
        for node in wf.jobs:
            spec = node.job
            ex = spec.executor
            info[node.name] = {
                "executor": ex.kind if ex else "approval",
                "image": ex.images[0].image
                if ex and ex.images
                else (ex.machine_image if ex else None),
                "resource_class": spec.resource_class
                or (ex.resource_class if ex else None)
                or "medium",
                "parallelism": spec.parallelism,
                "contexts": list(node.contexts),
            }
    return info


class _CompileError(Exception):
    """The config does not compile (the first problems, located)."""
