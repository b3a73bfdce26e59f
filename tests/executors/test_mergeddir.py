"""Direct access to a docker job's files through overlay2's merged directory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from executor_helpers import make_job, run

from circlet.executors.base import Environment
from circlet.executors.mergeddir import resolve
from circlet.store.blobs import LocalBlobStore

pytestmark = pytest.mark.docker

_LIST = (
    "cd {0} && find . -printf '%P %y %m %U:%G %l\\n' | sort && "
    "find . -type f -print0 | sort -z | xargs -0 sha256sum"
)


@pytest.fixture
def kind() -> str:
    return "docker"


def _tree(root: Path) -> Path:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "sub" / "run.sh").chmod(0o755)
    (root / "sub" / "deep" / "secret").write_bytes(os.urandom(4096))
    (root / "sub" / "deep" / "secret").chmod(0o600)
    (root / "link").symlink_to("sub/run.sh")
    (root / "dangling").symlink_to("/nowhere/at/all")
    return root


def _host_listing(root: Path) -> list[tuple[str, int, int, bytes]]:
    found = []
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() else b""
        found.append((str(path.relative_to(root)), st.st_mode, st.st_mtime_ns, data))
    return found


def _listing(env: Environment, inside: str) -> str:
    result, out = run(env, ["sh", "-c", _LIST.format(inside)])
    assert result.exit_code == 0, out
    return out.decode()


def test_restore_through_merged_dir_matches_staged_copy(env: Environment, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    entry = store.put_tree("test", "k", _tree(tmp_path / "src"))
    assert env.staging_dir is not None
    staged = env.staging_dir / "restore"
    store.restore_tree(entry, staged)
    env.copy_in(staged, "/home/circleci/staged/x")

    direct = env.host_path("/home/circleci/direct/x")
    assert direct is not None
    assert not direct.exists()
    store.restore_tree(entry, direct)
    env.adopt("/home/circleci/direct/x")

    want = _listing(env, "/home/circleci/staged")
    assert " 3434:3434 " in want
    assert "link l 777 3434:3434 sub/run.sh" in want
    assert _listing(env, "/home/circleci/direct") == want
    # Written through the host path, read back by the job's user as a normal file.
    _, out = run(env, ["sh", "-c", "cat ~/direct/x/sub/deep/secret | wc -c; id -u"])
    assert out.split() == [b"4096", b"3434"]


def test_save_reads_the_job_files_directly(env: Environment, tmp_path: Path) -> None:
    result, out = run(
        env, ["sh", "-c", "mkdir -p ~/out/d && echo data > ~/out/d/f && chmod 640 ~/out/d/f"]
    )
    assert result.exit_code == 0, out
    store = LocalBlobStore(tmp_path / "blobs")
    direct = env.host_path("/home/circleci/out")
    assert direct is not None
    entry = store.put_tree("test", "direct", direct)
    assert env.staging_dir is not None
    assert env.copy_out("/home/circleci/out", env.staging_dir / "out")
    staged = store.put_tree("test", "staged", env.staging_dir / "out")
    back, again = tmp_path / "back", tmp_path / "again"
    store.restore_tree(entry, back)
    store.restore_tree(staged, again)
    assert _host_listing(back) == _host_listing(again)
    assert (back / "d" / "f").read_text() == "data\n"
    assert (back / "d" / "f").stat().st_mode & 0o777 == 0o640


def test_symlink_in_the_path_is_refused(env: Environment, tmp_path: Path) -> None:
    result, out = run(env, ["ln", "-s", "/etc", "/home/circleci/evil"])
    assert result.exit_code == 0, out
    assert env.host_path("/home/circleci/evil/x") is None
    assert env.host_path("/home/circleci/evil") is None
    # The staged path follows the link inside the container, never on the host.
    name = f"circlet-evil-{uuid.uuid4().hex[:8]}"
    assert env.staging_dir is not None
    src = env.staging_dir / "src"
    src.mkdir()
    (src / "f").write_text("no\n")
    env.copy_in(src, f"/home/circleci/evil/{name}")
    assert not os.path.lexists(f"/etc/{name}")
    _, out = run(env, ["cat", f"/etc/{name}/f"])
    assert out == b"no\n"


def test_mounts_are_refused(start: Callable[..., Environment], tmp_path: Path) -> None:
    env = start(make_job())
    assert env.staging_dir is not None
    assert env.host_path(str(env.staging_dir / "a")) is None
    assert env.host_path(str(env.staging_dir)) is None
    assert env.host_path("/etc/hosts") is None
    assert env.host_path("/") is None  # every mount lies under it
    assert env.host_path("relative/path") is None
    assert env.host_path("/home/circleci/project/x") is not None


def test_resolve_refuses_symlinks_and_mounts(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "file").write_text("")
    (tmp_path / "a" / "ln").symlink_to("/etc")
    assert resolve(tmp_path, [], "/a/b/c/d") == (tmp_path / "a/b/c/d", "/a/b/c")
    assert resolve(tmp_path, [], "/a/b") == (tmp_path / "a/b", None)
    assert resolve(tmp_path, [], "/a/ln/x") is None
    assert resolve(tmp_path, [], "/a/ln") is None
    assert resolve(tmp_path, [], "/a/file/x") is None
    assert resolve(tmp_path, [], "/a/../../etc") is None or resolve(
        tmp_path, [], "/a/../../etc"
    ) == (tmp_path / "etc", "/etc")
    assert resolve(tmp_path, ["/a/b"], "/a/b/c") is None
    assert resolve(tmp_path, ["/a/b"], "/a") is None
    assert resolve(tmp_path, ["/a/b"], "/a/bc") is not None
