"""The one place circlet starts local processes, and the one supervisor loop.

:func:`run` starts a command in a new session (so it leads its own process
group), merges stdout and stderr into one pipe, hands every chunk to a
callback as soon as ``os.read`` returns it, and enforces the overall timeout,
the no-output timeout and cancellation with the escalation CircleCI users
expect: SIGINT, then (2 s later) SIGTERM, then (3 s later) SIGKILL, each to
the whole group.

:func:`supervise` is that loop on its own, driving any :class:`Channel`; the
docker backend feeds it a hijacked ``docker exec`` socket so both backends
share one implementation of timeouts and cancellation.

No thread per call: one ``selectors`` loop waits on the output pipe, the
stdin pipe and a pidfd that becomes readable when the process exits. The
pidfd matters: a background grandchild may keep the output pipe open long
after the command itself ended, and the step must end when the command does.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Literal, Protocol

from circlet.executors.base import ExecResult, ExecutorError, OutputCallback

INTERRUPT_GRACE = 2.0  # seconds between SIGINT and SIGTERM
TERMINATE_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
KILL_WAIT = 5.0  # after SIGKILL: how long to wait for the end before giving up
CANCEL_POLL = 0.05  # a threading.Event cannot be selected on; poll it this often
READ_SIZE = 65536

Reason = Literal["timeout", "no_output", "cancel"]
ESCALATION: tuple[tuple[signal.Signals, float], ...] = (
    (signal.SIGINT, INTERRUPT_GRACE),
    (signal.SIGTERM, TERMINATE_GRACE),
    (signal.SIGKILL, KILL_WAIT),
)


class Channel(Protocol):
    """A running command as :func:`supervise` sees it.

    ``out_fd`` delivers the merged output; ``in_fd`` (may equal ``out_fd``)
    takes stdin; ``exit_fd``, when not None, becomes readable once the command
    has exited (a pidfd). Without an ``exit_fd`` the end of output is the end.
    """

    out_fd: int
    in_fd: int | None
    exit_fd: int | None

    def read_output(self) -> bytes | None:
        """Output available now (``b""`` if none yet), None at end of stream."""
        ...

    def write_input(self, data: memoryview) -> int:
        """Write some stdin without blocking; the number of bytes taken."""
        ...

    def close_input(self) -> None:
        """Signal end of stdin."""
        ...

    def send_signal(self, sig: signal.Signals) -> None:
        """Deliver ``sig`` to the command's whole process group; never raises."""
        ...


@dataclass(frozen=True)
class Outcome:
    """Why :func:`supervise` stopped waiting; ``reason`` None means the command ended."""

    reason: Reason | None = None

    def result(self, exit_code: int | None) -> ExecResult:
        """The ExecResult for this outcome (exit code dropped when we killed it)."""
        if self.reason is None:
            return ExecResult(exit_code=exit_code)
        return ExecResult(
            exit_code=None,
            timed_out=self.reason == "timeout",
            no_output_timeout=self.reason == "no_output",
            cancelled=self.reason == "cancel",
        )


