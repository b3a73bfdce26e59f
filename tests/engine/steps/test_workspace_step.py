"""persist_to_workspace / attach_workspace across jobs of a workflow (real env and store)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from datastep_env import StartJob, host_executor, job_factory, make_store

from circlet.engine.steps.workspace import layer_key, parse_layer_key
from circlet.plan import AttachWorkspaceStep, PersistToWorkspaceStep


@pytest.fixture
def start_job(tmp_path: Path) -> Iterator[StartJob]:
    yield from job_factory(tmp_path, make_store(tmp_path / "blobs"), host_executor(tmp_path))


def test_persist_prints_like_circleci_and_stores_a_layer(start_job: StartJob) -> None:
    job = start_job(name="build")
    job.sh("mkdir -p dist && echo app > dist/app.js && echo top > top.txt && echo x > skip.me")

    outcome, out = job.run(PersistToWorkspaceStep(root=".", paths=("dist", "top.txt")), index=4)

    assert outcome.status == "success"
    assert re.fullmatch(
        r"Creating workspace archive\.\.\.\n\nUploading workspace archive\.\.\.\n"
        r"Total size uploaded: \d+ B\nWorkspace archive uploaded successfully\.\n",
        out,
    )
    entry = job.ctx.blobs.get_tree("workspace/wf-1", "build/0/4")
    assert entry is not None
    assert entry.files == 2
    assert entry.meta["paths"] == ["dist", "top.txt"]


def test_layers_of_upstream_jobs_apply_in_order_later_wins(start_job: StartJob) -> None:
    build = start_job(name="build")
    build.sh("mkdir -p ws/bin && echo build > ws/shared.txt && echo b > ws/bin/b && echo 1 > ws/a")
    outcome, _ = build.run(PersistToWorkspaceStep(root="ws", paths=(".",)))
    assert outcome.status == "success"
    lint = start_job(name="lint")
    lint.sh("mkdir -p ws && echo lint > ws/shared.txt && echo l > ws/lint.txt")
    outcome, _ = lint.run(PersistToWorkspaceStep(root="~/project/ws", paths=("*.txt",)))
    assert outcome.status == "success"
    unrelated = start_job(name="docs")
    unrelated.sh("mkdir -p ws && echo docs > ws/shared.txt")
    unrelated.run(PersistToWorkspaceStep(root="ws", paths=("shared.txt",)))

    deploy = start_job(name="deploy", upstream=("build", "lint"))
    outcome, out = deploy.run(AttachWorkspaceStep(at="~/attached"))

    assert outcome.status == "success"
    assert deploy.sh("cat ~/attached/shared.txt").strip() == "lint"
    assert deploy.sh("cat ~/attached/bin/b ~/attached/a ~/attached/lint.txt").split() == [
        "b",
        "1",
        "l",
    ]
    lines = out.splitlines()
    assert lines[0] == "Downloading workspace layers"
    assert re.fullmatch(r"  workflows/workspaces/wf-1/0/build/0/2 \(\d+ B\)", lines[1])
    assert re.fullmatch(r"  workflows/workspaces/wf-1/0/lint/0/2 \(\d+ B\)", lines[2])
    assert lines[3] == f"Applying workspace layers for job: {deploy.ctx.job_id}"
    assert lines[4:] == [
        "  Applying workspace layer for job: build (node 0)",
        "  Applying workspace layer for job: lint (node 0)",
    ]

    reversed_order = start_job(name="deploy2", upstream=("lint", "build"))
    reversed_order.run(AttachWorkspaceStep(at="got"))
    assert reversed_order.sh("cat got/shared.txt").strip() == "build"


def test_parallel_copies_and_two_persists_are_separate_layers(start_job: StartJob) -> None:
    for node in (0, 1):
        copy = start_job(name="test", node_index=node, node_total=2)
        copy.sh(f"mkdir -p out && echo {node} > out/node-{node} && echo {node} > out/last")
        copy.run(PersistToWorkspaceStep(root="out", paths=(f"node-{node}",)), index=3)
        copy.run(PersistToWorkspaceStep(root="out", paths=("last",)), index=5)
    after = start_job(name="report", upstream=("test",))
    outcome, out = after.run(AttachWorkspaceStep(at="ws"))
    assert outcome.status == "success"
    assert after.sh("ls ws").split() == ["last", "node-0", "node-1"]
    assert after.sh("cat ws/last").strip() == "1"
    applied = [line for line in out.splitlines() if "Applying workspace layer " in line]
    assert [line.split(": ")[1] for line in applied] == [
        "test (node 0)",
        "test (node 0)",
        "test (node 1)",
        "test (node 1)",
    ]
    assert out.count("workflows/workspaces/wf-1/0/test/") == 4


def test_persist_with_nothing_matching_fails_like_circleci(start_job: StartJob) -> None:
    job = start_job()
    outcome, out = job.run(PersistToWorkspaceStep(root=".", paths=("nothing", "*.none")))
    assert outcome.status == "failed"
    assert outcome.reason == (
        f"The specified paths did not match any files in {job.ctx.working_directory}"
    )
    assert out.endswith(outcome.reason + "\n")

    outcome, _ = job.run(PersistToWorkspaceStep(root="missing-root", paths=("*",)))
    assert outcome.status == "failed"

    outcome, out = job.run(PersistToWorkspaceStep(root="sub", paths=("../escape",)))
    assert outcome.status == "failed"
    assert "is not inside the workspace root" in out


def test_globs_match_dot_files_as_go_does(start_job: StartJob) -> None:
    job = start_job(name="globber")
    job.sh("mkdir -p r/d && touch r/.hidden r/a.txt r/b.log r/d/c.txt")
    outcome, _ = job.run(PersistToWorkspaceStep(root="r", paths=("*.txt", ".h*", "d/*")))
    assert outcome.status == "success"
    entry = job.ctx.blobs.list_trees("workspace/wf-1")[0]
    assert entry.meta["paths"] == [".hidden", "a.txt", "d/c.txt"]


def test_attach_without_layers_is_reported(start_job: StartJob) -> None:
    job = start_job(upstream=("nobody",))
    outcome, out = job.run(AttachWorkspaceStep(at="ws"))
    assert outcome.status == "success"
    assert out.startswith("Downloading workspace layers\n  (none:")


def test_layer_keys_round_trip() -> None:
    assert layer_key("python/test", 2, 7) == "python/test/2/7"
    assert parse_layer_key("python/test/2/7") == ("python/test", 2, 7)
    assert parse_layer_key("odd") is None
