"""Resuming a workflow from its records (what a restarted server does), in process:
the records of a run whose scheduler died are written as it would have left them,
then ``resume_state`` + ``run_pipeline(resume=…)`` continue it with the host
executor on SQLite. The fleet part (copies on runners) is in test_faults.py."""

from __future__ import annotations

import uuid
from pathlib import Path

from cluster_helpers import pipeline_from

from circlet.cluster.resume import INTERRUPTED, resume_state, settle_pipeline
from circlet.engine import events as ev
from circlet.engine.resume import ResumedCopy
from circlet.engine.run_options import RunOptions
from circlet.engine.scheduler import run_pipeline
from circlet.executors.host import HostExecutor
from circlet.store.blobs import LocalBlobStore
from circlet.store.records import RecordStore

CONFIG = """
version: 2.1
jobs:
  a:
    machine: true
    steps: [{run: echo a ran}]
  b:
    machine: true
    steps: [{run: echo b ran}]
  split:
    machine: true
    parallelism: 2
    steps: [{run: echo "node $CIRCLE_NODE_INDEX ran"}]
  c:
    machine: true
    steps: [{run: sleep 30}]
  d:
    machine: true
    steps: [{run: echo d ran}]
workflows:
  main:
    jobs:
      - a
      - b: {requires: [a]}
      - split
      - c
      - d: {requires: [c]}
"""


def _output(records: RecordStore, job_id: str) -> str:
    return "".join(records.step_output(job_id, s.index) for s in records.steps(job_id))


def test_a_resumed_workflow_keeps_what_ended_and_runs_what_did_not(tmp_path: Path) -> None:
    records = RecordStore(f"sqlite:///{tmp_path / 'records.db'}")
    blobs = LocalBlobStore(tmp_path / "blobs")
    try:
        pid, wid = str(uuid.uuid4()), str(uuid.uuid4())
        ids = {name: str(uuid.uuid4()) for name in ("a", "b", "split", "c", "d")}
        graph = (
            {"name": "a", "requires": [], "type": "build"},
            {"name": "b", "requires": ["a"], "type": "build"},
            {"name": "split", "requires": [], "type": "build"},
            {"name": "c", "requires": [], "type": "build"},
            {"name": "d", "requires": ["c"], "type": "build"},
        )
        # What a killed scheduler leaves: a and split's first copy ended, b and d
        # blocked, c running in the server's own pool (it died with the server).
        for event in (
            ev.PipelineStarted(pid, 1, "gh/acme/resume", "main", None, "api"),
            ev.WorkflowStarted(pid, wid, "main", graph),
            ev.JobStatusChanged(wid, ids["b"], "b", "blocked"),
            ev.JobStatusChanged(wid, ids["d"], "d", "blocked"),
            ev.JobStarted(wid, ids["a"], "a", 1),
            ev.JobFinished(ids["a"], "success"),
            ev.JobStarted(wid, ids["split"], "split", 2, 0, 2),
            ev.JobFinished(ids["split"], "success"),
            ev.JobStarted(wid, ids["c"], "c", 3),
            ev.StepStarted(ids["c"], 1, "sleep 30", "run"),
            ev.Output(ids["c"], 1, "working\n"),
        ):
            records.sink(event)
        records.flush()
        before = {n: records.job(ids[n]) for n in ("a", "split")}

        pipeline = records.get_pipeline(pid)
        assert pipeline is not None
        found = resume_state(records, None, records.sink, pipeline)
        jobs = found.resume.workflows[0].jobs
        assert found.dispatched == []
        assert jobs["a"].copies == {0: ResumedCopy("success", None)}
        assert jobs["split"].copies == {0: ResumedCopy("success", None)}
        assert jobs["c"].copies == {0: ResumedCopy("infrastructure_fail", INTERRUPTED)}
        assert (jobs["b"].status, jobs["b"].copies) == ("blocked", {})
        c_record = records.job(ids["c"])
        assert c_record is not None
        assert (c_record.status, c_record.reason) == ("infrastructure_fail", INTERRUPTED)
        assert records.steps(ids["c"])[0].status == "canceled"
        assert INTERRUPTED in _output(records, ids["c"])

        host = HostExecutor(tmp_path / "work")
        result = run_pipeline(
            pipeline_from(CONFIG, tmp_path),
            options=RunOptions(project="gh/acme/resume", staging_root=tmp_path),
            executor_factory=lambda _spec: host,
            blobs=blobs,
            sink=records.sink,
            records=records,
            pipeline_id=pid,
            number=1,
            resume=found.resume,
        )
        statuses = {j.name: j.status for j in result.jobs()}
        assert statuses == {
            "a": "success",
            "b": "success",
            "split": "success",
            "c": "infrastructure_fail",
            "d": "not_run",
        }
        assert result.workflows[0].workflow_id == wid
        # The jobs that had ended did not run again; the others ran, with their ids.
        for name in ("a", "split"):
            assert records.job(ids[name]) == before[name]
        assert "b ran" in _output(records, ids["b"])
        second = str(uuid.uuid5(uuid.UUID(ids["split"]), "1"))
        copy = records.job(second)
        assert copy is not None
        assert (copy.status, copy.build_num, copy.node_index) == ("success", 2, 1)
        assert "node 1 ran" in _output(records, second)
        d_record = records.job(ids["d"])
        assert d_record is not None
        assert d_record.status == "not_run"
        workflow = records.get_workflow(wid)
        assert workflow is not None
        assert workflow.status == "failed"
        assert settle_pipeline(records, records.sink, pid) == "failed"
        final = records.get_pipeline(pid)
        assert final is not None
        assert final.status == "failed"
    finally:
        blobs.close()
        records.close()
