"""The API's model layer: records and trigger facts → CircleCI-shaped schemas."""

from __future__ import annotations

import base64
import binascii
from typing import Literal, cast

from circlet.server.api import schemas as s
from circlet.server.format import iso
from circlet.store.accounts import PipelineMeta, ProjectSettings
from circlet.store.models import (
    ArtifactRecord,
    JobRecord,
    PipelineRecord,
    TestCaseRecord,
    WorkflowRecord,
)

VCS_ALIASES = {"github": "gh", "bitbucket": "bb", "gh": "gh", "bb": "bb"}
PROVIDERS = {"gh": "GitHub", "bb": "Bitbucket"}
TRIGGER_TYPES = {"local": "explicit", "explicit": "explicit", "api": "api", "webhook": "webhook"}


def normalize_slug(vcs: str, org: str, repo: str) -> str:
    """``github/acme/app`` → ``gh/acme/app`` (CircleCI accepts both spellings)."""
    return f"{VCS_ALIASES.get(vcs.lower(), vcs)}/{org}/{repo}"


def page_token(offset: int) -> str:
    """An opaque token for the next page."""
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def page_offset(token: str | None) -> int:
    """The offset a token stands for; 0 for none; ValueError for garbage."""
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("page-token is not valid") from exc
    kind, _, value = raw.partition(":")
    if kind != "o" or not value.isdigit() or len(value) > 9:
        raise ValueError("page-token is not valid")
    return int(value)


def pipeline_out(
    record: PipelineRecord | None,
    meta: PipelineMeta | None,
    project: ProjectSettings | None,
) -> s.PipelineOut:
    """A pipeline from its record and/or its trigger facts (one of them at least)."""
    assert record is not None or meta is not None
    pid = record.id if record else meta.pipeline_id  # type: ignore[union-attr]
    slug = record.project if record else meta.project  # type: ignore[union-attr]
    number = record.number if record else meta.number  # type: ignore[union-attr]
    created = meta.created_at if meta else record.created_at  # type: ignore[union-attr]
    state = (
        meta.state if meta else ("errored" if record and record.status == "error" else "created")
    )
    trigger_kind = meta.trigger_type if meta else (record.trigger if record else "api")
    trigger_type = TRIGGER_TYPES.get(trigger_kind, trigger_kind)
    if trigger_type not in ("scheduled_pipeline", "explicit", "api", "webhook", "schedule"):
        trigger_type = "api"
    branch = (record.branch if record else None) or (meta.branch if meta else None)
    revision = (record.revision if record else None) or (meta.revision if meta else None)
    url = project.source if project else ""
    vcs_key = slug.split("/", 1)[0]
    return s.PipelineOut(
        id=pid,
        errors=[s.PipelineError(**e) for e in (meta.errors if meta else [])],
        project_slug=slug,
        updated_at=iso(record.stopped_at or record.started_at) if record else iso(created),
        number=number,
        trigger_parameters=dict(meta.parameters) if meta else {},
        state=state,  # type: ignore[arg-type]
        created_at=iso(created) or "",
        trigger=s.Trigger(
            type=trigger_type,  # type: ignore[arg-type]
            received_at=iso(created) or "",
            actor=s.Actor(login=(meta.actor if meta else "") or "circlet"),
        ),
        vcs=s.Vcs(
            provider_name=PROVIDERS.get(vcs_key, "circlet"),
            target_repository_url=url,
            origin_repository_url=url,
            branch=None if meta and meta.tag else branch,
            tag=meta.tag if meta else None,
            revision=revision,
            commit=s.Commit(subject=meta.subject, body="") if meta and meta.subject else None,
        ),
    )


def workflow_out(w: WorkflowRecord, p: PipelineRecord, meta: PipelineMeta | None) -> s.WorkflowOut:
    """A workflow."""
    known = ("success", "running", "not_run", "failed", "error", "failing", "on_hold", "canceled")
    status = cast(s.WorkflowStatusOut, w.status if w.status in known else "error")
    return s.WorkflowOut(
        pipeline_id=p.id,
        id=w.id,
        name=w.name,
        project_slug=p.project,
        tag=meta.tag if meta else None,
        status=status,
        started_by=meta.actor if meta and meta.actor else None,
        pipeline_number=p.number,
        created_at=iso(w.created_at) or "",
        stopped_at=iso(w.stopped_at),
    )


