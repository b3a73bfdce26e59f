"""The code a server pipeline runs: a project's local path as it is, or a commit
of its git URL cloned into the server's data directory.

For a local path the working tree is snapshotted exactly as ``circlet run``
does (``engine.gitsnapshot``). For a git URL one clone per project is kept and
fetched before each trigger; the job's checkout then exports the commit from
it. Either way the config is read from the commit that will run, so a rerun
compiles the same config as its original.
"""

from __future__ import annotations

import os
import re
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

from circlet.engine import gitsnapshot
from circlet.executors.base import ExecutorError
from circlet.executors.process import check_output
from circlet.store.accounts import ProjectSettings

CONFIG_PATH = ".circleci/config.yml"
LOCAL_SETTINGS = ".circlet.yml"


class CodeError(Exception):
    """The code cannot be had (clone failed, unknown branch…): one line."""


@dataclass(frozen=True)
class Code:
    repo: Path | None  # None: a folder outside git (no checkout possible)
    commit: str | None
    branch: str | None
    tag: str | None
    subject: str
    author: str
    origin_url: str
    config_text: str
    config_name: str
    local_settings: dict[str, object]  # the project's .circlet.yml, if any


_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def _git(args: list[str], cwd: Path, what: str = "") -> str:
    env_prefix = ["env", "GIT_TERMINAL_PROMPT=0", "LC_ALL=C", "git"]
    try:
        return (
            check_output([*env_prefix, *args], cwd=str(cwd), what=what or f"git {args[0]}")
            .decode("utf-8", "replace")
            .strip()
        )
    except ExecutorError as exc:
        raise CodeError(str(exc).splitlines()[0] if str(exc) else f"git {args[0]} failed") from exc


def _maybe(args: list[str], cwd: Path) -> str | None:
    try:
        return _git(args, cwd)
    except CodeError:
        return None


