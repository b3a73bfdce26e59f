"""The Executor contract, run unchanged against the host and the docker backends."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from executor_helpers import (
    KEY_PREFIX,
    LOCAL_PRIMARY,
    PRIMARY,
    SERVICE,
    ExecutorFactory,
    containers_of,
    containers_with_prefix,
    make_job,
    new_key,
    run,
)

from circlet.executors.base import Environment, ExecutorError
from circlet.executors.docker import DockerEnvironment, DockerExecutor
from circlet.executors.host import HostExecutor
from circlet.executors.pythons import choose, find_interpreters, requested_version
from circlet.plan import DockerImage, SetupRemoteDockerStep

Starter = Callable[..., Environment]
# Exit 0 while the process in {pid_file} runs (exists and is not a zombie).
ALIVE = (
    "sleep 0.2; state=$(cut -d' ' -f3 /proc/$(cat {pid_file})/stat 2>/dev/null);"
    ' [ -n "$state" ] && [ "$state" != Z ]'
)


def test_exit_codes_are_returned(env: Environment) -> None:
    for code in (0, 1, 3, 255):
        result, _ = run(env, ["sh", "-c", f"exit {code}"])
        assert result.exit_code == code
        assert (result.timed_out, result.no_output_timeout, result.cancelled) == (False,) * 3


def test_missing_program_and_directory_fail_like_a_shell(env: Environment) -> None:
    result, output = run(env, ["circlet-no-such-program"])
    assert result.exit_code == 127
    assert b"circlet-no-such-program" in output
    result, output = run(env, ["true"], cwd="/circlet-no-such-dir")
    assert result.exit_code == 126
    assert b"/circlet-no-such-dir" in output


def test_stdout_and_stderr_merge_in_order(env: Environment) -> None:
    script = "echo one; echo two >&2; echo three; echo four >&2"
    _, output = run(env, ["sh", "-c", script])
    assert output == b"one\ntwo\nthree\nfour\n"


def test_output_is_streamed_while_the_command_runs(env: Environment) -> None:
    # The command waits for a flag that only the output callback creates: if
    # output were held back until the end, it would never finish.
    flag = env.expand("~/streamed.flag")
    script = f"echo ready; while [ ! -e {flag} ]; do sleep 0.05; done; echo done"
    chunks: list[bytes] = []

    def on_output(data: bytes) -> None:
        chunks.append(data)
        if b"ready" in data:
            touched, _ = run(env, ["touch", flag])
            assert touched.exit_code == 0

    result = env.exec(["sh", "-c", script], env={}, cwd=None, on_output=on_output, timeout=30)
    assert result.exit_code == 0
    assert b"".join(chunks) == b"ready\ndone\n"


def test_environment_is_passed_and_the_callers_is_not(
    env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIRCLET_TEST_LEAK", "must-not-leak")
    given = {"FOO": "bar baz", "EMPTY": "", "MULTI": "a\nb"}
    _, output = run(
        env,
        ["sh", "-c", 'printf "%s|%s|%s|%s|" "$FOO" "${EMPTY-unset}" "$MULTI" "$HOME"; env'],
        env=given,
    )
    text = output.decode()
    assert text.startswith(f"bar baz||a\nb|{env.info.home}|")
    assert "CIRCLET_TEST_LEAK" not in text
    assert "PATH=" in text


def test_extra_env_applies_to_every_command(start: Starter) -> None:
    env = start(extra_env={"CIRCLET_EXTRA": "everywhere"})
    _, output = run(env, ["sh", "-c", 'echo "$CIRCLET_EXTRA"'])
    assert output == b"everywhere\n"


def test_cwd_and_expand(env: Environment) -> None:
    home = env.info.home
    assert env.expand("~") == home
    assert env.expand("~/project") == f"{home}/project"
    assert env.expand("/abs/path/") == "/abs/path"
    assert env.expand("rel/x") == f"{home}/project/rel/x"  # from the working directory
    made, _ = run(env, ["mkdir", "-p", env.expand("~/project/sub")])
    assert made.exit_code == 0
    _, output = run(env, ["pwd"], cwd="~/project/sub")
    assert output.decode().strip() == f"{home}/project/sub"
    _, output = run(env, ["pwd"], cwd="sub")
    assert output.decode().strip() == f"{home}/project/sub"


def test_stdin_is_fed_and_closed(env: Environment) -> None:
    result, output = run(env, ["cat"], stdin=b"line 1\nline 2\n")
    assert (result.exit_code, output) == (0, b"line 1\nline 2\n")
    big = b"x" * (3 * 1024 * 1024)  # larger than any pipe or socket buffer
    result, output = run(env, ["sh", "-c", "cat | wc -c"], stdin=big)
    assert result.exit_code == 0
    assert int(output.strip()) == len(big)
    result, output = run(env, ["sh", "-c", "cat; echo end"])  # no stdin: EOF at once
    assert (result.exit_code, output) == (0, b"end\n")


def test_timeout_kills_the_whole_group(env: Environment) -> None:
    pid_file = env.expand("~/bg.pid")
    started = time.monotonic()
    result, _ = run(env, ["sh", "-c", f"sleep 100 & echo $! > {pid_file}; wait"], timeout=0.5)
    assert result.timed_out
    assert result.exit_code is None
    assert time.monotonic() - started < 30  # killed, not waited for
    # The background sleep was in the same group: it is dead too (maybe a zombie
    # for a moment: whoever inherited it reaps when it likes).
    alive, _ = run(env, ["sh", "-c", ALIVE.format(pid_file=pid_file)])
    assert alive.exit_code != 0


def test_interrupt_is_escalated_when_ignored(env: Environment) -> None:
    # The shell ignores SIGINT; SIGTERM (2 s later) ends it.
    script = "trap '' INT; echo go; sleep 100"
    started = time.monotonic()
    result, output = run(env, ["sh", "-c", script], timeout=0.5)
    assert result.timed_out
    assert output == b"go\n"
    assert 2.0 <= time.monotonic() - started < 30


def test_no_output_timeout(env: Environment) -> None:
    started = time.monotonic()
    result, _ = run(env, ["sleep", "100"], no_output_timeout=1)
    assert result.no_output_timeout
    assert not result.timed_out
    assert result.exit_code is None
    assert time.monotonic() - started < 30
    # Output keeps it alive: 2 s of ticks with a 1 s limit is not killed.
    result, output = run(
        env,
        ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo tick; sleep 0.25; done"],
        no_output_timeout=1,
    )
    assert result.exit_code == 0
    assert output.count(b"tick") == 8


def test_cancel(env: Environment) -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    try:
        result, _ = run(env, ["sleep", "100"], cancel=cancel)
    finally:
        timer.cancel()
    assert result.cancelled
    assert result.exit_code is None
    already = threading.Event()
    already.set()
    result, _ = run(env, ["sleep", "100"], cancel=already)
    assert result.cancelled


def test_background_process_does_not_hold_the_command(env: Environment) -> None:
    started = time.monotonic()
    result, output = run(env, ["sh", "-c", "sleep 60 & echo started"])
    assert (result.exit_code, output) == (0, b"started\n")
    assert time.monotonic() - started < 30


def test_stop_kills_background_processes(kind: str, start: Starter) -> None:
    env = start()
    result, output = run(env, ["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"])
    assert result.exit_code == 0
    pid = int(output)
    env.stop()
    if kind == "host":
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _host_pid_alive(pid):
            time.sleep(0.05)
        assert not _host_pid_alive(pid)
    else:
        short_id = env.info.details["container"]
        assert not [c for c in containers_with_prefix(KEY_PREFIX) if c["Id"].startswith(short_id)]


def test_stop_is_idempotent_and_exec_after_stop_fails(env: Environment) -> None:
    env.stop()
    env.stop()
    with pytest.raises(ExecutorError, match="stopped"):
        run(env, ["true"])


def test_copy_round_trip(env: Environment, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b" / "c").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    script = src / "run.sh"
    script.write_text("#!/bin/sh\necho run\n")
    script.chmod(0o755)
    secret = src / "a" / "secret"
    secret.write_bytes(b"\x00\x01binary")
    secret.chmod(0o600)
    (src / "link").symlink_to("a/b/c/deep.txt")
    (src / "dangling").symlink_to("nowhere")

    env.copy_in(src, "~/data")
    result, output = run(
        env,
        ["sh", "-c", "./run.sh && readlink link && cat link && test -d empty && test -x run.sh"],
        cwd="~/data",
    )
    assert result.exit_code == 0, output
    assert output == b"run\na/b/c/deep.txt\ndeep\n"
    _, owner = run(env, ["sh", "-c", "stat -c %u ~/data/a/b/c/deep.txt; id -u"])
    file_uid, user_uid = owner.split()
    assert file_uid == user_uid  # files belong to the environment's user

    out = tmp_path / "out"
    assert env.copy_out("~/data", out)
    assert _tree(out) == _tree(src)
    assert os.readlink(out / "link") == "a/b/c/deep.txt"
    assert stat.S_IMODE((out / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "a" / "secret").stat().st_mode) == 0o600
    assert (out / "a" / "secret").read_bytes() == b"\x00\x01binary"

    # Into an existing directory: contents merge, existing files are replaced.
    again = tmp_path / "again"
    again.mkdir()
    (again / "a").mkdir()
    (again / "a" / "secret").write_text("new")
    env.copy_in(again, "~/data")
    _, output = run(env, ["sh", "-c", "cat ~/data/a/secret; cat ~/data/a/b/c/deep.txt"])
    assert output == b"newdeep\n"


def test_copy_single_files(env: Environment, tmp_path: Path) -> None:
    single = tmp_path / "one.txt"
    single.write_text("one\n")
    single.chmod(0o640)
    env.copy_in(single, "~/x/y/renamed.txt")
    _, output = run(env, ["sh", "-c", "cat ~/x/y/renamed.txt; stat -c %a ~/x/y/renamed.txt"])
    assert output == b"one\n640\n"
    back = tmp_path / "back" / "file.txt"
    assert env.copy_out("~/x/y/renamed.txt", back)
    assert back.read_text() == "one\n"
    assert stat.S_IMODE(back.stat().st_mode) == 0o640
    assert env.copy_out("~/no/such/thing", tmp_path / "missing") is False
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ExecutorError, match="no such file"):
        env.copy_in(tmp_path / "absent", "~/absent")


def test_agent_bin_is_on_path(
    make_executor: ExecutorFactory, start: Starter, tmp_path: Path
) -> None:
    agent_bin = tmp_path / "agent"
    agent_bin.mkdir()
    tool = agent_bin / "circleci-agent"
    tool.write_text('#!/bin/sh\necho "agent $*"\n')
    tool.chmod(0o755)
    env = start(executor=make_executor(agent_bin=agent_bin))
    result, output = run(env, ["circleci-agent", "step", "halt"])
    assert (result.exit_code, output) == (0, b"agent step halt\n")
    # Also when the job sets its own PATH.
    result, output = run(env, ["sh", "-c", "circleci-agent x"], env={"PATH": "/usr/bin:/bin"})
    assert (result.exit_code, output) == (0, b"agent x\n")


def test_ca_bundle_is_trusted(
    make_executor: ExecutorFactory, start: Starter, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\ncirclet test\n-----END CERTIFICATE-----\n")
    env = start(executor=make_executor(ca_bundle=str(bundle)))
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS"):
        result, output = run(env, ["sh", "-c", f'cat "${name}"'])
        assert result.exit_code == 0, name
        assert output.decode() == bundle.read_text(), name


def _tree(root: Path) -> dict[str, tuple[str, str]]:
    """Relative path → (kind, content or link target) for comparing copies."""
    result: dict[str, tuple[str, str]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            result[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            result[rel] = ("dir", oct(stat.S_IMODE(path.stat().st_mode)))
        else:
            mode = oct(stat.S_IMODE(path.stat().st_mode))
            result[rel] = ("file", mode + ":" + path.read_bytes().hex())
    return result


def _host_pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"  # a zombie is dead
    except (FileNotFoundError, IndexError):
        return False


# --------------------------------------------------------------- docker only


def docker_executor(**kwargs: object) -> DockerExecutor:
    """A docker executor with no CA bundle and the test image map."""
    kwargs.setdefault("ca_bundle", "")
    kwargs.setdefault("image_map", {PRIMARY: LOCAL_PRIMARY})
    return DockerExecutor(**kwargs)  # type: ignore[arg-type]


@pytest.mark.docker
def test_docker_missing_image_is_one_line_with_the_fix() -> None:
    job = make_job(DockerImage(PRIMARY), DockerImage("circlet/no-such-image:0.0"))
    key = new_key()
    with pytest.raises(ExecutorError) as caught:
        docker_executor(pull_timeout=10).start(job, job_key=key, extra_env={})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "image circlet/no-such-image:0.0 is not available locally and could not be pulled ("
    )
    assert message.endswith(
        "build or tag one locally, then map it: --image circlet/no-such-image:0.0=LOCAL_IMAGE "
        "(or add it under images: in .circlet.yml)"
    )
    assert containers_of(key) == []


@pytest.mark.docker
def test_docker_missing_ca_bundle_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match=r"CA bundle .*nope\.pem does not exist"):
        docker_executor(ca_bundle=str(tmp_path / "nope.pem")).start(
            make_job(), job_key=new_key(), extra_env={}
        )


@pytest.mark.docker
def test_docker_failed_start_leaves_no_container() -> None:
    # The primary starts, then its probe fails (no such user): everything is removed.
    job = make_job(DockerImage(PRIMARY, user="no-such-user"))
    key = new_key()
    with pytest.raises(ExecutorError):
        docker_executor().start(job, job_key=key, extra_env={})
    assert containers_of(key) == []


@pytest.mark.docker
def test_docker_stop_is_safe_before_anything_started() -> None:
    executor = docker_executor()
    env = DockerEnvironment(executor, executor.api, make_job(), new_key())
    env.stop()
    env.stop()
    with pytest.raises(ExecutorError, match="stopped"):
        run(env, ["true"])


@pytest.mark.docker
def test_docker_services_answer_on_localhost_and_by_name() -> None:
    web = DockerImage(
        SERVICE,
        name="web",
        command=("python3", "-m", "http.server", "8000", "--directory", "/etc"),
    )
    key = new_key()
    env = docker_executor().start(make_job(DockerImage(PRIMARY), web), job_key=key, extra_env={})
    try:
        assert len(containers_of(key)) == 2
        probe = (
            "import time, urllib.request\n"
            "for url in ('http://localhost:8000/hostname', 'http://web:8000/hostname'):\n"
            "    for _ in range(400):\n"
            "        try:\n"
            "            print(urllib.request.urlopen(url).status); break\n"
            "        except OSError:\n"
            "            time.sleep(0.05)\n"
        )
        result, output = run(env, ["python3", "-c", probe], timeout=60)
        assert (result.exit_code, output) == (0, b"200\n200\n")
    finally:
        env.stop()
    assert containers_of(key) == []


@pytest.mark.docker
def test_docker_user_and_environment_of_the_primary() -> None:
    primary = DockerImage(PRIMARY, user="root", environment={"IMG_VAR": "from-image"})
    env = docker_executor().start(make_job(primary), job_key=new_key(), extra_env={})
    try:
        assert env.info.home == "/root"
        _, output = run(env, ["sh", "-c", 'id -u; echo "$IMG_VAR"'])
        assert output == b"0\nfrom-image\n"
    finally:
        env.stop()


@pytest.mark.docker
def test_docker_primary_command_runs_beside_the_steps() -> None:
    primary = DockerImage(PRIMARY, command=("sh", "-c", "echo started > /tmp/cmd.out; sleep 300"))
    env = docker_executor().start(make_job(primary), job_key=new_key(), extra_env={})
    try:
        script = (
            "for i in $(seq 100); do [ -s /tmp/cmd.out ] && break; sleep 0.05; done;"
            " cat /tmp/cmd.out"
        )
        result, output = run(env, ["sh", "-c", script])
        assert (result.exit_code, output) == (0, b"started\n")
    finally:
        env.stop()


@pytest.mark.docker
def test_docker_remote_docker_socket() -> None:
    job = make_job(steps=(SetupRemoteDockerStep(),))
    env = docker_executor().start(job, job_key=new_key(), extra_env={})
    try:
        assert env.info.details["docker_host"] == "unix:///var/run/docker.sock"
        ping = (
            "import socket\n"
            "s = socket.socket(socket.AF_UNIX); s.connect('/var/run/docker.sock')\n"
            "s.sendall(b'GET /_ping HTTP/1.0\\r\\n\\r\\n')\n"
            "print(s.recv(4096).split(b'\\r\\n\\r\\n', 1)[1].decode())\n"
        )
        result, output = run(env, ["python3", "-c", ping])  # as the image's user, circleci
        assert (result.exit_code, output) == (0, b"OK\n"), output
    finally:
        env.stop()


@pytest.mark.docker
def test_docker_start_info_reads_like_spin_up_environment() -> None:
    env = docker_executor().start(make_job(), job_key=new_key(), extra_env={})
    try:
        lines = env.info.lines
        assert lines[0].startswith("Docker engine version ")
        assert "Starting container cimg/python:3.11" in lines
        assert "  mapped to local image circlet/cimg-python:3.11" in lines
        assert any(line.startswith("  time to create container: ") for line in lines)
        assert lines[-1].startswith("Time to start containers: ")
        assert env.info.home == "/home/circleci"
        assert env.info.details["user"] == "circleci"
    finally:
        env.stop()


@pytest.mark.docker
def test_docker_remove_leftovers() -> None:
    executor = docker_executor()
    prefix = new_key()
    env = executor.start(make_job(), job_key=f"{prefix}/job-1", extra_env={})
    assert len(containers_of(f"{prefix}/job-1")) == 1
    assert executor.remove_leftovers(prefix) == 1
    assert containers_of(f"{prefix}/job-1") == []
    env.stop()  # still safe


# ----------------------------------------------------------------- host only


def test_host_python_matches_the_image(tmp_path: Path) -> None:
    executor = HostExecutor(tmp_path / "work", ca_bundle="")
    for image in ("cimg/python:3.11", "cimg/python:3.99.1"):
        wanted = requested_version(image)
        assert wanted is not None
        choice = choose(wanted, list(find_interpreters()))
        assert choice.interpreter is not None, "this machine has a Python"
        env = executor.start(make_job(DockerImage(image)), job_key=new_key(), extra_env={})
        try:
            assert choice.describe(image) in env.info.lines
            script = "python -c 'import sys; print(*sys.version_info[:3])'; pip --version"
            result, output = run(env, ["sh", "-c", script])
            assert result.exit_code == 0, output
            first, pip = output.decode().splitlines()[:2]
            assert tuple(int(p) for p in first.split()) == choice.interpreter.version
            assert pip.startswith("pip ")
        finally:
            env.stop()
    assert any("no Python 3.99 here; using " in line for line in env.info.lines)


def test_host_job_dir_is_private_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = HostExecutor(tmp_path / "work", ca_bundle="").start(
        make_job(), job_key="wf/job 1", extra_env={}
    )
    job_dir = tmp_path / "work" / "wf-job-1"
    assert env.info.home == str(job_dir / "home")
    env.stop()
    assert not job_dir.exists()
    monkeypatch.setenv("CIRCLET_KEEP_WORKDIR", "1")
    kept = HostExecutor(tmp_path / "work", ca_bundle="").start(
        make_job(), job_key="kept", extra_env={}
    )
    kept.stop()
    assert (tmp_path / "work" / "kept" / "home").is_dir()


def test_host_start_fails_cleanly_when_the_base_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ExecutorError, match="cannot create the job directory"):
        HostExecutor(blocker, ca_bundle="").start(make_job(), job_key=new_key(), extra_env={})
