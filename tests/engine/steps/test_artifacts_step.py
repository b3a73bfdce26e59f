"""store_artifacts: every file a blob and an ArtifactStored event, named like CircleCI's API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from datastep_env import StartJob, host_executor, job_factory, make_store

from circlet.engine.events import ArtifactStored
from circlet.plan import StoreArtifactsStep


@pytest.fixture
def start_job(tmp_path: Path) -> Iterator[StartJob]:
    yield from job_factory(tmp_path, make_store(tmp_path / "blobs"), host_executor(tmp_path))


def stored(events: list[object]) -> list[ArtifactStored]:
    return [e for e in events if isinstance(e, ArtifactStored)]


def test_directory_with_destination(start_job: StartJob) -> None:
    job = start_job(node_index=1, node_total=2)
    job.sh(
        "mkdir -p test-results/sub && printf '<xml/>' > test-results/junit.xml && "
        "printf 'hello world' > test-results/sub/log.txt && ln -s junit.xml test-results/link.xml"
    )
    outcome, out = job.run(StoreArtifactsStep(path="test-results", destination="tr1"))

    assert outcome.status == "success"
    where = job.path("test-results")
    assert out == (
        f"Uploading {where} to tr1\n"
        f"  Uploading {where}/junit.xml (6 B): DONE\n"
        f"  Uploading {where}/link.xml (6 B): DONE\n"
        f"  Uploading {where}/sub/log.txt (11 B): DONE\n"
        "Uploaded 3 artifacts (23 B)\n"
    )
    events = stored(job.events)
    assert [(e.path, e.size, e.node_index) for e in events] == [
        ("tr1/junit.xml", 6, 1),
        ("tr1/link.xml", 6, 1),
        ("tr1/sub/log.txt", 11, 1),
    ]
    with job.ctx.blobs.open_blob(events[2].digest) as blob:
        assert blob.read() == b"hello world"
    assert events[0].digest == events[1].digest  # same bytes, one blob


def test_single_file_default_destination_is_its_path(start_job: StartJob) -> None:
    job = start_job()
    job.sh("printf 'cov' > coverage.xml")
    outcome, out = job.run(StoreArtifactsStep(path="coverage.xml"))
    assert outcome.status == "success"
    where = job.path("coverage.xml")
    assert [e.path for e in stored(job.events)] == [where.lstrip("/")]
    assert out.endswith("Uploaded 1 artifacts (3 B)\n")

    job.run(StoreArtifactsStep(path="coverage.xml", destination="/reports/cov.xml/"))
    assert stored(job.events)[-1].path == "reports/cov.xml"


def test_missing_path_is_reported_not_failed(start_job: StartJob) -> None:
    job = start_job()
    outcome, out = job.run(StoreArtifactsStep(path="nothing-here"))
    assert outcome.status == "success"
    assert out == f"No artifact files found at {job.path('nothing-here')}\n"
    assert stored(job.events) == []

    job.sh("mkdir -p empty")
    outcome, out = job.run(StoreArtifactsStep(path="empty"))
    assert outcome.status == "success"
    assert out.endswith(f"No artifact files found at {job.path('empty')}\n")
