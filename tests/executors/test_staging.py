"""The staging directory: seen by the environment at the same path, fast copies both ways.

The contract tests run on both backends; the docker-only ones check where the
directory goes and that the fast path (not the tar stream) is what copied.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from executor_helpers import LOCAL_PRIMARY, PRIMARY, make_job, new_key, run

from circlet.executors import staging
from circlet.executors.base import Environment, ExecutorError
from circlet.executors.docker import DockerEnvironment, DockerExecutor
from circlet.executors.host import HostExecutor
from circlet.plan import DockerImage, JobSpec

Starter = Callable[..., Environment]
STAMP = 1_500_000_000  # an mtime no copy would produce by itself
# One line per path under "$1": path|uid|gid|mode|mtime|type|link target.
LIST_SCRIPT = (
    'cd "$1" && find . | LC_ALL=C sort | while IFS= read -r p; do '
    'printf "%s|%s|" "$p" "$(stat -c "%u|%g|%a|%Y|%F" "$p")"; '
    'if [ -L "$p" ]; then readlink "$p"; else echo; fi; done'
)


def listing_inside(env: Environment, path: str) -> list[str]:
    """Owner, mode, mtime, type and link target of every path under ``path`` inside."""
    result, output = run(env, ["sh", "-c", LIST_SCRIPT, "sh", env.expand(path)])
    assert result.exit_code == 0, output
    return output.decode().splitlines()


def listing_host(root: Path, *, owner: tuple[str, str] | None = None) -> list[str]:
    """The same listing of a host tree; ``owner`` replaces every uid/gid when given."""
    lines = []
    paths = [root, *root.rglob("*")]
    for path in sorted(paths, key=lambda p: "." + str(p)[len(str(root)) :]):
        info = path.lstat()
        uid, gid = owner or (str(info.st_uid), str(info.st_gid))
        kind = _kind(info)
        link = os.readlink(path) if path.is_symlink() else ""
        name = "." + str(path)[len(str(root)) :]
        mode = f"{stat.S_IMODE(info.st_mode):o}"
        lines.append(f"{name}|{uid}|{gid}|{mode}|{int(info.st_mtime)}|{kind}|{link}")
    return lines


def _kind(info: os.stat_result) -> str:
    """As ``stat -c %F`` names it."""
    if stat.S_ISLNK(info.st_mode):
        return "symbolic link"
    if stat.S_ISDIR(info.st_mode):
        return "directory"
    if stat.S_ISREG(info.st_mode):
        return "regular file" if info.st_size else "regular empty file"
    return "other"


def make_tree(root: Path) -> Path:
    """A tree of what a cache holds: private, executable and set-id files, links, an empty dir."""
    (root / "sub" / "empty").mkdir(parents=True)
    (root / "sub" / "secret").write_bytes(b"secret\x00bytes")
    (root / "sub" / "secret").chmod(0o600)
    (root / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (root / "run.sh").chmod(0o755)
    (root / "setid").write_text("#!/bin/sh\n")
    (root / "setid").chmod(0o6755)  # chown drops these bits: they must come back
    (root / "link").symlink_to("sub/secret")
    (root / "dangling").symlink_to("nowhere")
    for name in ("link", "dangling", "sub/secret", "run.sh", "setid"):
        path = root / name
        os.utime(path, (STAMP, STAMP), follow_symlinks=False)
    (root / "sub").chmod(0o700)
    for directory in (root / "sub" / "empty", root / "sub", root):  # children first
        os.utime(directory, (STAMP + 1, STAMP + 1))
    return root


def user_ids(env: Environment) -> tuple[str, str]:
    """The environment user's uid and gid."""
    _, output = run(env, ["sh", "-c", "id -u; id -g"])
    uid, gid = output.decode().split()
    return uid, gid


# ------------------------------------------------------------------ contract


def test_staging_dir_is_private_and_seen_inside_at_the_same_path(
    kind: str, env: Environment
) -> None:
    assert env.staging_dir is not None
    assert env.staging_dir.is_dir()
    assert stat.S_IMODE(env.staging_dir.stat().st_mode) == 0o700
    (env.staging_dir / "hello").write_text("from the host\n")
    as_root = ["sudo"] if kind == "docker" else []  # only root inside may look in it
    result, output = run(env, [*as_root, "cat", str(env.staging_dir / "hello")])
    assert (result.exit_code, output) == (0, b"from the host\n")
    result, output = run(env, [*as_root, "sh", "-c", f"echo back > {env.staging_dir}/back"])
    assert result.exit_code == 0, output
    assert (env.staging_dir / "back").read_text() == "back\n"


