"""store_test_results: JUnit XML copied out of the job, parsed safely, recorded as an event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from datastep_env import StartJob, host_executor, job_factory, make_store

from circlet.engine import events as ev
from circlet.plan import StoreTestResultsStep

PYTEST_XML = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3" time="1.5">
<testcase classname="lettings.tests.test_views" name="test_index" time="0.50"
 file="lettings/tests/test_views.py"/>
<testcase classname="lettings.tests.test_views" name="test_detail" time="0.75"
 file="lettings/tests/test_views.py"><failure message="assert 404 == 200">AssertionError:
 assert 404 == 200</failure></testcase>
<testcase classname="profiles.tests" name="test_skip" time="0.25" file="profiles/tests.py">
<skipped message="later"/></testcase>
</testsuite></testsuites>
"""
MORE_XML = """<testsuite name="other" tests="1"><testcase classname="a.B" name="ok" time="2"
 file="a/b.py"/></testsuite>"""


@pytest.fixture
def start_job(tmp_path: Path) -> Iterator[StartJob]:
    yield from job_factory(tmp_path, make_store(tmp_path / "blobs"), host_executor(tmp_path))


def recorded(events: list[object]) -> list[ev.TestsRecorded]:
    return [e for e in events if isinstance(e, ev.TestsRecorded)]


def test_results_folder_is_parsed_summarized_and_recorded(start_job: StartJob) -> None:
    job = start_job()
    job.sh(
        f"mkdir -p test-results/more && cat > test-results/junit.xml <<'X'\n{PYTEST_XML}X\n"
        f"cat > test-results/more/other.xml <<'X'\n{MORE_XML}\nX\n"
        "echo 'not xml, ignored' > test-results/notes.txt"
    )
    outcome, out = job.run(StoreTestResultsStep(path="test-results"))

    assert outcome.status == "success"  # failed tests never fail this step
    where = job.path("test-results")
    assert out.startswith(f"Archiving the following test results\n  * {where}\n\n")
    assert "Found test results in 2 files: 4 tests, 2 passed, 1 failed, 1 skipped in 3.50s\n" in out
    assert "FAILED lettings/tests/test_views.py::lettings.tests.test_views::test_detail" in out
    assert "assert 404 == 200" in out
    [event] = recorded(job.events)
    assert event.job_id == job.ctx.job_id
    assert [(c["name"], c["result"], c["file"]) for c in event.cases] == [
        ("test_index", "success", "lettings/tests/test_views.py"),
        ("test_detail", "failure", "lettings/tests/test_views.py"),
        ("test_skip", "skipped", "profiles/tests.py"),
        ("ok", "success", "a/b.py"),
    ]


def test_single_file(start_job: StartJob) -> None:
    job = start_job()
    job.sh(f"cat > report.xml <<'X'\n{MORE_XML}\nX")
    outcome, out = job.run(StoreTestResultsStep(path="report.xml"))
    assert outcome.status == "success"
    assert "Found test results in 1 file: 1 tests, 1 passed in 2.00s\n" in out
    assert len(recorded(job.events)[0].cases) == 1


def test_no_results_is_a_message_not_a_failure(start_job: StartJob) -> None:
    job = start_job()
    outcome, out = job.run(StoreTestResultsStep(path="test-results"))
    assert outcome.status == "success"
    assert out.endswith(f"No test results found at {job.path('test-results')}\n")
    assert recorded(job.events) == []


def test_bad_and_unsafe_xml_are_warnings(start_job: StartJob) -> None:
    job = start_job()
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>'
        "<testsuite><testcase name='x'>&b;</testcase></testsuite>"
    )
    job.sh(
        "mkdir -p r && echo '<testsuite><testcase' > r/broken.xml && "
        f"printf '%s' '{bomb}' > r/bomb.xml && cat > r/good.xml <<'X'\n{MORE_XML}\nX"
    )
    outcome, out = job.run(StoreTestResultsStep(path="r"))
    assert outcome.status == "success"
    where = job.path("r")
    assert f"Warning: {where}/bomb.xml: refused:" in out
    assert f"Warning: {where}/broken.xml:" in out
    assert "malformed XML" in out
    assert "1 tests, 1 passed" in out
    assert [c["name"] for c in recorded(job.events)[0].cases] == ["ok"]