def workflow_jobs(w: WorkflowRecord, jobs: list[JobRecord], project: str) -> list[s.WorkflowJob]:
    """The workflow's jobs in workflow order, with dependencies as job ids."""
    rows = {j.name: j for j in jobs if j.node_index == 0}
    out = []
    for spec in w.jobs:
        name = str(spec.get("name"))
        job = rows.get(name)
        if job is None:
            continue
        kind: Literal["build", "approval"] = (
            "approval" if spec.get("type") == "approval" else "build"
        )
        requires = [str(r) for r in spec.get("requires", [])]
        out.append(
            s.WorkflowJob(
                dependencies=[rows[r].id for r in requires if r in rows],
                job_number=job.build_num,
                id=job.id,
                started_at=iso(job.started_at),
                name=name,
                approved_by=(job.reason or "").removeprefix("approved by ") or None
                if kind == "approval" and job.status == "success"
                else None,
                project_slug=project,
                status=job.status,
                type=kind,
                stopped_at=iso(job.stopped_at),
                approval_request_id=job.id if kind == "approval" else None,
            )
        )
    return out


def job_details(
    nodes: list[JobRecord],
    w: WorkflowRecord,
    p: PipelineRecord,
    project: ProjectSettings | None,
    web_url: str,
) -> s.JobDetails:
    """``GET /project/{slug}/job/{number}`` from every parallel node of a build."""
    first = nodes[0]
    started = [n.started_at for n in nodes if n.started_at is not None]
    stopped = [n.stopped_at for n in nodes if n.stopped_at is not None]
    start = min(started) if started else None
    stop = max(stopped) if len(stopped) == len(nodes) and stopped else None
    kind, _, resource = first.executor.partition(" ")
    statuses = [n.status for n in nodes]
    status = first.status
    for word in ("running", "failed", "infrastructure_fail", "canceled"):
        if word in statuses:
            status = word
            break
    name = project.name if project else p.project.rsplit("/", 1)[-1]
    org = p.project.split("/")[1] if p.project.count("/") >= 2 else "local"
    return s.JobDetails(
        web_url=web_url,
        project=s.ProjectRef(
            id=p.project, slug=p.project, name=name, external_url=project.source if project else ""
        ),
        parallel_runs=[s.ParallelRun(index=n.node_index, status=n.status) for n in nodes],
        started_at=iso(start),
        latest_workflow=s.WorkflowRef(id=w.id, name=w.name),
        name=first.name,
        executor=s.ExecutorRef(resource_class=resource or "medium", type=kind or None),
        parallelism=first.node_total,
        status=status,
        number=first.build_num or 0,
        pipeline=s.PipelineRef(id=p.id),
        duration=round((stop - start) * 1000) if start is not None and stop is not None else None,
        created_at=iso(first.created_at) or "",
        messages=[s.JobMessage(type="info", message=first.reason)] if first.reason else [],
        contexts=[],
        organization=s.OrganizationRef(name=org),
        queued_at=iso(first.created_at) or "",
        stopped_at=iso(stop),
    )


def artifact_out(a: ArtifactRecord, base: str) -> s.ArtifactOut:
    """An artifact with its download URL on this server."""
    return s.ArtifactOut(
        path=a.path,
        node_index=a.node_index,
        url=f"{base}/artifacts/{a.job_id}/{a.node_index}/{a.path}",
    )


def test_out(t: TestCaseRecord) -> s.TestOut:
    """A test result, CircleCI's ``result`` words (success/failure/skipped)."""
    return s.TestOut(
        message=t.message,
        source="junit",
        run_time=t.time,
        file=t.file or None,
        result=t.result,
        name=t.name,
        classname=t.classname,
    )