def test_copy_in_from_staging_gives_the_files_to_the_user_as_they_are(env: Environment) -> None:
    assert env.staging_dir is not None
    src = make_tree(env.staging_dir / "step-1-restore" / "tree")
    expected = listing_host(src, owner=user_ids(env))
    env.copy_in(src, "~/new/deep")
    assert listing_inside(env, "~/new/deep") == expected
    # Root wrote the 0600 file on the host; the job's user reads it, and runs the script.
    script = "cat sub/secret && ./run.sh && cat link && stat -c %u:%g .. ../.."
    result, output = run(env, ["sh", "-c", script], cwd="~/new/deep")
    assert result.exit_code == 0, output
    uid, gid = user_ids(env)
    home_owner = f"{uid}:{gid}\n".encode()
    assert output == b"secret\x00bytesran\nsecret\x00bytes" + home_owner + home_owner

    # A single file, renamed, into a directory that does not exist yet.
    single = env.staging_dir / "step-2" / "one.txt"
    single.parent.mkdir()
    single.write_text("one\n")
    single.chmod(0o640)
    env.copy_in(single, "~/x/y/renamed.txt")
    _, output = run(env, ["sh", "-c", "cat ~/x/y/renamed.txt; stat -c '%a %u' ~/x/y/renamed.txt"])
    assert output == f"one\n640 {uid}\n".encode()
    with pytest.raises(ExecutorError, match="no such file"):
        env.copy_in(env.staging_dir / "absent", "~/absent")


def test_copy_out_into_staging_round_trips(env: Environment) -> None:
    assert env.staging_dir is not None
    make = (
        "mkdir -p ~/made/sub/empty && cd ~/made"
        " && printf 'secret' > sub/secret && chmod 600 sub/secret"
        " && printf '#!/bin/sh\\necho ran\\n' > run.sh && chmod 755 run.sh"
        " && ln -s sub/secret link && ln -s nowhere dangling && chmod 700 sub"
        f" && touch -h -d @{STAMP} link dangling sub/secret run.sh"
        f" && touch -d @{STAMP + 1} sub/empty sub ."
    )
    result, output = run(env, ["sh", "-c", make])
    assert result.exit_code == 0, output
    inside = listing_inside(env, "~/made")

    out = env.staging_dir / "step-3-save" / "made"
    assert env.copy_out("~/made", out)
    assert listing_host(out) == inside  # owners too: the host side is root
    assert (out / "sub" / "secret").read_bytes() == b"secret"
    assert os.readlink(out / "dangling") == "nowhere"

    env.copy_in(out, "~/back")
    assert listing_inside(env, "~/back") == inside

    single = env.staging_dir / "step-4" / "deeper" / "run.sh"
    assert env.copy_out("~/made/run.sh", single)
    assert single.read_text() == "#!/bin/sh\necho ran\n"
    assert stat.S_IMODE(single.stat().st_mode) == 0o755
    assert env.copy_out("~/no/such/thing", env.staging_dir / "missing") is False
    assert not (env.staging_dir / "missing").exists()


def test_stop_removes_the_staging_dir(kind: str, env: Environment) -> None:
    staging_dir = env.staging_dir
    assert staging_dir is not None
    result, output = run(env, ["sh", "-c", "mkdir -p ~/c/d && echo x > ~/c/d/f && chmod 500 ~/c/d"])
    assert result.exit_code == 0, output
    assert env.copy_out("~/c", staging_dir / "step-1" / "c")  # the container user's files
    assert (staging_dir / "step-1" / "c" / "d" / "f").is_file()
    env.stop()
    assert not staging_dir.exists()
    if kind == "docker":  # and the job directory that held it
        assert not staging_dir.parent.exists()


# --------------------------------------------------------------- docker only


@pytest.fixture
def docker_start(tmp_path: Path) -> Iterator[Callable[..., DockerEnvironment]]:
    """Start docker environments (``docker_start(job=…, work_dir=…)``); stopped after the test."""
    started: list[DockerEnvironment] = []

    def starter(job: JobSpec | None = None, work_dir: Path | None = None) -> DockerEnvironment:
        executor = _docker(work_dir=work_dir)
        started.append(executor.start(job or make_job(), job_key=new_key(), extra_env={}))
        return started[-1]

    yield starter
    for env in started:
        env.stop()


@pytest.mark.docker
def test_docker_staged_copies_take_the_fast_path_and_leave_the_host_files(
    docker_start: Callable[..., DockerEnvironment], tmp_path: Path
) -> None:
    env = docker_start()
    assert env.staging_dir is not None
    staged = make_tree(env.staging_dir / "step-1" / "tree")
    os.link(staged / "run.sh", tmp_path / "shared")  # as a cache's shared copy might be
    outside = make_tree(tmp_path / "outside")
    before = listing_host(staged)
    calls = archive_calls(env)  # start read /etc/passwd so

    env.copy_in(staged, "~/staged")
    assert env.copy_out("~/staged", env.staging_dir / "step-2" / "back")
    assert archive_calls(env) == calls  # no tar stream through the engine
    assert listing_host(staged) == before  # the host files are not touched
    assert (tmp_path / "shared").stat().st_uid == os.geteuid()

    env.copy_in(outside, "~/outside")
    assert env.copy_out("~/outside", tmp_path / "out")
    assert archive_calls(env) == [*calls, "extract-to-dir", "archive-path"]
    assert listing_inside(env, "~/staged")[1:] == listing_inside(env, "~/outside")[1:]


