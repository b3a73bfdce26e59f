"""End-to-end scenario table (Woodpecker style): each ``scenarios/<name>/config.yml``
is compiled by the real compiler and run by the real scheduler, JobRunner and
executor; ``expected.json`` says which jobs and steps end how, and what their
output must (not) contain. All run on the host executor; a few also on Docker.

expected.json keys: ``pipeline`` (status), ``jobs`` {name: {status, steps?,
nodes?}}, ``output`` {job: {step: {contains?, excludes?}}}, ``nodes_output``
{job: {step: [text per node…]}}, ``order`` [[before, after]…], ``secrets``,
``never`` (texts that must appear in no output and no record), ``branch``,
``tag``, ``approve``, ``exit_ok``, ``max_seconds``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circlet.config import compile_file, pipeline_values
from circlet.engine import events as ev
from circlet.engine.results import PipelineResult
from circlet.engine.run_options import RunOptions
from circlet.engine.scheduler import run_pipeline
from circlet.executors.base import Executor
from circlet.executors.host import HostExecutor
from circlet.plan import Pipeline
from circlet.store.blobs import LocalBlobStore
from circlet.store.records import RecordStore
from circlet.testing.agent import install_agent

SCENARIOS = Path(__file__).parent / "scenarios"
NAMES = sorted(p.name for p in SCENARIOS.iterdir() if (p / "config.yml").is_file())
ON_DOCKER = ["step_failure", "masking", "bash_env", "halt"]
FIXED_STEPS = ("Spin up environment", "Preparing environment variables")
DOCKER_IMAGES = {"cimg/python:3.11": "circlet/cimg-python:3.11"}


class Events:
    def __init__(self) -> None:
        self.items: list[ev.Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        with self.lock:
            self.items.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.items if isinstance(e, kind)]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agent") / "bin"
    install_agent(path)
    return path


@pytest.fixture
def records(tmp_path: Path) -> Iterator[RecordStore]:
    store = RecordStore(f"sqlite:///{tmp_path / 'records.db'}")
    yield store
    store.close()


def compile_scenario(name: str, expected: dict[str, Any]) -> Pipeline:
    values = pipeline_values(branch=expected.get("branch", "main"), tag=expected.get("tag"))
    return compile_file(SCENARIOS / name / "config.yml", values=values)


def run_scenario(
    name: str, executor: Executor, records: RecordStore, tmp_path: Path
) -> tuple[dict[str, Any], PipelineResult, Events, float]:
    expected = json.loads((SCENARIOS / name / "expected.json").read_text())
    pipeline = compile_scenario(name, expected)
    events = Events()
    t0 = time.monotonic()
    result = run_pipeline(
        pipeline,
        options=RunOptions(
            project=f"local/{name}",
            branch=expected.get("branch", "main"),
            tag=expected.get("tag"),
            secrets=expected.get("secrets", {}),
            staging_root=tmp_path,
        ),
        executor_factory=lambda _spec: executor,
        blobs=LocalBlobStore(tmp_path / "blobs"),
        sink=ev.fan_out(events, records.sink),
        records=records,
        max_parallel=3,
        approve=expected.get("approve", False),
    )
    records.flush()
    return expected, result, events, time.monotonic() - t0


def check(
    expected: dict[str, Any], result: PipelineResult, events: Events, records: RecordStore
) -> None:
    assert result.status == expected["pipeline"]
    assert result.ok is expected.get("exit_ok", expected["pipeline"] == "success")
    jobs = {j.name: j for j in result.jobs()}
    assert set(jobs) == set(expected["jobs"])
    names = {(e.job_id, e.index): e.name for e in events.of(ev.StepStarted)}
    for job_name, want in expected["jobs"].items():
        job = jobs[job_name]
        assert job.status == want["status"], (job_name, job.reason)
        assert len(job.nodes) == (want.get("nodes", 1) if job.ran else 0)
        for node in job.nodes:
            steps = node.step_statuses()
            if job.status != "infrastructure_fail":
                assert all(steps[s] == "success" for s in FIXED_STEPS), steps
            if "steps" in want:
                assert {k: v for k, v in steps.items() if k not in FIXED_STEPS} == want["steps"]
        # the records say the same as the result
        for node in job.nodes:
            recorded = {s.name: s.status for s in records.steps(node.job_id)}
            assert recorded == node.step_statuses()

    def output(job_id: str, step: str) -> str:
        return "".join(
            e.text
            for e in events.of(ev.Output)
            if e.job_id == job_id and names.get((job_id, e.index)) == step
        )

    for job_name, steps in expected.get("output", {}).items():
        job_id = jobs[job_name].job_id
        for step, rules in steps.items():
            text = output(job_id, step)
            for part in rules.get("contains", []):
                assert part in text, (job_name, step, part, text)
            for part in rules.get("excludes", []):
                assert part not in text, (job_name, step, part)
    for job_name, steps in expected.get("nodes_output", {}).items():
        job = jobs[job_name]
        for step, parts in steps.items():
            texts = [output(job_id, step) for job_id in job.node_ids]
            for part in parts:
                holders = [t for t in texts if part in t]
                assert len(holders) == 1, (step, part, texts)  # exactly one node had it
    for before, after in expected.get("order", []):
        finished = next(
            i
            for i, e in enumerate(events.items)
            if isinstance(e, ev.JobFinished) and e.job_id == jobs[before].job_id
        )
        started = next(
            i
            for i, e in enumerate(events.items)
            if isinstance(e, ev.JobStarted) and e.job_id == jobs[after].job_id
        )
        assert finished < started, (before, after)
    everything = repr(events.items)
    stored = "".join(
        records.step_output(job_id, s.index)
        for job in jobs.values()
        for job_id in job.node_ids
        for s in records.steps(job_id)
    )
    for secret in expected.get("never", []):
        assert secret not in everything
        assert secret not in stored


@pytest.mark.parametrize("name", NAMES)
def test_scenario_on_host(name: str, agent: Path, records: RecordStore, tmp_path: Path) -> None:
    executor = HostExecutor(tmp_path / "work", agent_bin=agent, ca_bundle="")
    expected, result, events, seconds = run_scenario(name, executor, records, tmp_path)
    check(expected, result, events, records)
    if "max_seconds" in expected:
        # not a speed figure: a killed step must not wait for its 60 s sleep
        assert seconds < expected["max_seconds"]


@pytest.mark.docker
@pytest.mark.parametrize("name", ON_DOCKER)
def test_scenario_on_docker(name: str, agent: Path, records: RecordStore, tmp_path: Path) -> None:
    from circlet.executors.docker import DockerExecutor

    executor = DockerExecutor(image_map=DOCKER_IMAGES, agent_bin=agent, ca_bundle="")
    expected, result, events, _ = run_scenario(name, executor, records, tmp_path)
    check(expected, result, events, records)
    assert {e.executor for e in events.of(ev.JobStarted)} == {"docker"}
