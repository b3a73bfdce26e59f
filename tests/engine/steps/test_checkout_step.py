"""checkout: a snapshot of the working tree, as a real git working copy, in the job."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from datastep_env import (
    StartJob,
    docker_executor,
    host_executor,
    job_factory,
    make_store,
    write_files,
)

from circlet.engine.gitsnapshot import snapshot
from circlet.plan import CheckoutStep


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "lettings"
    root.mkdir()
    git(root, "init", "-q", "-b", "master")
    write_files(
        root, {"manage.py": "print('hi')\n", "app/views.py": "v = 1\n", ".gitignore": "*.log\n"}
    )
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "push for office")
    git(root, "remote", "add", "origin", "https://github.com/ada/lettings.git")
    return root


@pytest.fixture
def start_job(tmp_path: Path) -> Iterator[StartJob]:
    yield from job_factory(tmp_path, make_store(tmp_path / "blobs"), host_executor(tmp_path))


@pytest.fixture
def start_docker_job(tmp_path: Path) -> Iterator[StartJob]:
    yield from job_factory(tmp_path, make_store(tmp_path / "blobs"), docker_executor())


def test_checkout_of_the_working_tree(start_job: StartJob, repo: Path) -> None:
    write_files(repo, {"app/views.py": "v = 2\n", "new.py": "n = 1\n", "debug.log": "x\n"})
    snap = snapshot(repo)
    job = start_job(repo=repo, commit=snap.commit, branch="master", revision=snap.commit)

    outcome, out = job.run(CheckoutStep())

    assert outcome.status == "success"
    lines = out.splitlines()
    assert lines[:4] == [
        f"Using a snapshot of the working tree of {repo} (uncommitted changes included)",
        "Cloning git repository",
        "Checking out branch",
        f"HEAD is now at {snap.commit[:7]} push for office",
    ]
    assert lines[4].startswith(f"Checked out into {job.ctx.working_directory} in ")
    assert job.sh("git rev-parse HEAD").strip() == snap.commit
    assert job.sh("git symbolic-ref --short HEAD").strip() == "master"
    assert job.sh("git remote get-url origin").strip() == "https://github.com/ada/lettings.git"
    assert job.sh("git status --porcelain") == ""
    assert job.sh("cat app/views.py new.py").split() == ["v", "=", "2", "n", "=", "1"]
    assert job.sh("ls -A").split() == [".git", ".gitignore", "app", "manage.py", "new.py"]


def test_commit_ref_and_custom_path(start_job: StartJob, repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    write_files(repo, {"manage.py": "changed but not committed\n"})
    job = start_job(repo=repo, commit=head, branch="feature/x")
    outcome, out = job.run(CheckoutStep(path="~/elsewhere"))
    assert outcome.status == "success"
    assert out.startswith(f"Using commit {head[:7]} of {repo}\n")
    target = job.path("~/elsewhere")
    assert job.sh(f"cat {target}/manage.py").strip() == "print('hi')"
    assert job.sh(f"git -C {target} symbolic-ref --short HEAD").strip() == "feature/x"


def test_non_empty_target_that_is_not_a_repository_fails(start_job: StartJob, repo: Path) -> None:
    job = start_job(repo=repo, commit=git(repo, "rev-parse", "HEAD"))
    job.sh("echo stray > stray.txt")
    outcome, out = job.run(CheckoutStep())
    message = (
        f"Directory ({job.ctx.working_directory}) you are trying to checkout to is not empty "
        "and not a git repository"
    )
    assert outcome.status == "failed"
    assert outcome.reason == message
    assert out == message + "\n"


def test_existing_repository_is_updated(start_job: StartJob, repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    job = start_job(repo=repo, commit=first, branch="master")
    assert job.run(CheckoutStep())[0].status == "success"
    write_files(repo, {"manage.py": "print('v2')\n"})
    git(repo, "commit", "-q", "-am", "second")
    second = git(repo, "rev-parse", "HEAD")
    job.ctx.commit = second
    outcome, out = job.run(CheckoutStep())
    assert outcome.status == "success"
    assert f"Updating the existing git repository in {job.ctx.working_directory}" in out
    assert job.sh("git rev-parse HEAD").strip() == second
    assert job.sh("cat manage.py").strip() == "print('v2')"


def test_without_git_the_directory_is_copied(start_job: StartJob, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    write_files(plain, {"a.txt": "A\n", "d/b.txt": "B\n"})
    job = start_job(repo=plain, commit=None)
    outcome, out = job.run(CheckoutStep())
    assert outcome.status == "success"
    assert out.startswith(f"Copying {plain} as it is")
    assert job.sh("cat a.txt d/b.txt").split() == ["A", "B"]


def test_no_repository_at_all_fails(start_job: StartJob) -> None:
    outcome, _ = start_job(repo=None).run(CheckoutStep())
    assert outcome.status == "failed"
    assert "no code to check out: the project is not in a git repository" in (outcome.reason or "")


@pytest.mark.docker
def test_checkout_in_docker_belongs_to_the_job_user(start_docker_job: StartJob, repo: Path) -> None:
    write_files(repo, {"new.py": "n = 1\n"})
    snap = snapshot(repo)
    job = start_docker_job(repo=repo, commit=snap.commit, branch="master")
    outcome, out = job.run(CheckoutStep())
    assert outcome.status == "success", out
    assert job.ctx.working_directory == "/home/circleci/project"
    assert job.sh("stat -c %U . .git new.py").split() == ["circleci"] * 3
    assert job.sh("git rev-parse HEAD").strip() == snap.commit
    assert job.sh("git status --porcelain") == ""


def test_project_in_a_subdirectory(start_job: StartJob, repo: Path) -> None:
    write_files(repo, {"app/extra.py": "e = 1\n"})
    snap = snapshot(repo / "app", "HEAD")
    job = start_job(repo=snap.repo, commit=snap.commit, branch="master")
    outcome, out = job.run(CheckoutStep())
    assert outcome.status == "success"
    assert out.startswith(f"Using a snapshot of {repo}/app at commit ")
    assert job.sh("ls -A").split() == [".git", "views.py"]  # extra.py is not committed
