"""process.run: the one place local processes start (timeouts, groups, streams)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from circlet.executors import process
from circlet.executors.base import ExecutorError


def run(argv: list[str], **kwargs: object) -> tuple[process.ExecResult, bytes]:
    chunks: list[bytes] = []
    result = process.run(argv, env=None, cwd=None, on_output=chunks.append, **kwargs)  # type: ignore[arg-type]
    return result, b"".join(chunks)


def test_on_start_gets_the_new_process_group() -> None:
    groups: list[int] = []
    result, output = run(
        ["sh", "-c", "ps -o pgid= -p $$ 2>/dev/null || cut -d' ' -f5 /proc/$$/stat"],
        on_start=groups.append,
    )
    assert result.exit_code == 0
    assert len(groups) == 1
    assert int(output) == groups[0]  # the command leads its own group
    assert groups[0] != os.getpgid(0)


def test_death_by_a_signal_reads_like_a_shell() -> None:
    result, _ = run(["sh", "-c", "kill -TERM $$"])
    assert result.exit_code == 128 + signal.SIGTERM
    assert not result.timed_out


def test_env_none_inherits_and_a_mapping_replaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCLET_PROCESS_TEST", "inherited")
    _, output = run(["sh", "-c", 'echo "${CIRCLET_PROCESS_TEST-unset}"'])
    assert output == b"inherited\n"
    chunks: list[bytes] = []
    process.run(
        ["/bin/sh", "-c", 'echo "${CIRCLET_PROCESS_TEST-unset} $ONLY"'],
        env={"ONLY": "given"},
        cwd=None,
        on_output=chunks.append,
    )
    assert b"".join(chunks) == b"unset given\n"


def test_sigterm_ignored_too_ends_with_sigkill() -> None:
    started = time.monotonic()
    result, output = run(
        ["sh", "-c", "trap '' INT TERM; echo stubborn; while :; do sleep 0.1; done"], timeout=0.2
    )
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert output == b"stubborn\n"
    # interrupt, 2 s, terminate, 3 s, kill: it took the whole ladder, and no more.
    assert process.INTERRUPT_GRACE + process.TERMINATE_GRACE <= elapsed < 30


def test_output_during_the_grace_period_is_kept() -> None:
    result, output = run(
        ["sh", "-c", "trap 'echo cleaning up; exit 7' INT; echo go; sleep 100 & wait"], timeout=0.3
    )
    assert result.timed_out
    assert output == b"go\ncleaning up\n"


def test_a_grandchild_holding_the_pipe_does_not_hold_the_command() -> None:
    started = time.monotonic()
    result, output = run(["sh", "-c", "(sleep 30; echo late) & echo now"])
    assert (result.exit_code, output) == (0, b"now\n")
    assert time.monotonic() - started < 20


def test_stdin_larger_than_the_pipe_while_output_flows() -> None:
    data = os.urandom(1 << 20)
    chunks: list[bytes] = []
    result = process.run(["cat"], env=None, cwd=None, on_output=chunks.append, stdin=data)
    assert result.exit_code == 0
    assert b"".join(chunks) == data


def test_stdin_the_command_does_not_read_is_dropped() -> None:
    result, output = run(["sh", "-c", "exec 0<&-; echo closed"], stdin=b"x" * (1 << 20))
    assert (result.exit_code, output) == (0, b"closed\n")


def test_cancel_from_another_thread() -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    try:
        result, _ = run(["sleep", "100"], cancel=cancel)
    finally:
        timer.cancel()
    assert result.cancelled
    assert result.exit_code is None


def test_kill_group_reports_a_missing_group() -> None:
    groups: list[int] = []
    run(["true"], on_start=groups.append)
    assert process.kill_group(groups[0]) is False


def test_check_output_and_its_error() -> None:
    assert process.check_output(["sh", "-c", "echo hi"]) == b"hi\n"
    with pytest.raises(ExecutorError, match=r"^the helper failed \(3\): boom$"):
        process.check_output(["sh", "-c", "echo boom >&2; exit 3"], what="the helper")


def test_open_pipe_streams_both_ways(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with process.open_pipe(["sh", "-c", f"cat > {target}"], mode="w") as sink:
        sink.write(b"written through a pipe\n")
    assert target.read_bytes() == b"written through a pipe\n"
    with process.open_pipe(["cat", str(target)], mode="r") as source:
        assert source.read() == b"written through a pipe\n"
    missing = ["cat", str(tmp_path / "no-such-file")]
    with (
        pytest.raises(ExecutorError, match=r"^reading failed \(1\): .*no-such-file"),
        process.open_pipe(missing, mode="r", what="reading") as source,
    ):
        source.read()
    with (
        pytest.raises(ExecutorError, match="cannot run circlet-no-such-tool"),
        process.open_pipe(["circlet-no-such-tool"], mode="r"),
    ):
        pass
