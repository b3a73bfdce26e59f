"""RecordStore on SQLite files and PostgreSQL: an event stream in, the exact data back out."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from records_backends import db_url, postgres_server
from sqlalchemy import text

from circlet.engine import events as ev
from circlet.store.records import RecordStore

__all__ = ["db_url", "postgres_server"]  # fixtures, used by name

PROJECT = "gh/acme/shop"
T0 = 1_700_000_000.0


@pytest.fixture
def store(db_url: str) -> Iterator[RecordStore]:
    with RecordStore(db_url) as opened:
        yield opened


def emit_pipeline(
    sink: ev.EventSink,
    *,
    pipeline_id: str = "p-1",
    number: int = 1,
    build_base: int = 1,
    status: ev.JobStatus = "success",
    at: float = T0,
    test_time: float = 1.0,
) -> None:
    """A pipeline: workflow ``ci`` with ``build`` then ``test`` (parallelism 2)."""
    wf = f"{pipeline_id}-wf"
    sink(
        ev.PipelineStarted(
            pipeline_id,
            number,
            PROJECT,
            "main",
            "0123456789abcdef",
            "local",
            config_source="version: 2.1\n",
            at=at,
        )
    )
    graph = (
        {"name": "build", "requires": [], "type": "build"},
        {"name": "test", "requires": ["build"], "type": "build"},
    )
    sink(ev.WorkflowStarted(pipeline_id, wf, "ci", graph, at=at + 1))
    sink(ev.JobStatusChanged(wf, f"{wf}-build", "build", "queued", at=at + 1))
    sink(ev.JobStatusChanged(wf, f"{wf}-test-0", "test", "blocked", at=at + 1))
    sink(ev.JobStatusChanged(wf, f"{wf}-test-1", "test", "blocked", at=at + 1))
    sink(ev.JobStarted(wf, f"{wf}-build", "build", build_base, executor="docker", at=at + 2))
    sink(ev.StepStarted(f"{wf}-build", 0, "Spin up environment", "spin_up", at=at + 2))
    sink(ev.Output(f"{wf}-build", 0, "Starting container cimg/python:3.11\n", at=at + 2.1))
    sink(ev.Output(f"{wf}-build", 0, "pulled\n", at=at + 2.2))
    sink(ev.StepFinished(f"{wf}-build", 0, "success", 0, at=at + 3))
    sink(ev.StepStarted(f"{wf}-build", 1, "make build", "run", at=at + 3))
    sink(ev.Output(f"{wf}-build", 1, "building ****\n", at=at + 3.5))
    sink(ev.StepFinished(f"{wf}-build", 1, "success", 0, at=at + 5))
    sink(ev.ArtifactStored(f"{wf}-build", "dist/app.whl", "b3:abc", 1234, at=at + 5))
    sink(ev.JobFinished(f"{wf}-build", "success", at=at + 5))
    for node in (0, 1):
        job = f"{wf}-test-{node}"
        sink(ev.JobStarted(wf, job, "test", build_base + 1, node, 2, "docker", at=at + 6))
        sink(ev.StepStarted(job, 0, "Spin up environment", "spin_up", at=at + 6))
        sink(ev.StepFinished(job, 0, "success", 0, at=at + 7))
        sink(ev.StepStarted(job, 1, "pytest", "run", at=at + 7))
        sink(ev.Output(job, 1, f"node {node} running\n", at=at + 7.5))
        failed = status == "failed" and node == 1
        sink(
            ev.StepFinished(
                job, 1, "failed" if failed else "success", 1 if failed else 0, at=at + 9
            )
        )
        cases = (
            {
                "classname": f"tests.test_{node}",
                "name": "test_ok",
                "file": f"tests/test_{node}.py",
                "result": "success",
                "time": test_time * (node + 1),
                "message": "",
            },
            {
                "classname": f"tests.test_{node}",
                "name": "test_more",
                "file": f"tests/test_{node}.py",
                "result": "failure" if failed else "success",
                "time": 0.5,
                "message": "assert 1 == 2" if failed else "",
            },
        )
        sink(ev.TestsRecorded(job, cases, at=at + 9))
        sink(ev.JobFinished(job, "failed" if failed else "success", at=at + 10))
    sink(ev.WorkflowFinished(wf, "failed" if status == "failed" else "success", at=at + 10))
    sink(
        ev.PipelineFinished(pipeline_id, "failed" if status == "failed" else "success", at=at + 10)
    )


def test_event_stream_reads_back_exactly(store: RecordStore) -> None:
    emit_pipeline(store.sink, build_base=41)
    [pipeline] = store.list_pipelines()
    assert (pipeline.id, pipeline.project, pipeline.number, pipeline.branch) == (
        "p-1",
        PROJECT,
        1,
        "main",
    )
    assert (pipeline.revision, pipeline.trigger, pipeline.status) == (
        "0123456789abcdef",
        "local",
        "success",
    )
    assert (pipeline.created_at, pipeline.started_at, pipeline.stopped_at) == (T0, T0, T0 + 10)
    assert pipeline.duration == 10
    assert pipeline.config_source == "version: 2.1\n"
    assert store.get_pipeline("p-1") == pipeline
    assert store.pipeline_by_number(PROJECT, 1) == pipeline

    [workflow] = store.workflows("p-1")
    assert (workflow.id, workflow.name, workflow.status, workflow.duration) == (
        "p-1-wf",
        "ci",
        "success",
        9,
    )
    assert workflow.jobs == (
        {"name": "build", "requires": [], "type": "build"},
        {"name": "test", "requires": ["build"], "type": "build"},
    )
    assert store.get_workflow("p-1-wf") == workflow

    jobs = store.jobs("p-1-wf")
    assert [(j.name, j.build_num, j.node_index, j.node_total, j.status) for j in jobs] == [
        ("build", 41, 0, 1, "success"),
        ("test", 42, 0, 2, "success"),
        ("test", 42, 1, 2, "success"),
    ]
    build = jobs[0]
    assert (build.project, build.executor, build.created_at, build.started_at) == (
        PROJECT,
        "docker",
        T0 + 1,
        T0 + 2,
    )
    assert build.duration == 3
    assert store.job(build.id) == build
    assert store.job_by_build_num(PROJECT, 41) == build
    assert store.job_by_build_num(PROJECT, 42) == jobs[1]
    assert store.jobs_by_build_num(None, 42) == jobs[1:]
    assert store.job_by_build_num("gh/other/repo", 41) is None
    assert store.jobs_by_id_prefix("p-1-wf-te") == jobs[1:]
    assert store.jobs_by_id_prefix("p_1") == []  # LIKE wildcards are escaped

    steps = store.steps(build.id)
    assert [(s.index, s.name, s.step_type, s.status, s.exit_code) for s in steps] == [
        (0, "Spin up environment", "spin_up", "success", 0),
        (1, "make build", "run", "success", 0),
    ]
    assert (steps[1].started_at, steps[1].stopped_at, steps[1].duration) == (T0 + 3, T0 + 5, 2)
    assert store.step_output(build.id, 0) == "Starting container cimg/python:3.11\npulled\n"
    assert store.step_output(build.id, 1) == "building ****\n"
    assert store.step_output(build.id, 7) == ""

    [artifact] = store.artifacts(build.id)
    assert (artifact.path, artifact.digest, artifact.size, artifact.node_index) == (
        "dist/app.whl",
        "b3:abc",
        1234,
        0,
    )
    cases = store.test_cases(jobs[2].id)
    assert [(c.classname, c.name, c.file, c.result, c.time) for c in cases] == [
        ("tests.test_1", "test_ok", "tests/test_1.py", "success", 2.0),
        ("tests.test_1", "test_more", "tests/test_1.py", "success", 0.5),
    ]
    assert store.projects() == [PROJECT]


def test_list_pipelines_filters_and_pages(store: RecordStore) -> None:
    for n in range(1, 6):
        emit_pipeline(
            store.sink,
            pipeline_id=f"p-{n}",
            number=n,
            build_base=n * 10,
            status="failed" if n % 2 else "success",
            at=T0 + n * 100,
        )
    store.sink(ev.PipelineStarted("other", 1, "gh/acme/other", "dev", None, "api", at=T0 + 900))
    assert [p.number for p in store.list_pipelines(project=PROJECT)] == [5, 4, 3, 2, 1]
    assert [p.number for p in store.list_pipelines(project=PROJECT, limit=2, offset=1)] == [4, 3]
    assert [p.number for p in store.list_pipelines(status="failed")] == [5, 3, 1]
    assert [p.id for p in store.list_pipelines(branch="dev")] == ["other"]
    assert store.list_pipelines()[0].status == "running"
    assert store.get_pipeline("nope") is None
    assert store.job("nope") is None


def test_failed_step_and_reasons_are_kept(store: RecordStore) -> None:
    emit_pipeline(store.sink, status="failed")
    job = store.jobs("p-1-wf")[2]
    assert job.status == "failed"
    step = store.steps(job.id)[1]
    assert (step.status, step.exit_code) == ("failed", 1)
    failure = store.test_cases(job.id)[1]
    assert (failure.result, failure.message) == ("failure", "assert 1 == 2")
    store.sink(
        ev.JobStatusChanged(
            "p-1-wf", "p-1-wf-deploy", "deploy", "not_run", reason="upstream failed"
        )
    )
    deploy = store.job("p-1-wf-deploy")
    assert deploy is not None
    assert (deploy.status, deploy.reason, deploy.build_num, deploy.project) == (
        "not_run",
        "upstream failed",
        None,
        PROJECT,
    )


def test_numbers_count_up_per_project(store: RecordStore) -> None:
    assert [store.next_build_num(PROJECT) for _ in range(3)] == [1, 2, 3]
    assert store.next_build_num("gh/acme/other") == 1
    assert [store.next_pipeline_number(PROJECT) for _ in range(2)] == [1, 2]
    assert store.next_build_num(PROJECT) == 4


def test_numbers_never_go_below_numbers_seen_in_events(store: RecordStore) -> None:
    # A run whose numbers came from elsewhere (another server, an import): continue after it.
    emit_pipeline(store.sink, number=7, build_base=50)
    assert store.next_pipeline_number(PROJECT) == 8
    assert store.next_build_num(PROJECT) == 52


def test_test_timings_use_the_newest_finished_run_and_all_its_nodes(store: RecordStore) -> None:
    emit_pipeline(store.sink, pipeline_id="old", number=1, build_base=1, at=T0, test_time=10.0)
    emit_pipeline(
        store.sink,
        pipeline_id="new",
        number=2,
        build_base=3,
        at=T0 + 100,
        status="failed",
        test_time=2.0,
    )
    # A newer run that was canceled (no timings worth trusting) is ignored.
    store.sink(ev.WorkflowStarted("new", "canceled-wf", "ci", (), at=T0 + 200))
    store.sink(ev.JobStarted("canceled-wf", "c-job", "test", 9, at=T0 + 200))
    store.sink(
        ev.TestsRecorded(
            "c-job",
            (
                {
                    "classname": "x",
                    "name": "y",
                    "file": "tests/x.py",
                    "result": "success",
                    "time": 99.0,
                },
            ),
        )
    )
    store.sink(ev.JobFinished("c-job", "canceled", at=T0 + 201))
    table = store.test_timing_table(PROJECT, "test")
    assert table == {
        "filename": {"tests/test_0.py": 2.5, "tests/test_1.py": 4.5},
        "classname": {"tests.test_0": 2.5, "tests.test_1": 4.5},
        "testname": {"test_ok": 6.0, "test_more": 1.0},
    }
    assert store.test_timings(PROJECT, "test") == {
        "tests.test_0": 2.5,
        "tests.test_1": 4.5,
        "tests/test_0.py": 2.5,
        "tests/test_1.py": 4.5,
    }
    empty = {"filename": {}, "classname": {}, "testname": {}}
    assert store.test_timing_table(PROJECT, "build") == empty  # ran, but recorded no tests
    assert store.test_timing_table("gh/none/x", "test") == empty


def test_mark_interrupted_cancels_only_what_was_still_running(store: RecordStore) -> None:
    emit_pipeline(store.sink, pipeline_id="done")
    store.sink(ev.PipelineStarted("live", 2, PROJECT, "main", None, "local", at=T0 + 50))
    store.sink(ev.WorkflowStarted("live", "live-wf", "ci", (), at=T0 + 50))
    store.sink(ev.JobStarted("live-wf", "live-job", "test", 5, at=T0 + 51))
    store.sink(ev.StepStarted("live-job", 0, "Spin up environment", "spin_up", at=T0 + 51))
    store.sink(ev.StepFinished("live-job", 0, "success", 0, at=T0 + 52))
    store.sink(ev.StepStarted("live-job", 1, "pytest", "run", at=T0 + 52))
    store.sink(ev.JobStatusChanged("live-wf", "queued-job", "lint", "queued", at=T0 + 51))
    store.sink(ev.JobStatusChanged("live-wf", "held-job", "deploy", "on_hold", at=T0 + 51))

    assert store.mark_interrupted(["done"]) == 0
    assert store.mark_interrupted(before=T0 + 10) == 0  # "live" is newer than that
    assert store.mark_interrupted() == 2
    assert store.get_pipeline("live").status == "canceled"  # type: ignore[union-attr]
    assert store.get_workflow("live-wf").status == "canceled"  # type: ignore[union-attr]
    statuses = {j.name: j.status for j in store.jobs("live-wf")}
    assert statuses == {"test": "canceled", "lint": "canceled", "deploy": "on_hold"}
    steps = store.steps("live-job")
    assert [s.status for s in steps] == ["success", "canceled"]
    assert steps[1].reason is not None
    assert "interrupted" in steps[1].reason
    assert store.get_pipeline("done").status == "success"  # type: ignore[union-attr]
    assert store.mark_interrupted() == 0


def test_restarted_step_resets_its_row(store: RecordStore) -> None:
    store.sink(ev.StepStarted("j", 1, "flaky", "run", at=T0))
    store.sink(ev.StepFinished("j", 1, "failed", 1, reason="exit 1", at=T0 + 1))
    store.sink(ev.StepStarted("j", 1, "flaky", "run", at=T0 + 2))
    [step] = store.steps("j")
    assert (step.status, step.exit_code, step.reason, step.stopped_at) == (
        "running",
        None,
        None,
        None,
    )


# ------------------------------------------------------------------ output batching


def test_output_waits_for_its_step_then_lands_whole(db_url: str) -> None:
    with RecordStore(db_url, flush_interval=3600) as writer, RecordStore(db_url) as reader:
        writer.sink(ev.StepStarted("j", 1, "run", "run"))
        for i in range(500):
            writer.sink(ev.Output("j", 1, f"{i}\n"))
        expected = "".join(f"{i}\n" for i in range(500))
        assert reader.step_output("j", 1) == ""  # buffered, not yet written
        assert writer.step_output("j", 1) == expected  # but the writer shows it live
        writer.sink(ev.StepFinished("j", 1, "success", 0))
        assert reader.step_output("j", 1) == expected
        with reader.engine.connect() as conn:
            rows = conn.execute(text("select count(*) from step_output")).scalar_one()
        assert rows == 1  # 500 events, one row: batching, not a commit per chunk


def test_output_is_flushed_on_a_timer(db_url: str) -> None:
    with RecordStore(db_url, flush_interval=0.05) as writer, RecordStore(db_url) as reader:
        writer.sink(ev.Output("j", 0, "tick\n"))
        deadline = time.monotonic() + 10
        while reader.step_output("j", 0) == "" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert reader.step_output("j", 0) == "tick\n"


def test_output_is_flushed_when_the_buffer_is_full(db_url: str) -> None:
    with (
        RecordStore(db_url, flush_interval=3600, flush_bytes=1000) as writer,
        RecordStore(db_url) as reader,
    ):
        writer.sink(ev.Output("j", 0, "x" * 600))
        assert reader.step_output("j", 0) == ""
        writer.sink(ev.Output("j", 0, "y" * 600))
        assert reader.step_output("j", 0) == "x" * 600 + "y" * 600


def test_close_flushes_and_is_idempotent(db_url: str) -> None:
    writer = RecordStore(db_url, flush_interval=3600)
    writer.sink(ev.Output("j", 0, "last words\n"))
    writer.close()
    writer.close()
    with RecordStore(db_url) as reader:
        assert reader.step_output("j", 0) == "last words\n"


def test_default_url_is_sqlite_in_wal_mode_under_circlet_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIRCLET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CIRCLET_DATABASE_URL", raising=False)
    with RecordStore() as store:
        assert store.url == f"sqlite:///{tmp_path / 'home' / 'circlet.db'}"
        assert store.next_build_num("p") == 1
    db = sqlite3.connect(tmp_path / "home" / "circlet.db")
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert db.execute("select version_num from alembic_version").fetchone()[0] == "0002"