def archive_calls(env: DockerEnvironment) -> list[str]:
    """The engine's archive events (tar streams in and out) of the primary so far."""
    client = docker.APIClient()
    try:
        events = client.events(
            since=int(time.time()) - 600,
            until=f"{time.time():.9f}",  # the engine takes fractions; now, not the second
            filters={"container": env.primary, "event": ["extract-to-dir", "archive-path"]},
            decode=True,
        )
        return [str(event["Action"]) for event in events]
    finally:
        client.close()


@pytest.mark.docker
def test_docker_copy_in_from_staging_into_a_root_owned_directory(
    docker_start: Callable[..., DockerEnvironment],
) -> None:
    env = docker_start()
    assert env.staging_dir is not None
    src = env.staging_dir / "step-1" / "lib"
    src.mkdir(parents=True)
    (src / "mod.py").write_text("X = 1\n")
    # As with the tar stream, existing directories the user cannot write take the copy.
    env.copy_in(src, "/usr/local/lib")
    script = "cat /usr/local/lib/mod.py; stat -c %u /usr/local/lib/mod.py"
    _, output = run(env, ["sh", "-c", script])
    assert output == b"X = 1\n3434\n"


@pytest.mark.docker
def test_docker_staging_dir_stays_out_of_the_jobs_home(
    docker_start: Callable[..., DockerEnvironment], tmp_path: Path
) -> None:
    # A root job whose home holds the work dir: the mount would land inside
    # ~, so that a cache of ~ would contain itself. It goes to the temp dir.
    home = tmp_path / "home"
    job = make_job(DockerImage(PRIMARY, user="root", environment={"HOME": str(home)}))
    env = docker_start(job=job, work_dir=home / "work")
    assert env.info.home == str(home)
    staging_dir = env.staging_dir
    assert staging_dir is not None
    assert not staging.overlaps(str(staging_dir), str(home))
    assert staging_dir.parent.parent == Path(os.path.realpath(tempfile.gettempdir()))
    make_tree(staging_dir / "tree")
    expected = listing_host(staging_dir / "tree")
    env.copy_in(staging_dir / "tree", "~/tree")
    assert listing_inside(env, "~/tree") == expected
    env.stop()
    assert not staging_dir.parent.exists()


@pytest.mark.docker
def test_docker_remove_leftovers_removes_staging_dirs(tmp_path: Path) -> None:
    executor = _docker(work_dir=tmp_path / "work")
    key = new_key()
    env = executor.start(make_job(), job_key=key, extra_env={})
    try:
        assert env.staging_dir is not None
        assert env.staging_dir.is_dir()
        assert executor.remove_leftovers(key) == 1
        assert not env.staging_dir.exists()
    finally:
        env.stop()


def _docker(**kwargs: object) -> DockerExecutor:
    kwargs.setdefault("ca_bundle", "")
    kwargs.setdefault("image_map", {PRIMARY: LOCAL_PRIMARY})
    return DockerExecutor(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------- host only


def test_host_staging_dir_is_in_the_job_dir_and_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIRCLET_KEEP_WORKDIR", "1")
    env = HostExecutor(tmp_path / "work", ca_bundle="").start(
        make_job(), job_key="kept", extra_env={}
    )
    assert env.staging_dir == tmp_path / "work" / "kept" / "staging"
    (env.staging_dir / "scratch").write_text("x")
    env.stop()
    assert (tmp_path / "work" / "kept" / "home").is_dir()  # kept for a look
    assert not (tmp_path / "work" / "kept" / "staging").exists()  # scratch is not


# ------------------------------------------------------------------- helpers


def test_overlaps_and_is_under(tmp_path: Path) -> None:
    assert staging.overlaps("/root/.local/share", "/root")
    assert staging.overlaps("/root", "/root/.local/")
    assert staging.overlaps("/a/b", "/a/b/")
    assert not staging.overlaps("/root2/x", "/root")
    assert staging.overlaps("/anything", "/")
    real = tmp_path / "real"
    (real / "dir").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(real)
    (real / "dir" / "link").symlink_to("/etc")
    # The parent's symlinks resolve, the last component is kept as it is.
    assert staging.host_path(tmp_path / "alias" / "dir" / "link") == real / "dir" / "link"
    assert staging.is_under(staging.host_path(tmp_path / "alias" / "dir"), real)
    assert staging.is_under(real, real)
    assert not staging.is_under(tmp_path / "realx", real)


def test_prepare_keeps_out_of_the_avoided_dirs(tmp_path: Path) -> None:
    made = staging.prepare(tmp_path / "work", "job-1", ["/home/circleci"])
    assert made == Path(os.path.realpath(tmp_path)) / "work" / "job-1" / "staging"
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    (made / "leftover").write_text("x")
    again = staging.prepare(tmp_path / "work", "job-1", [])
    assert again == made
    assert list(made.iterdir()) == []  # a leftover of an earlier run is cleared

    moved = staging.prepare(tmp_path / "work", "job-2", [str(tmp_path)])
    assert moved is not None
    assert moved.parent.name.startswith("circlet-job-2-")
    assert not staging.overlaps(str(moved), str(tmp_path))
    staging.remove(moved)
    assert not moved.parent.exists()
    assert staging.prepare(tmp_path / "work", "job-3", ["/"]) is None