def supervise(
    channel: Channel,
    *,
    on_output: OutputCallback,
    stdin: bytes | None = None,
    timeout: float | None = None,
    no_output_timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> Outcome:
    """Pump ``channel`` until it ends, killing it on timeout / no output / cancel."""
    sel = selectors.DefaultSelector()
    pending = memoryview(stdin or b"")
    out_events = selectors.EVENT_READ
    if channel.in_fd is not None:
        if not pending:
            channel.close_input()
        elif channel.in_fd == channel.out_fd:
            out_events |= selectors.EVENT_WRITE
        else:
            sel.register(channel.in_fd, selectors.EVENT_WRITE)
    sel.register(channel.out_fd, out_events)
    if channel.exit_fd is not None:
        sel.register(channel.exit_fd, selectors.EVENT_READ)

    start = time.monotonic()
    deadline = start + timeout if timeout is not None else None
    last_output = start
    reason: Reason | None = None
    stage = -1  # index into ESCALATION once we started killing
    stage_deadline = 0.0
    eof = exited = False
    try:
        while not (eof or exited):
            now = time.monotonic()
            wait: float | None = None
            if reason is None:
                candidates = []
                if deadline is not None:
                    candidates.append(deadline - now)
                if no_output_timeout is not None:
                    candidates.append(last_output + no_output_timeout - now)
                if cancel is not None:
                    candidates.append(CANCEL_POLL)
                wait = min(candidates) if candidates else None
            else:
                wait = stage_deadline - now
            for key, mask in sel.select(None if wait is None else max(wait, 0.0)):
                fd = key.fd
                if fd == channel.exit_fd:
                    exited = True
                    continue
                if mask & selectors.EVENT_WRITE and pending:
                    try:
                        taken = channel.write_input(pending)
                    except OSError:  # the command closed its stdin: drop the rest
                        taken = len(pending)
                    pending = pending[taken:]
                    if not pending:
                        channel.close_input()
                        if fd == channel.out_fd:
                            sel.modify(fd, selectors.EVENT_READ)
                        else:
                            sel.unregister(fd)
                if mask & selectors.EVENT_READ and fd == channel.out_fd:
                    data = channel.read_output()
                    if data is None:
                        eof = True
                    elif data:
                        last_output = time.monotonic()
                        on_output(data)
            now = time.monotonic()
            if reason is None:
                if cancel is not None and cancel.is_set():
                    reason = "cancel"
                elif deadline is not None and now >= deadline:
                    reason = "timeout"
                elif no_output_timeout is not None and now - last_output >= no_output_timeout:
                    reason = "no_output"
                if reason is not None and not (eof or exited):
                    stage = 0
                    channel.send_signal(ESCALATION[0][0])
                    stage_deadline = now + ESCALATION[0][1]
            elif now >= stage_deadline:
                stage += 1
                if stage >= len(ESCALATION):
                    break  # SIGKILL did not end it (a stuck container?): stop waiting
                channel.send_signal(ESCALATION[stage][0])
                stage_deadline = now + ESCALATION[stage][1]
        if exited and not eof:
            # What the command wrote before exiting is in the pipe; a grandchild
            # holding the pipe open must not keep us waiting for more.
            while data := channel.read_output():
                on_output(data)
    finally:
        sel.close()
    if reason is not None:
        # The leader may have exited on SIGINT while the rest of its group lives on.
        channel.send_signal(signal.SIGKILL)
    return Outcome(reason)


class _ProcessChannel:
    """A local child in its own session: pipes plus a pidfd."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.out_fd = proc.stdout.fileno()
        os.set_blocking(self.out_fd, False)
        self.in_fd: int | None = None
        if proc.stdin is not None:
            self.in_fd = proc.stdin.fileno()
            os.set_blocking(self.in_fd, False)
        self.exit_fd: int | None = os.pidfd_open(proc.pid)

    def read_output(self) -> bytes | None:
        try:
            data = os.read(self.out_fd, READ_SIZE)
        except BlockingIOError:
            return b""
        return data or None

    def write_input(self, data: memoryview) -> int:
        assert self.in_fd is not None
        try:
            return os.write(self.in_fd, data)
        except BlockingIOError:
            return 0

    def close_input(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def send_signal(self, sig: signal.Signals) -> None:
        kill_group(self.proc.pid, sig)

    def close(self) -> None:
        self.close_input()
        if self.exit_fd is not None:
            os.close(self.exit_fd)
            self.exit_fd = None
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def kill_group(pgid: int, sig: signal.Signals = signal.SIGKILL) -> bool:
    """Send ``sig`` to process group ``pgid``; False if the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # reused id of a group we do not own: not ours to kill
        return False
    return True


def exit_status(returncode: int) -> int:
    """A Popen returncode as a shell reports it: death by signal N → 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    cwd: str | None,
    on_output: OutputCallback,
    stdin: bytes | None = None,
    timeout: float | None = None,
    no_output_timeout: float | None = None,
    cancel: threading.Event | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ExecResult:
    """Run ``argv`` locally, stream its merged output, enforce timeouts; see module doc.

    ``env`` None inherits this process's environment. ``on_start`` receives the
    new process group id (the caller may kill leftovers of that group later).
    A program or directory that does not exist is reported through
    ``on_output`` with exit code 127 / 126 (as a shell does), not raised.
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except OSError as exc:
        # Exit codes as a shell (and `docker exec`) give them: 127 not found, 126 cannot run.
        if cwd is not None and not os.path.isdir(cwd):
            on_output(f"circlet: cannot run {argv[0]}: no such directory: {cwd}\n".encode())
            return ExecResult(exit_code=126)
        on_output(f"circlet: cannot run {argv[0]}: {exc.strerror}\n".encode())
        return ExecResult(exit_code=127 if isinstance(exc, FileNotFoundError) else 126)
    if on_start is not None:
        on_start(proc.pid)
    channel = _ProcessChannel(proc)
    try:
        outcome = supervise(
            channel,
            on_output=on_output,
            stdin=stdin,
            timeout=timeout,
            no_output_timeout=no_output_timeout,
            cancel=cancel,
        )
        if outcome.reason is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(KILL_WAIT)
        returncode = proc.wait()
    finally:
        channel.close()
    return outcome.result(exit_status(returncode))


def check_output(argv: Sequence[str], *, cwd: str | None = None, what: str = "") -> bytes:
    """Run a helper command to completion; its output, or ExecutorError naming ``what``."""
    chunks: list[bytes] = []
    result = run(argv, env=None, cwd=cwd, on_output=chunks.append)
    output = b"".join(chunks)
    if result.exit_code != 0:
        raise ExecutorError(f"{what or argv[0]} failed ({result.exit_code}): {_tail(output)}")
    return output


@contextlib.contextmanager
def open_pipe(
    argv: Sequence[str], *, mode: Literal["r", "w"], cwd: str | None = None, what: str = ""
) -> Iterator[IO[bytes]]:
    """Stream into (``"w"``) or out of (``"r"``) a helper command such as ``tar``.

    Yields the command's stdin or stdout; on leaving, waits for the command and
    raises ExecutorError (with the end of its stderr) if it failed.
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if mode == "w" else subprocess.DEVNULL,
            stdout=subprocess.PIPE if mode == "r" else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise ExecutorError(f"{what or argv[0]}: cannot run {argv[0]}: {exc.strerror}") from exc
    stream = proc.stdin if mode == "w" else proc.stdout
    assert stream is not None
    assert proc.stderr is not None
    failed = False
    try:
        yield stream
    except BaseException:
        failed = True
        kill_group(proc.pid)
        raise
    finally:
        with contextlib.suppress(OSError):
            stream.close()
        errors = proc.stderr.read()
        proc.stderr.close()
        returncode = proc.wait()
    if returncode != 0 and not failed:
        raise ExecutorError(f"{what or argv[0]} failed ({returncode}): {_tail(errors)}")


def _tail(output: bytes, limit: int = 300) -> str:
    """The last meaningful line(s) of a helper's output, for a one-line error."""
    text = output.decode(errors="replace").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[-limit:]
