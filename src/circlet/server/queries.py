"""Read queries the server needs beyond ``RecordStore``'s: a whole dashboard page
in a fixed number of round trips, durations of earlier runs, Insights figures.

They read the records tables (``store.models``) directly, portable SQL only,
and return the records' own plain values.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, and_, case, func, or_, select
from sqlalchemy.orm import Session

from circlet.store.models import (
    Job,
    JobRecord,
    Pipeline,
    PipelineRecord,
    TestCaseRow,
    Workflow,
    WorkflowRecord,
    job_record,
    pipeline_record,
    workflow_record,
)


@dataclass
class WorkflowRow:
    workflow: WorkflowRecord
    jobs: list[JobRecord]
    previous_duration: float | None = None

    @property
    def waiting(self) -> list[str]:
        """Jobs of the workflow that have no record yet (about to be queued)."""
        known = {j.name for j in self.jobs}
        return [str(s.get("name")) for s in self.workflow.jobs if s.get("name") not in known]


@dataclass
class PipelineRow:
    pipeline: PipelineRecord
    workflows: list[WorkflowRow] = field(default_factory=list)


@dataclass(frozen=True)
class PipelineFilter:
    """What the All Pipelines page and the list APIs filter on. ``visible`` None
    means every project (an admin); an empty tuple means none."""

    visible: tuple[str, ...] | None = None
    project: str | None = None
    branch: str | None = None
    status: str | None = None
    since: float | None = None
    org_prefix: str | None = None  # "gh/acme": projects under that org


def _pipelines_query(flt: PipelineFilter):  # type: ignore[no-untyped-def]
    query = select(Pipeline)
    if flt.visible is not None:
        query = query.where(Pipeline.project.in_(list(flt.visible) or [""]))
    if flt.project:
        query = query.where(Pipeline.project == flt.project)
    if flt.org_prefix:
        query = query.where(Pipeline.project.like(flt.org_prefix.replace("%", "") + "/%"))
    if flt.branch:
        query = query.where(Pipeline.branch == flt.branch)
    if flt.status:
        query = query.where(Pipeline.status == flt.status)
    if flt.since is not None:
        query = query.where(Pipeline.created_at >= flt.since)
    return query.order_by(Pipeline.created_at.desc(), Pipeline.number.desc())


def list_pipelines(
    engine: Engine, flt: PipelineFilter, *, limit: int, offset: int = 0
) -> list[PipelineRecord]:
    """Pipelines newest first, filtered."""
    with Session(engine) as s:
        rows = s.scalars(_pipelines_query(flt).limit(limit).offset(offset))
        return [pipeline_record(r) for r in rows]


def dashboard(
    engine: Engine, flt: PipelineFilter, *, limit: int, offset: int = 0
) -> tuple[list[PipelineRow], bool]:
    """One All Pipelines page: pipelines with their workflows, jobs and the
    duration of each workflow's previous finished run (same project and
    workflow name). Returns (rows, whether more pages follow)."""
    with Session(engine) as s:
        pipelines = [
            pipeline_record(r)
            for r in s.scalars(_pipelines_query(flt).limit(limit + 1).offset(offset))
        ]
        more = len(pipelines) > limit
        pipelines = pipelines[:limit]
        ids = [p.id for p in pipelines]
        workflows: dict[str, list[WorkflowRecord]] = defaultdict(list)
        if ids:
            query = (
                select(Workflow)
                .where(Workflow.pipeline_id.in_(ids))
                .order_by(Workflow.created_at, Workflow.name)
            )
            for wrow in s.scalars(query):
                workflows[wrow.pipeline_id].append(workflow_record(wrow))
        wf_ids = [w.id for ws in workflows.values() for w in ws]
        jobs: dict[str, list[JobRecord]] = defaultdict(list)
        if wf_ids:
            job_query = (
                select(Job)
                .where(Job.workflow_id.in_(wf_ids), Job.node_index == 0)
                .order_by(Job.created_at, Job.name)
            )
            for j in s.scalars(job_query):
                jobs[j.workflow_id].append(job_record(j))
        rows = []
        for p in pipelines:
            row = PipelineRow(p)
            for w in workflows.get(p.id, []):
                row.workflows.append(WorkflowRow(w, in_config_order(w, jobs.get(w.id, []))))
            rows.append(row)
        _fill_previous(s, rows)
    return rows, more


def in_config_order(w: WorkflowRecord, jobs: list[JobRecord]) -> list[JobRecord]:
    """Jobs in the order the config lists them (records keep creation order)."""
    order = {str(spec.get("name")): i for i, spec in enumerate(w.jobs)}
    return sorted(jobs, key=lambda j: (order.get(j.name, len(order)), j.name, j.node_index))


def _fill_previous(s: Session, rows: list[PipelineRow]) -> None:
    """Previous durations: first from the page itself (the next older row of the
    same project and workflow), then one query per workflow still missing."""
    newest_first = [(r.pipeline, w) for r in rows for w in r.workflows]
    for i, (p, w) in enumerate(newest_first):
        for q, older in newest_first[i + 1 :]:
            if (
                q.project == p.project
                and older.workflow.name == w.workflow.name
                and older.workflow.duration is not None
                and older.workflow.status == "success"
            ):
                w.previous_duration = older.workflow.duration
                break
        else:
            if w.workflow.duration is not None:
                w.previous_duration = previous_duration(s, p.project, w.workflow.name, p.created_at)


def previous_duration(s: Session, project: str, workflow: str, before: float) -> float | None:
    """Duration of the newest successful ``workflow`` of ``project`` created before ``before``."""
    query = (
        select(Workflow.started_at, Workflow.stopped_at)
        .join(Pipeline, Pipeline.id == Workflow.pipeline_id)
        .where(
            Pipeline.project == project,
            Pipeline.created_at < before,
            Workflow.name == workflow,
            Workflow.status == "success",
            Workflow.stopped_at.is_not(None),
        )
        .order_by(Pipeline.created_at.desc())
        .limit(1)
    )
    row = s.execute(query).first()
    if row is None or row[0] is None or row[1] is None:
        return None
    return max(0.0, row[1] - row[0])


def branches(engine: Engine, visible: tuple[str, ...] | None, project: str | None) -> list[str]:
    """Branch names seen in pipelines (for the filter menu), most recent 200."""
    query = select(Pipeline.branch).where(Pipeline.branch.is_not(None))
    if visible is not None:
        query = query.where(Pipeline.project.in_(list(visible) or [""]))
    if project:
        query = query.where(Pipeline.project == project)
    query = query.group_by(Pipeline.branch).order_by(func.max(Pipeline.created_at).desc())
    with Session(engine) as s:
        return [b for b in s.scalars(query.limit(200)) if b]


def projects_with_pipelines(engine: Engine) -> list[str]:
    """Every project that has pipelines."""
    with Session(engine) as s:
        return list(s.scalars(select(Pipeline.project).group_by(Pipeline.project)))


def job_pipeline(
    engine: Engine, job_id: str
) -> tuple[JobRecord, WorkflowRecord, PipelineRecord] | None:
    """A job with its workflow and pipeline, in one query."""
    query = (
        select(Job, Workflow, Pipeline)
        .join(Workflow, Workflow.id == Job.workflow_id)
        .join(Pipeline, Pipeline.id == Workflow.pipeline_id)
        .where(Job.id == job_id)
    )
    with Session(engine) as s:
        row = s.execute(query).first()
        if row is None:
            return None
        return job_record(row[0]), workflow_record(row[1]), pipeline_record(row[2])


def workflow_nodes(engine: Engine, workflow_id: str) -> list[JobRecord]:
    """All job rows of a workflow, parallel copies included."""
    query = select(Job).where(Job.workflow_id == workflow_id).order_by(Job.created_at, Job.name)
    with Session(engine) as s:
        return [job_record(j) for j in s.scalars(query)]


# ------------------------------------------------------------------ insights


@dataclass(frozen=True)
class DayStats:
    day: str  # YYYY-MM-DD (UTC)
    runs: int
    successes: int
    p50: float | None
    p95: float | None

    @property
    def success_rate(self) -> float | None:
        return self.successes * 100.0 / self.runs if self.runs else None


@dataclass(frozen=True)
class WorkflowInsight:
    name: str
    runs: int
    success_rate: float | None
    p50: float | None
    p95: float | None
    days: tuple[DayStats, ...]


@dataclass(frozen=True)
class FlakyTest:
    classname: str
    name: str
    file: str
    job: str
    runs: int
    failures: int


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def workflow_insights(
    engine: Engine, project: str, *, days: int = 30, now: float | None = None
) -> list[WorkflowInsight]:
    """Per workflow name: success rate and duration p50/p95, overall and per day."""
    now = now if now is not None else time.time()
    since = now - days * 86400
    query = (
        select(Workflow.name, Workflow.status, Workflow.started_at, Workflow.stopped_at)
        .join(Pipeline, Pipeline.id == Workflow.pipeline_id)
        .where(
            Pipeline.project == project,
            Workflow.created_at >= since,
            Workflow.status.in_(("success", "failed", "error", "canceled")),
        )
    )
    per: dict[str, list[tuple[str, float | None, float]]] = defaultdict(list)
    with Session(engine) as s:
        for name, status, started, stopped in s.execute(query):
            secs = stopped - started if started is not None and stopped is not None else None
            per[name].append((status, secs, started or since))
    result = []
    for name in sorted(per):
        runs = per[name]
        by_day: dict[str, list[tuple[str, float | None]]] = defaultdict(list)
        for status, secs, at in runs:
            by_day[time.strftime("%Y-%m-%d", time.gmtime(at))].append((status, secs))
        day_stats = []
        for day_index in range(days, -1, -1):
            day = time.strftime("%Y-%m-%d", time.gmtime(now - day_index * 86400))
            items = by_day.get(day, [])
            ok = [secs for st, secs in items if st == "success" and secs is not None]
            day_stats.append(
                DayStats(
                    day,
                    len(items),
                    sum(1 for st, _ in items if st == "success"),
                    percentile(ok, 0.5),
                    percentile(ok, 0.95),
                )
            )
        ok_all = [secs for st, secs, _ in runs if st == "success" and secs is not None]
        successes = sum(1 for st, _, _ in runs if st == "success")
        result.append(
            WorkflowInsight(
                name,
                len(runs),
                successes * 100.0 / len(runs) if runs else None,
                percentile(ok_all, 0.5),
                percentile(ok_all, 0.95),
                tuple(day_stats),
            )
        )
    return result


def flaky_tests(
    engine: Engine, project: str, *, job_name: str | None = None, limit: int = 50
) -> list[FlakyTest]:
    """Tests that both passed and failed in recorded runs of the same job
    (CircleCI's definition of flaky), most failures first."""
    failed = TestCaseRow.result.in_(("failure", "error", "failed"))
    query = (
        select(
            TestCaseRow.classname,
            TestCaseRow.name,
            func.max(TestCaseRow.file),
            Job.name,
            func.count(),
            func.sum(case((failed, 1), else_=0)),
        )
        .join(Job, Job.id == TestCaseRow.job_id)
        .where(Job.project == project)
        .group_by(TestCaseRow.classname, TestCaseRow.name, Job.name)
        .having(
            and_(
                func.sum(case((failed, 1), else_=0)) > 0,
                func.sum(case((TestCaseRow.result == "success", 1), else_=0)) > 0,
            )
        )
    )
    if job_name is not None:
        query = query.where(Job.name == job_name)
    with Session(engine) as s:
        rows = [
            FlakyTest(c, n, f or "", j, int(runs), int(fails or 0))
            for c, n, f, j, runs, fails in s.execute(query)
        ]
    rows.sort(key=lambda t: (-t.failures, t.classname, t.name))
    return rows[:limit]


def test_history(
    engine: Engine, project: str, job_name: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, int]]:
    """(runs, failures) per (classname, name) over recorded runs of ``job_name``."""
    if not keys:
        return {}
    failed = TestCaseRow.result.in_(("failure", "error", "failed"))
    conds = [and_(TestCaseRow.classname == c, TestCaseRow.name == n) for c, n in keys[:200]]
    query = (
        select(
            TestCaseRow.classname,
            TestCaseRow.name,
            func.count(),
            func.sum(case((failed, 1), else_=0)),
        )
        .join(Job, Job.id == TestCaseRow.job_id)
        .where(Job.project == project, Job.name == job_name, or_(*conds))
        .group_by(TestCaseRow.classname, TestCaseRow.name)
    )
    with Session(engine) as s:
        return {(c, n): (int(r), int(f or 0)) for c, n, r, f in s.execute(query)}


def median(values: Sequence[float]) -> float | None:
    """The median, None for no values."""
    return statistics.median(values) if values else None
