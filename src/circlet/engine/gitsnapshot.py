"""The code under test: a commit made from the working tree as it is, and its checkout.

By default circlet tests what is on disk (tracked files with their uncommitted
changes, plus untracked files that are not ignored), not the last commit. We
turn that into a real commit without touching anything the user sees: a
temporary index (a copy of the user's, so ``git add`` only rehashes changed
files), ``write-tree`` and ``commit-tree`` with HEAD as parent. No ref, no
stash entry, no index change; only unreachable objects that ``git gc`` will
prune. A clean tree gives HEAD itself; the same dirty tree gives the same
commit again (author/committer dates are HEAD's), so ``{{ .Revision }}`` keys
behave.

When the project is a subdirectory of a repository (``examples/lettings``),
the commit's tree is that subdirectory, so the job sees the project at the
root of its checkout, as it would on CircleCI with its own repository.

:func:`export_checkout` makes a real working copy (``.git``, a local branch
named like the user's, ``origin`` set) in a host directory, from which the
checkout step copies it into the job environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SNAPSHOT_TRAILER = "Circlet-Snapshot:"
GIT_TIMEOUT = 600.0  # seconds; a huge repository's first `git add` can be slow


class GitError(Exception):
    """A git operation failed; the message is one line for the user."""


class NotAGitRepositoryError(GitError):
    """The project directory is not inside a git repository."""


@dataclass(frozen=True)
class Snapshot:
    """What ``circlet run`` tests: the commit and what CircleCI would show about it."""

    repo: Path  # the repository's top level
    commit: str  # full sha to check out (CIRCLE_SHA1)
    branch: str | None  # the user's branch (None when HEAD is detached)
    subject: str  # first line of the commit message
    author: str  # "Name <email>"
    dirty: bool  # the working tree differs from the base commit
    base: str | None  # HEAD (or --commit REF) it was made from; None without commits
    subdir: str = ""  # project directory relative to ``repo`` ("" = top level)
    origin_url: str | None = None  # ``remote.origin.url`` of the repository, if any

    @property
    def short(self) -> str:
        return self.commit[:7]


def _git(
    args: list[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input_bytes: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    base.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    if env:
        base.update(env)
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=base,
            input=input_bytes,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise GitError("git is not installed (needed to check out the code)") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} took longer than {GIT_TIMEOUT:.0f}s in {cwd}") from None
    if check and proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = detail[-1] if detail else f"exit code {proc.returncode}"
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {last}")
    return proc


def _out(
    args: list[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
) -> str:
    proc = _git(args, cwd, env=env, input_bytes=input_bytes)
    return proc.stdout.decode("utf-8", "replace").strip()


def _maybe(args: list[str], cwd: Path) -> str | None:
    proc = _git(args, cwd, check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8", "replace").strip() or None


def find_repo(path: Path) -> Path:
    """The top level of the git repository containing ``path``.

    Raises :class:`NotAGitRepositoryError` (one line, with the fix) when there is none.
    """
    if not path.exists():
        raise GitError(f"{path}: no such directory")
    top = _maybe(["rev-parse", "--show-toplevel"], path)
    if top is None:
        raise NotAGitRepositoryError(
            f"{path} is not inside a git repository: run `git init` there, "
            "or pass --no-git to copy the directory as it is"
        )
    return Path(top)


def _identity(repo: Path, rev: str | None) -> dict[str, str]:
    """Author/committer env for commit-tree: the base commit's (deterministic
    snapshot shas), else the user's configured identity, else circlet's."""
    if rev is not None:
        fmt = "%an%x00%ae%x00%ad%x00%cn%x00%ce%x00%cd"
        raw = _out(["log", "-1", "--date=raw", f"--format={fmt}", rev], repo)
        an, ae, ad, cn, ce, cd = raw.split("\0")
        return {
            "GIT_AUTHOR_NAME": an,
            "GIT_AUTHOR_EMAIL": ae,
            "GIT_AUTHOR_DATE": ad,
            "GIT_COMMITTER_NAME": cn,
            "GIT_COMMITTER_EMAIL": ce,
            "GIT_COMMITTER_DATE": cd,
        }
    name = _maybe(["config", "user.name"], repo) or "circlet"
    email = _maybe(["config", "user.email"], repo) or "circlet@localhost"
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


def _describe(repo: Path, rev: str) -> tuple[str, str]:
    raw = _out(["log", "-1", "--format=%s%x00%an <%ae>", rev], repo)
    subject, _, author = raw.partition("\0")
    return subject, author


def _tree_of(repo: Path, rev: str, subdir: str) -> str | None:
    spec = f"{rev}:{subdir}" if subdir else f"{rev}^{{tree}}"
    return _maybe(["rev-parse", "-q", "--verify", spec], repo)


def _commit_tree(
    repo: Path, tree: str, parent: str | None, message: str, identity: Mapping[str, str]
) -> str:
    args = ["commit-tree", tree]
    if parent:
        args += ["-p", parent]
    return _out(args, repo, env=identity, input_bytes=message.encode("utf-8"))


def snapshot(path: Path, ref: str | None = None) -> Snapshot:
    """The commit to test for the project at ``path``.

    Without ``ref``: the working tree as it is (see the module docstring). With
    ``ref`` (``--commit REF``): that commit, untouched. Never changes the
    user's index, HEAD, branches or stash.
    """
    path = path.resolve()
    top = find_repo(path)
    subdir = path.relative_to(top).as_posix() if path != top else ""
    if subdir == ".":
        subdir = ""
    head = _maybe(["rev-parse", "-q", "--verify", "HEAD^{commit}"], top)
    branch = _maybe(["symbolic-ref", "-q", "--short", "HEAD"], top)
    origin = _maybe(["config", "--get", "remote.origin.url"], top)
    where = f"{top}/{subdir}" if subdir else str(top)

    if ref is not None:
        base = _maybe(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], top)
        if base is None:
            raise GitError(f"--commit {ref}: no such commit in {top}")
        if _maybe(["rev-parse", "-q", "--verify", f"refs/heads/{ref}"], top):
            branch = ref
        subject, author = _describe(top, base)
        if not subdir:
            return Snapshot(top, base, branch, subject, author, False, base, subdir, origin)
        tree = _tree_of(top, base, subdir)
        if tree is None:
            raise GitError(f"--commit {ref}: {subdir} does not exist in that commit")
        message = f"{subject}\n\n{SNAPSHOT_TRAILER} {where} at commit {base[:12]}\n"
        commit = _commit_tree(top, tree, base, message, _identity(top, base))
        return Snapshot(top, commit, branch, subject, author, False, base, subdir, origin)

    tree = _working_tree(top, subdir, head)
    if head is not None:
        if not subdir and tree == _tree_of(top, head, ""):
            subject, author = _describe(top, head)
            return Snapshot(top, head, branch, subject, author, False, head, subdir, origin)
        subject, author = _describe(top, head)
        dirty = tree != _tree_of(top, head, subdir)
        note = "uncommitted changes included" if dirty else "no uncommitted changes"
        message = f"{subject}\n\n{SNAPSHOT_TRAILER} working tree of {where} ({note})\n"
        commit = _commit_tree(top, tree, head, message, _identity(top, head))
        return Snapshot(top, commit, branch, subject, author, dirty, head, subdir, origin)
    subject = f"Working tree of {where} (no commits yet)"
    message = f"{subject}\n\n{SNAPSHOT_TRAILER} working tree of {where} (no commits yet)\n"
    identity = _identity(top, None)
    commit = _commit_tree(top, tree, None, message, identity)
    author = f"{identity['GIT_AUTHOR_NAME']} <{identity['GIT_AUTHOR_EMAIL']}>"
    return Snapshot(top, commit, branch, subject, author, True, None, subdir, origin)


def _working_tree(top: Path, subdir: str, head: str | None) -> str:
    """Tree id of the working tree (below ``subdir``) via a throw-away index."""
    real_index = Path(_out(["rev-parse", "--path-format=absolute", "--git-path", "index"], top))
    with tempfile.TemporaryDirectory(prefix="circlet-index-") as tmp:
        index = Path(tmp) / "index"
        env = {"GIT_INDEX_FILE": str(index)}
        if real_index.exists():
            # A copy keeps the stat cache: `git add` then rehashes only changed files.
            # copy2 keeps the index's mtime too: git's racy-entry check compares file
            # mtimes with it, so a file rewritten within the same clock tick (same size,
            # same mtime) is still re-read instead of trusted from the stat cache.
            shutil.copy2(real_index, index)
        elif head is not None:
            _git(["read-tree", head], top, env=env)
        _git(["add", "-A", "--", subdir or "."], top, env=env)
        args = ["write-tree"] + ([f"--prefix={subdir}/"] if subdir else [])
        proc = _git(args, top, env=env, check=False)
        if proc.returncode != 0:
            if subdir:  # nothing tracked or addable below subdir
                raise GitError(f"{top}/{subdir} has no files git would track")
            message = proc.stderr.decode("utf-8", "replace").strip()
            raise GitError(f"git write-tree failed in {top}: {message}")
        return proc.stdout.decode().strip()


def snapshot_note(repo: Path, commit: str) -> str | None:
    """What :func:`snapshot` wrote about ``commit`` (``working tree of /p (uncommitted
    changes included)``), or None for an ordinary commit."""
    body = _maybe(["log", "-1", "--format=%B", commit], find_repo(repo)) or ""
    for line in body.splitlines():
        if line.startswith(SNAPSHOT_TRAILER):
            return line[len(SNAPSHOT_TRAILER) :].strip()
    return None


def origin_url(repo: Path) -> str | None:
    """``remote.origin.url`` of the repository containing ``repo``, if set."""
    return _maybe(["config", "--get", "remote.origin.url"], find_repo(repo))


def commit_info(repo: Path, commit: str) -> tuple[str, str]:
    """(subject, "Name <email>") of ``commit``."""
    return _describe(find_repo(repo), commit)


def export_checkout(
    repo: Path,
    commit: str,
    dest: Path,
    *,
    branch: str | None = None,
    origin_url: str | None = None,
) -> None:
    """Make ``dest`` a git working copy of ``commit`` from ``repo``.

    ``dest`` gets its own ``.git`` (objects copied, never hard-linked, so a job
    cannot change the user's repository), HEAD on a local ``branch`` (detached
    when None) at ``commit``, and ``origin`` pointing at ``origin_url`` (the
    repository path when None).
    """
    top = find_repo(repo)
    if dest.exists() and any(dest.iterdir()):
        raise GitError(f"{dest} is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _git(["clone", "--quiet", "--no-checkout", "--no-hardlinks", str(top), str(dest)], top)
    if _git(["cat-file", "-e", f"{commit}^{{commit}}"], dest, check=False).returncode != 0:
        # The local clone copies every object, unreachable ones too; should a git
        # version not, move exactly the missing ones over.
        copy_commit_objects(top, dest, commit)
    if branch:
        _git(["checkout", "--quiet", "-B", branch, commit], dest)
        upstream = f"refs/remotes/origin/{branch}"
        if _maybe(["rev-parse", "-q", "--verify", upstream], dest):
            _git(["branch", "--quiet", f"--set-upstream-to=origin/{branch}", branch], dest)
    else:
        _git(["checkout", "--quiet", "--detach", commit], dest)
    _git(["remote", "set-url", "origin", origin_url or str(top)], dest)


def copy_commit_objects(source: Path, dest: Path, commit: str) -> None:
    """Copy the objects of ``commit`` (and its history) that ``dest`` lacks, as one pack."""
    wanted = f"{commit}\n" + "".join(f"^{h}\n" for h in _heads(dest))
    pack = _git(
        ["pack-objects", "--stdout", "--revs", "--thin"], source, input_bytes=wanted.encode()
    )
    _git(["index-pack", "--stdin", "--fix-thin"], dest, input_bytes=pack.stdout)


def _heads(clone: Path) -> list[str]:
    raw = _maybe(["for-each-ref", "--format=%(objectname)"], clone) or ""
    return sorted(set(raw.split()))
