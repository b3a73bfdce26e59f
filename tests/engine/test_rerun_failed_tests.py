"""Rerun failed tests: a real job on the host executor runs three pytest files through
``circleci tests run``; the rerun of its failed tests runs only the file that failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circlet.engine import events as ev
from circlet.engine.jobfiles import failed_test_names
from circlet.engine.results import PipelineResult
from circlet.engine.run_options import RunOptions
from circlet.engine.scheduler import run_pipeline
from circlet.executors.host import HostExecutor
from circlet.plan import (
    DockerImage,
    ExecutorSpec,
    JobNode,
    JobSpec,
    Pipeline,
    RunStep,
    StoreTestResultsStep,
    Workflow,
)
from circlet.store.records import RecordStore

IMAGE = ExecutorSpec(kind="docker", images=(DockerImage("cimg/python:3.11"),))

TEST_FILE = "def test_{name}():\n    assert True\n"
# Fails the first time it runs (the flag lives outside the job's directory).
FLAKY_FILE = (
    "import os\n\n\n"
    "def test_b():\n"
    "    if not os.path.exists({flag!r}):\n"
    "        open({flag!r}, 'w').close()\n"
    "        raise AssertionError('flaky the first time')\n"
)


def _pipeline(flag: Path) -> Pipeline:
    write = "mkdir -p tests results\n" + "".join(
        f"cat > tests/test_{name}.py <<'EOF'\n{text}EOF\n"
        for name, text in (
            ("a", TEST_FILE.format(name="a")),
            ("b", FLAKY_FILE.format(flag=str(flag))),
            ("c", TEST_FILE.format(name="c")),
        )
    )
    run_tests = (
        'circleci tests glob "tests/test_*.py" | circleci tests run --split-by=timings '
        '--command="xargs python3 -m pytest -p no:cacheprovider -o junit_family=legacy '
        '--junitxml=results/junit.xml" --verbose'
    )
    spec = JobSpec(
        "test",
        IMAGE,
        (
            RunStep(name="Write tests", command=write),
            RunStep(name="Run tests", command=run_tests),
            StoreTestResultsStep(path="results", when="always"),
        ),
    )
    return Pipeline(version="2.1", workflows=(Workflow("main", (JobNode("test", spec),)),))


@pytest.fixture
def records(tmp_path: Path) -> Iterator[RecordStore]:
    store = RecordStore(f"sqlite:///{tmp_path / 'records.db'}")
    yield store
    store.close()


def _run(
    plan: Pipeline,
    options: RunOptions,
    *,
    executor: HostExecutor,
    blobs: Any,
    records: RecordStore,
    out: list[ev.Event],
) -> PipelineResult:
    result = run_pipeline(
        plan,
        options=options,
        executor_factory=lambda _spec: executor,
        blobs=blobs,
        sink=ev.fan_out(out.append, records.sink),
        records=records,
    )
    records.flush()
    return result


def _output(events: list[ev.Event], job_id: str) -> str:
    return "".join(e.text for e in events if isinstance(e, ev.Output) and e.job_id == job_id)


def test_rerun_failed_tests_runs_only_the_failed_file(
    host_executor: HostExecutor, blobs: Any, records: RecordStore, tmp_path: Path
) -> None:
    plan = _pipeline(tmp_path / "flaky-once")
    options = RunOptions(project="local/demo", branch="main", staging_root=tmp_path)
    first_events: list[ev.Event] = []
    first = _run(
        plan, options, executor=host_executor, blobs=blobs, records=records, out=first_events
    )
    first_id = first.job("test").job_id
    assert first.job("test").status == "failed"
    cases = records.test_cases(first_id)
    assert {(c.file, c.result) for c in cases} == {
        ("tests/test_a.py", "success"),
        ("tests/test_b.py", "failure"),
        ("tests/test_c.py", "success"),
    }
    assert "CIRCLET_RERUN_TESTS_FILE" not in _output(first_events, first_id)
    failed = failed_test_names(cases)
    assert failed == ["tests/test_b.py", "tests.test_b"]

    rerun_events: list[ev.Event] = []
    rerun = _run(
        plan,
        RunOptions(
            project="local/demo",
            branch="main",
            staging_root=tmp_path,
            rerun_failed_tests={"test": failed},
        ),
        executor=host_executor,
        blobs=blobs,
        records=records,
        out=rerun_events,
    )
    rerun_id = rerun.job("test").job_id
    assert rerun.job("test").status == "success"  # the flaky test passes the second time
    assert [(c.file, c.name, c.result) for c in records.test_cases(rerun_id)] == [
        ("tests/test_b.py", "test_b", "success")
    ]
    output = _output(rerun_events, rerun_id)
    assert "Rerunning failed tests: 1 of 3 tests given failed before" in output
    assert "Running 1 of 1 tests" in output
    assert "1 passed" in output
