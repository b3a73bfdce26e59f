"""Acceptance of issue 3: the bundled example runs green through the real CLI on
both executors, the second run restores the pipenv cache and skips saving it, and
the downstream job sees the workspace the upstream job persisted.

Slow by nature (real pipenv installs from PyPI, real containers): one module-scoped
pair of runs per executor, asserted from the records the runs wrote.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from circlet.store.records import RecordStore

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "lettings"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _run(home: Path, executor: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CIRCLET_HOME=str(home), NO_COLOR="1")
    if Path(CA_BUNDLE).exists():
        env["CIRCLET_CA_BUNDLE"] = CA_BUNDLE
    circlet = shutil.which("circlet") or f"{sys.executable} -m circlet.cli.main"
    return subprocess.run(
        [*circlet.split(), "run", str(EXAMPLE), "--executor", executor],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _outputs(store: RecordStore, pipeline_number: int) -> dict[str, dict[str, str]]:
    """job name → step name → output, for one pipeline of the example project."""
    pipeline = store.pipeline_by_number("local/lettings", pipeline_number)
    assert pipeline is not None, f"pipeline {pipeline_number} was not recorded"
    result: dict[str, dict[str, str]] = {}
    for workflow in store.workflows(pipeline.id):
        for job in store.jobs(workflow.id):
            assert job.status == "success", f"{job.name}: {job.status} ({job.reason})"
            result[job.name] = {
                step.name: store.step_output(job.id, step.index) for step in store.steps(job.id)
            }
    return result


@pytest.fixture(scope="module", params=["host", pytest.param("docker", marks=pytest.mark.docker)])
def two_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    executor: str = request.param
    home = tmp_path_factory.mktemp(f"home-{executor}")
    for attempt in (1, 2):
        proc = _run(home, executor)
        assert proc.returncode == 0, (
            f"run {attempt} on {executor} exited {proc.returncode}\n{proc.stdout[-4000:]}"
            f"\n{proc.stderr[-2000:]}"
        )
    with RecordStore(f"sqlite:///{home / 'circlet.db'}") as store:
        return executor, _outputs(store, 1), _outputs(store, 2)


@pytest.mark.slow
def test_first_run_installs_and_saves_the_cache(two_runs: tuple[str, dict, dict]) -> None:
    _, first, _ = two_runs
    steps = first["run_test"]
    assert list(steps)[:2] == ["Spin up environment", "Preparing environment variables"]
    for name in (
        "Checkout code",
        "Link lockfile",
        "Save python version",
        "Restoring cache",
        "Move restored cache",
        "Install dependencies with pipenv using project Pipfile or inline packages",
        "Copy to cache directory",
        "Saving cache",
        "Run tests",
        "Persisting to workspace",
    ):
        assert name in steps, f"step {name!r} missing from {list(steps)}"
    assert "No cache is found" in steps["Restoring cache"]
    assert "Stored Cache to" in steps["Saving cache"]
    assert " passed" in steps["Run tests"]


@pytest.mark.slow
def test_second_run_restores_and_skips_saving(two_runs: tuple[str, dict, dict]) -> None:
    _, _, second = two_runs
    steps = second["run_test"]
    assert "Found a cache from build 1 at" in steps["Restoring cache"]
    assert "Skipping cache generation, cache already exists for key:" in steps["Saving cache"]


@pytest.mark.slow
def test_downstream_job_sees_the_persisted_workspace(two_runs: tuple[str, dict, dict]) -> None:
    _, first, _ = two_runs
    report = first["report"]
    attach = next(name for name in report if name.startswith("Attaching workspace"))
    assert "Applying workspace layers" in report[attach]
    listing = report["Show the test results from the workspace"]
    assert "junit.xml" in listing
