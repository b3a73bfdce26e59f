"""RecordStore under concurrency and crashes: threads, processes, kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from records_backends import db_url, postgres_server

from circlet.engine import events as ev
from circlet.store.records import RecordStore

__all__ = ["db_url", "postgres_server"]  # fixtures, used by name


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_threads_write_jobs_and_draw_numbers_without_losing_any(db_url: str) -> None:
    url = db_url
    drawn: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    with RecordStore(url, flush_interval=0.01) as store:
        store.sink(ev.PipelineStarted("p", 1, "proj", "main", None, "local"))
        store.sink(ev.WorkflowStarted("p", "wf", "ci", ()))

        def job(n: int) -> None:
            try:
                job_id = f"job-{n}"
                build = store.next_build_num("proj")
                with lock:
                    drawn.append(build)
                store.sink(ev.JobStarted("wf", job_id, f"j{n}", build))
                for index in range(3):
                    store.sink(ev.StepStarted(job_id, index, f"step {index}", "run"))
                    for line in range(50):
                        store.sink(ev.Output(job_id, index, f"{n}:{index}:{line}\n"))
                    store.sink(ev.StepFinished(job_id, index, "success", 0))
                store.sink(ev.JobFinished(job_id, "success"))
            except BaseException as exc:  # surfaced below: a thread can't fail the test
                errors.append(exc)

        threads = [threading.Thread(target=job, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(drawn) == list(range(1, 9))
        jobs = store.jobs("wf")
        assert len(jobs) == 8
        assert all(j.status == "success" and j.project == "proj" for j in jobs)
        for n in range(8):
            for index in range(3):
                expected = "".join(f"{n}:{index}:{line}\n" for line in range(50))
                assert store.step_output(f"job-{n}", index) == expected


DRAW = """
import sys, json
from circlet.store.records import RecordStore
store = RecordStore(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # all processes start drawing together
numbers = [store.next_build_num("proj") for _ in range(int(sys.argv[2]))]
store.close()
print(json.dumps(numbers))
"""


def test_processes_draw_distinct_build_numbers(db_url: str) -> None:
    url = db_url
    RecordStore(url).close()  # schema first: this test is about the counter
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DRAW, url, "25"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    everything = [n for numbers in results for n in numbers]
    assert sorted(everything) == list(range(1, 76))
    for numbers in results:
        assert numbers == sorted(numbers)  # each process sees its numbers increase


OPEN = """
import sys
from circlet.store.records import RecordStore
store = RecordStore(sys.argv[1])
print(store.revision, store.next_pipeline_number("proj"))
store.close()
"""


def test_processes_racing_to_create_the_schema_all_succeed(db_url: str) -> None:
    url = db_url
    procs = [_python(OPEN, url) for _ in range(3)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.split())
    assert {o[0] for o in outputs} == {"0002"}
    assert sorted(int(o[1]) for o in outputs) == [1, 2, 3]


WRITER = """
import sys, time
from circlet.engine import events as ev
from circlet.store.records import RecordStore
store = RecordStore(sys.argv[1], flush_interval=0.01)
store.sink(ev.PipelineStarted("p", 1, "proj", "main", None, "local"))
store.sink(ev.WorkflowStarted("p", "wf", "ci", ()))
n = 0
while True:
    job = f"job-{n}"
    store.sink(ev.JobStarted("wf", job, "test", store.next_build_num("proj")))
    store.sink(ev.StepStarted(job, 0, "run", "run"))
    for line in range(20):
        store.sink(ev.Output(job, 0, f"line {line} " + "x" * 200 + "\\n"))
    store.sink(ev.StepFinished(job, 0, "success", 0))
    store.sink(ev.JobFinished(job, "success"))
    n += 1
    if n == 5:
        print("writing", flush=True)
"""


def test_kill_9_mid_write_leaves_a_readable_consistent_database(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"
    proc = _python(WRITER, url)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.5)  # well inside the write loop
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)  # reaps it and closes its pipes
    assert proc.returncode == -signal.SIGKILL

    raw = sqlite3.connect(path)
    assert raw.execute("pragma integrity_check").fetchone()[0] == "ok"
    raw.close()
    with RecordStore(url) as store:
        jobs = store.jobs("wf")
        assert len(jobs) >= 5
        finished = [j for j in jobs if j.status == "success"]
        assert len(finished) >= 5
        # Every finished job has its whole output: it was written with its step's end.
        for job in finished:
            assert store.steps(job.id)[0].status == "success"
            assert store.step_output(job.id, 0).count("\n") == 20
        # Build numbers stay unique and keep counting after the crash (a number drawn
        # just before the kill may be skipped, never handed out twice).
        nums = [j.build_num for j in jobs]
        assert len(set(nums)) == len(nums)
        assert max(n for n in nums if n is not None) < store.next_build_num("proj")
        store.sink(ev.JobStarted("wf", "after", "test", 10_000))
        assert store.job("after") is not None


def test_reads_do_not_block_on_a_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with RecordStore(url) as writer, RecordStore(url) as reader:
        writer.sink(ev.PipelineStarted("p", 1, "proj", "main", None, "local"))
        raw = sqlite3.connect(tmp_path / "r.db", timeout=0, isolation_level=None)
        raw.execute("begin immediate")  # another process holds the write lock
        try:
            assert [p.id for p in reader.list_pipelines()] == ["p"]  # WAL: readers go on
        finally:
            raw.execute("rollback")
            raw.close()