def safe_dir_name(slug: str) -> str:
    """A folder name for a project slug."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", slug)


def is_git_url(source: str) -> bool:
    """Whether ``source`` names a remote repository rather than a local folder."""
    return bool(re.match(r"^([a-z+]+://|[\w.-]+@[\w.-]+:)", source)) or source.endswith(".git")


def _settings_from(text: str | None) -> dict[str, object]:
    if not text:
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _show(repo: Path, commit: str, path: str) -> str | None:
    return _maybe(["show", f"{commit}:{path}"], repo)


def resolve(
    project: ProjectSettings,
    checkouts: Path,
    *,
    branch: str | None,
    tag: str | None,
    revision: str | None,
) -> Code:
    """The code for one pipeline of ``project``; CodeError when it cannot be had."""
    if project.kind == "git":
        return _from_git(project, checkouts / safe_dir_name(project.slug), branch, tag, revision)
    return _from_path(Path(project.source), branch, tag, revision)


def _from_path(path: Path, branch: str | None, tag: str | None, revision: str | None) -> Code:
    if not path.is_dir():
        raise CodeError(f"{path}: no such directory")
    try:
        if revision is not None:
            top = gitsnapshot.find_repo(path)
            subject, author = gitsnapshot.commit_info(top, revision)
            snap = gitsnapshot.Snapshot(top, revision, branch, subject, author, False, revision)
        else:
            ref = tag or (branch if branch and _is_other_branch(path, branch) else None)
            snap = gitsnapshot.snapshot(path, ref)
    except gitsnapshot.NotAGitRepositoryError:
        config = path / CONFIG_PATH
        if not config.is_file():
            raise CodeError(f"no CircleCI config: {config} does not exist") from None
        return Code(
            None,
            None,
            branch,
            tag,
            "",
            "",
            str(path),
            config.read_text(encoding="utf-8"),
            str(config),
            _settings_from(_read(path / LOCAL_SETTINGS)),
        )
    except gitsnapshot.GitError as exc:
        raise CodeError(str(exc)) from exc
    text = _show(snap.repo, snap.commit, CONFIG_PATH)
    if text is None:
        raise CodeError(f"no CircleCI config: {CONFIG_PATH} is not in commit {snap.commit[:12]}")
    return Code(
        snap.repo,
        snap.commit,
        branch or (None if tag else snap.branch),
        tag,
        snap.subject,
        snap.author,
        snap.origin_url or str(path),
        text,
        str(path / CONFIG_PATH),
        _settings_from(_show(snap.repo, snap.commit, LOCAL_SETTINGS)),
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _is_other_branch(path: Path, branch: str) -> bool:
    """Whether ``branch`` is not the checked-out one (then its commit runs, not the
    working tree); CodeError when there is no such branch."""
    current = _maybe(["symbolic-ref", "-q", "--short", "HEAD"], path)
    if current == branch:
        return False
    if _maybe(["rev-parse", "-q", "--verify", f"refs/heads/{branch}"], path) is None:
        raise CodeError(f"branch {branch} not found in {path}")
    return True


def _from_git(
    project: ProjectSettings,
    clone: Path,
    branch: str | None,
    tag: str | None,
    revision: str | None,
) -> Code:
    with _locks[str(clone)]:
        if not (clone / ".git").is_dir():
            clone.parent.mkdir(parents=True, exist_ok=True)
            _git(
                ["clone", "--quiet", "--no-checkout", project.source, str(clone)],
                clone.parent,
                "git clone",
            )
        else:
            _git(
                [
                    "fetch",
                    "--quiet",
                    "--prune",
                    "--tags",
                    "--force",
                    "origin",
                    "+refs/heads/*:refs/remotes/origin/*",
                ],
                clone,
                "git fetch",
            )
        if revision is not None:
            commit = _maybe(["rev-parse", "-q", "--verify", f"{revision}^{{commit}}"], clone)
            what = f"commit {revision}"
        elif tag is not None:
            commit = _maybe(["rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}"], clone)
            what = f"tag {tag}"
        else:
            branch = branch or project.default_branch
            commit = _maybe(
                ["rev-parse", "-q", "--verify", f"refs/remotes/origin/{branch}^{{commit}}"], clone
            )
            what = f"branch {branch}"
        if commit is None:
            raise CodeError(f"{what} not found in {project.source}")
        raw = _git(["log", "-1", "--format=%s%x00%an <%ae>", commit], clone)
        subject, _, author = raw.partition("\0")
        text = _show(clone, commit, CONFIG_PATH)
        if text is None:
            raise CodeError(f"no CircleCI config: {CONFIG_PATH} is not in commit {commit[:12]}")
        return Code(
            clone,
            commit,
            None if tag and not branch else branch,
            tag,
            subject,
            author,
            project.source,
            text,
            CONFIG_PATH,
            _settings_from(_show(clone, commit, LOCAL_SETTINGS)),
        )


def project_name_for(source: str) -> str:
    """A project's short name from its path or URL (``…/lettings.git`` → lettings)."""
    name = source.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return name[:-4] if name.endswith(".git") else name or "project"


def default_slug(source: str) -> str:
    """CircleCI-shaped slug for a source: ``gh/org/repo`` for GitHub URLs,
    ``circlet/local/<name>`` for a folder, ``circlet/<host>/<name>`` otherwise."""
    match = re.match(r"^(?:[a-z+]+://(?:[^@/]+@)?|[\w.-]+@)([\w.-]+)[:/](.+?)(?:\.git)?/?$", source)
    if match:
        host, path = match.group(1), match.group(2)
        parts = [p for p in path.split("/") if p]
        vcs = {"github.com": "gh", "bitbucket.org": "bb"}.get(host, "circlet")
        org = parts[-2] if len(parts) >= 2 else host
        return f"{vcs}/{_slug_part(org)}/{_slug_part(parts[-1] if parts else 'project')}"
    return f"circlet/local/{_slug_part(project_name_for(os.fspath(source)))}"


def _slug_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text) or "project"
