"""Snapshots of the working tree with real git, and their checkouts."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from circlet.engine.gitsnapshot import (
    GitError,
    NotAGitRepositoryError,
    copy_commit_objects,
    export_checkout,
    find_repo,
    origin_url,
    snapshot,
    snapshot_note,
)


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
    }
    proc = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def tree_files(repo: Path, commit: str) -> dict[str, str]:
    listing = git(repo, "ls-tree", "-r", "--name-only", commit)
    return {name: git(repo, "show", f"{commit}:{name}") for name in listing.splitlines()}


def user_state(repo: Path) -> dict[str, str]:
    """Everything the user could notice: index bytes, HEAD, refs, stash, status."""
    index = repo / ".git" / "index"
    return {
        "index": hashlib.sha256(index.read_bytes()).hexdigest() if index.exists() else "",
        "head": git(repo, "rev-parse", "--verify", "-q", "HEAD") if _has_head(repo) else "",
        "symbolic": git(repo, "symbolic-ref", "HEAD"),
        "refs": git(repo, "for-each-ref"),
        "stash": git(repo, "stash", "list"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
    }


def _has_head(repo: Path) -> bool:
    return (
        subprocess.run(
            ["git", "rev-parse", "-q", "--verify", "HEAD"],
            cwd=repo,
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "master")
    (root / "keep.txt").write_text("keep\n")
    (root / "modify.txt").write_text("old\n")
    (root / "delete.txt").write_text("bye\n")
    (root / ".gitignore").write_text("ignored.log\nbuild/\n")
    (root / "app").mkdir()
    (root / "app" / "main.py").write_text("print('v1')\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "push for office")
    return root


def test_snapshot_takes_the_working_tree_as_it_is(repo: Path) -> None:
    (repo / "modify.txt").write_text("new\n")
    (repo / "delete.txt").unlink()
    (repo / "untracked.txt").write_text("fresh\n")
    (repo / "ignored.log").write_text("noise\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.bin").write_text("x")
    git(repo, "add", "untracked.txt")  # staged, then changed again: the disk wins
    (repo / "untracked.txt").write_text("fresher\n")
    before = user_state(repo)
    head = git(repo, "rev-parse", "HEAD")

    snap = snapshot(repo)

    assert user_state(repo) == before
    assert snap.dirty
    assert snap.base == head
    assert snap.commit != head
    assert snap.branch == "master"
    assert snap.subject == "push for office"
    assert snap.author == "Ada <ada@example.com>"
    assert git(repo, "rev-parse", f"{snap.commit}^") == head
    assert tree_files(repo, snap.commit) == {
        ".gitignore": "ignored.log\nbuild/",
        "app/main.py": "print('v1')",
        "keep.txt": "keep",
        "modify.txt": "new",
        "untracked.txt": "fresher",
    }
    assert "uncommitted changes included" in (snapshot_note(repo, snap.commit) or "")


def test_same_dirty_tree_gives_the_same_commit(repo: Path) -> None:
    (repo / "modify.txt").write_text("new\n")
    first = snapshot(repo)
    second = snapshot(repo)
    assert first.commit == second.commit
    (repo / "modify.txt").write_text("newer\n")
    assert snapshot(repo).commit != first.commit


def test_clean_tree_is_head_itself(repo: Path) -> None:
    snap = snapshot(repo)
    assert snap.commit == git(repo, "rev-parse", "HEAD")
    assert not snap.dirty
    assert snapshot_note(repo, snap.commit) is None


def test_repository_without_commits(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "a.txt").write_text("A\n")
    (root / "sub").mkdir()
    (root / "sub" / "b.txt").write_text("B\n")
    before = user_state(root)

    snap = snapshot(root)

    assert user_state(root) == before
    assert snap.base is None
    assert snap.branch == "main"
    assert "no commits yet" in snap.subject
    assert tree_files(root, snap.commit) == {"a.txt": "A", "sub/b.txt": "B"}

    dest = tmp_path / "checkout"
    export_checkout(root, snap.commit, dest, branch=snap.branch)
    assert (dest / "sub" / "b.txt").read_text() == "B\n"
    assert git(dest, "rev-parse", "HEAD") == snap.commit
    assert git(dest, "symbolic-ref", "--short", "HEAD") == "main"


def test_commit_ref_is_used_untouched(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1")
    (repo / "keep.txt").write_text("second\n")
    git(repo, "commit", "-q", "-am", "second commit")
    git(repo, "branch", "feature", first)
    (repo / "modify.txt").write_text("dirty, ignored with --commit\n")

    by_tag = snapshot(repo, "v1")
    assert by_tag.commit == first
    assert not by_tag.dirty
    assert by_tag.branch == "master"
    assert by_tag.subject == "push for office"

    by_branch = snapshot(repo, "feature")
    assert by_branch.commit == first
    assert by_branch.branch == "feature"

    assert snapshot(repo, "HEAD").subject == "second commit"
    with pytest.raises(GitError, match="--commit nope: no such commit"):
        snapshot(repo, "nope")


def test_project_in_a_subdirectory_becomes_the_checkout_root(repo: Path, tmp_path: Path) -> None:
    (repo / "app" / "main.py").write_text("print('v2')\n")
    (repo / "app" / "new.py").write_text("x = 1\n")
    (repo / "modify.txt").write_text("outside the project\n")

    snap = snapshot(repo / "app")
    assert snap.subdir == "app"
    assert snap.dirty
    assert tree_files(repo, snap.commit) == {"main.py": "print('v2')", "new.py": "x = 1"}

    committed = snapshot(repo / "app", "HEAD")
    assert not committed.dirty
    assert tree_files(repo, committed.commit) == {"main.py": "print('v1')"}
    assert "at commit" in (snapshot_note(repo, committed.commit) or "")

    dest = tmp_path / "co"
    export_checkout(repo / "app", snap.commit, dest, branch="master")
    assert sorted(p.name for p in dest.iterdir()) == [".git", "main.py", "new.py"]


def test_outside_a_repository_is_one_clear_line(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotAGitRepositoryError) as info:
        find_repo(plain)
    message = str(info.value)
    assert "is not inside a git repository" in message
    assert "--no-git" in message
    assert "\n" not in message
    with pytest.raises(NotAGitRepositoryError):
        snapshot(plain)


def test_export_is_a_real_independent_working_copy(repo: Path, tmp_path: Path) -> None:
    git(repo, "remote", "add", "origin", "git@github.com:ada/lettings.git")
    (repo / "modify.txt").write_text("new\n")
    (repo / "untracked.txt").write_text("u\n")
    git(repo, "gc", "-q")  # packed objects: the clone must not hard-link them
    snap = snapshot(repo)
    assert snap.origin_url == origin_url(repo) == "git@github.com:ada/lettings.git"

    dest = tmp_path / "checkout"
    export_checkout(repo, snap.commit, dest, branch="master", origin_url=snap.origin_url)

    assert git(dest, "rev-parse", "HEAD") == snap.commit
    assert git(dest, "symbolic-ref", "--short", "HEAD") == "master"
    assert git(dest, "remote", "get-url", "origin") == "git@github.com:ada/lettings.git"
    assert git(dest, "status", "--porcelain") == ""
    assert (dest / "modify.txt").read_text() == "new\n"
    assert (dest / "untracked.txt").read_text() == "u\n"
    assert (dest / "delete.txt").read_text() == "bye\n"
    packs = list((dest / ".git" / "objects" / "pack").glob("*.pack"))
    assert packs
    assert all(p.stat().st_nlink == 1 for p in packs)

    detached = tmp_path / "detached"
    export_checkout(repo, snap.commit, detached)
    assert git(detached, "rev-parse", "HEAD") == snap.commit
    assert (
        subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=detached, check=False).returncode
        == 1
    )
    assert git(detached, "remote", "get-url", "origin") == str(repo)


def test_export_refuses_a_non_empty_destination(repo: Path, tmp_path: Path) -> None:
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "x").write_text("x")
    with pytest.raises(GitError, match="is not empty"):
        export_checkout(repo, git(repo, "rev-parse", "HEAD"), dest)


def test_copy_commit_objects_moves_a_snapshot_into_another_repository(
    repo: Path, tmp_path: Path
) -> None:
    (repo / "modify.txt").write_text("changed\n")
    snap = snapshot(repo)
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    copy_commit_objects(repo, other, snap.commit)
    assert git(other, "show", f"{snap.commit}:modify.txt") == "changed"
    assert git(other, "rev-parse", f"{snap.commit}^") == snap.base
