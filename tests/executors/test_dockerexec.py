"""The hijacked docker exec stream: frame parsing over a real socket pair."""

from __future__ import annotations

import signal
import socket

import pytest

from circlet.executors.base import ExecutorError
from circlet.executors.dockerexec import DockerSocket, ExecStream


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def drain(stream: ExecStream) -> tuple[bytes, bool]:
    """Everything readable now, and whether the end was seen."""
    out = b""
    while True:
        data = stream.read_output()
        if data is None:
            return out, True
        if not data:
            return out, False
        out += data


def test_frames_split_anywhere_are_reassembled() -> None:
    ours, theirs = socket.socketpair()
    head = frame(2, b"4242\n") + frame(1, b"hello ") + frame(2, b"world\n")
    stream = ExecStream(ours, head[:3], stdin=False)  # bytes read with the HTTP head
    try:
        for i in range(3, len(head)):  # one byte at a time
            theirs.send(head[i : i + 1])
        theirs.shutdown(socket.SHUT_WR)
        out = b""
        ended = False
        while not ended:
            chunk, ended = drain(stream)
            out += chunk
        assert out == b"hello world\n"
        assert stream.pid == 4242
    finally:
        stream.close()
        theirs.close()


def test_the_pid_line_may_share_a_frame_with_output() -> None:
    ours, theirs = socket.socketpair()
    stream = ExecStream(ours, frame(2, b"17\nerr early\n") + frame(1, b"out\n"), stdin=False)
    theirs.close()
    try:
        out, ended = drain(stream)
        assert (out, ended, stream.pid) == (b"err early\nout\n", True, 17)
    finally:
        stream.close()


def test_stdin_is_written_and_half_closed() -> None:
    ours, theirs = socket.socketpair()
    signals: list[tuple[int, signal.Signals]] = []
    stream = ExecStream(
        ours, b"", stdin=True, signal_group=lambda pgid, sig: signals.append((pgid, sig))
    )
    try:
        assert stream.in_fd == stream.out_fd
        sent = stream.write_input(memoryview(b"input"))
        stream.close_input()
        assert theirs.recv(100) == b"input"[:sent]
        assert theirs.recv(100) == b""  # end of stdin
        theirs.send(frame(2, b"99\n"))
        drain(stream)
        stream.send_signal(signal.SIGINT)
        assert signals == [(99, signal.SIGINT)]
    finally:
        stream.close()
        theirs.close()


def test_only_unix_and_plain_tcp_engines() -> None:
    assert DockerSocket("unix:///var/run/docker.sock").address == "/var/run/docker.sock"
    assert DockerSocket("tcp://10.0.0.1:2376").address == ("10.0.0.1", 2376)
    with pytest.raises(ExecutorError, match="only unix:// and plain tcp://"):
        DockerSocket("ssh://me@host")
    with pytest.raises(ExecutorError, match="cannot reach the Docker engine"):
        DockerSocket("unix:///nonexistent/docker.sock").connect()


def test_a_signal_before_the_pid_is_known_is_delivered_when_it_is() -> None:
    ours, theirs = socket.socketpair()
    signals: list[tuple[int, signal.Signals]] = []
    stream = ExecStream(
        ours, b"", stdin=False, signal_group=lambda pgid, sig: signals.append((pgid, sig))
    )
    try:
        stream.send_signal(signal.SIGTERM)
        assert signals == []
        theirs.send(frame(2, b"5"))
        drain(stream)
        assert signals == []  # the line is not complete yet
        theirs.send(frame(2, b"1\n"))
        drain(stream)
        assert signals == [(51, signal.SIGTERM)]
    finally:
        stream.close()
        theirs.close()
