"""``docker exec`` as a :class:`~circlet.executors.process.Channel`.

docker-py's ``exec_start(socket=True)`` hands back the socket *after*
http.client has buffered it, so the first bytes of fast output can be lost,
and its streaming iterator cannot be waited on together with a deadline. So
the hijacked connection is opened here: one HTTP request on a plain socket,
the ``101 UPGRADED`` header parsed by hand, and then the multiplexed stream
(8-byte frame headers: stream id, size) parsed as it arrives.

Every command runs under a tiny wrapper that prints its own pid on stderr
and ``exec``s the command with stderr merged into stdout (so their order
survives). A ``docker exec`` process leads its own session,
so that pid is the process group to signal for interrupt / terminate / kill,
which happens inside the container (``kill -INT -PGID`` in a second exec).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import urllib.parse
from collections.abc import Callable
from typing import Final

from circlet.executors.base import ExecutorError

# ``$$`` of a `docker exec` is its session and process group id; the command
# replaces the shell, so the group is the command's. The engine copies stdout
# and stderr separately, which loses their order: merge them at the source.
WRAPPER: Final = ("sh", "-c", 'echo "$$" >&2; exec "$@" 2>&1', "sh")
_HEADER_LIMIT = 65536


class DockerSocket:
    """How to reach the engine's API with a raw socket (unix or plain tcp)."""

    def __init__(self, docker_host: str) -> None:
        """``docker_host`` as in DOCKER_HOST: ``unix:///path`` or ``tcp://host:port``."""
        url = urllib.parse.urlsplit(docker_host)
        self.docker_host = docker_host
        if url.scheme in ("unix", "http+unix"):
            self.family = socket.AF_UNIX
            self.address: str | tuple[str, int] = url.path
        elif url.scheme in ("tcp", "http"):
            self.family = socket.AF_INET
            self.address = (url.hostname or "localhost", url.port or 2375)
        else:
            raise ExecutorError(
                f"DOCKER_HOST {docker_host}: only unix:// and plain tcp:// engines are supported"
            )

    def connect(self) -> socket.socket:
        """A connected socket to the engine."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.connect(self.address)
        except OSError as exc:
            sock.close()
            raise ExecutorError(
                f"cannot reach the Docker engine at {self.docker_host}: {exc}"
            ) from exc
        return sock

    def start_exec(
        self,
        api_version: str,
        exec_id: str,
        *,
        stdin: bool,
        signal_group: Callable[[int, signal.Signals], None] | None = None,
    ) -> ExecStream:
        """Start exec ``exec_id`` attached; the stream of its output (and stdin).

        ``signal_group(pgid, sig)`` delivers signals inside the container.
        """
        body = json.dumps({"Detach": False, "Tty": False}).encode()
        request = (
            f"POST /v{api_version}/exec/{exec_id}/start HTTP/1.1\r\n"
            "Host: docker\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: Upgrade\r\n"
            "Upgrade: tcp\r\n\r\n"
        ).encode() + body
        sock = self.connect()
        try:
            sock.sendall(request)
            rest = _read_upgrade(sock)
        except BaseException:
            sock.close()
            raise
        return ExecStream(sock, rest, stdin=stdin, signal_group=signal_group)


class ExecStream:
    """The attached stream of one exec: output frames in, stdin out, signals via the engine.

    Implements the :class:`~circlet.executors.process.Channel` protocol.
    """

    def __init__(
        self,
        sock: socket.socket,
        initial: bytes,
        *,
        stdin: bool,
        signal_group: Callable[[int, signal.Signals], None] | None = None,
    ) -> None:
        self.sock = sock
        self._signal_group = signal_group
        sock.setblocking(False)
        self.out_fd = sock.fileno()
        self.in_fd: int | None = self.out_fd if stdin else None
        self.exit_fd: int | None = None
        self.pid: int | None = None  # the wrapper's pid (= process group) once seen
        self._pending = bytearray(initial)
        self._frame_left = 0  # payload bytes still due for the current frame
        self._frame_stream = 1
        self._pid_line = bytearray()
        self._eof = False
        self._early_signal: signal.Signals | None = None

    def read_output(self) -> bytes | None:
        """Payload bytes available now (``b""`` if none), None at end of stream."""
        if not self._eof:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data is not None:
                if data:
                    self._pending += data
                else:
                    self._eof = True
        out = self._parse()
        if self._eof and not out:
            return None
        return out

    def _parse(self) -> bytes:
        out = bytearray()
        buf = self._pending
        pos = 0
        while pos < len(buf):
            if self._frame_left == 0:
                if len(buf) - pos < 8:
                    break
                self._frame_stream = buf[pos]
                self._frame_left = int.from_bytes(buf[pos + 4 : pos + 8], "big")
                pos += 8
                continue
            take = min(self._frame_left, len(buf) - pos)
            chunk = bytes(buf[pos : pos + take])
            pos += take
            self._frame_left -= take
            if self._frame_stream == 2 and self.pid is None:
                chunk = self._take_pid(chunk)
            out += chunk
        del buf[:pos]
        return bytes(out)

    def _take_pid(self, chunk: bytes) -> bytes:
        """The wrapper's first stderr line is its pid; the rest is the command's."""
        line, newline, rest = chunk.partition(b"\n")
        self._pid_line += line
        if not newline:
            return b""
        text = self._pid_line.decode(errors="replace").strip()
        self.pid = int(text) if text.isdigit() else 0
        if self._early_signal is not None:  # asked to signal before we knew whom
            self.send_signal(self._early_signal)
        return rest

    def write_input(self, data: memoryview) -> int:
        """Send some stdin without blocking."""
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0

    def close_input(self) -> None:
        """Half-close: the engine then closes the command's stdin."""
        if self.in_fd is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            self.in_fd = None

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the command's group (as soon as the wrapper has told us its pid)."""
        if self.pid is None:
            self._early_signal = sig
        elif self.pid and self._signal_group is not None:
            self._signal_group(self.pid, sig)

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


def _read_upgrade(sock: socket.socket) -> bytes:
    """Check the engine switched to the raw stream; the stream bytes already read."""
    head, rest = _read_head(sock)
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split(" ", 2)
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if code not in (101, 200):
        message = _error_body(sock, head, rest)
        raise ExecutorError(f"docker exec failed: {status_line}: {message}")
    return rest


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read up to the end of the HTTP response head; (head, bytes after it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(4096)
        if not data:
            raise ExecutorError("docker exec: the engine closed the connection")
        buf += data
        if len(buf) > _HEADER_LIMIT:
            raise ExecutorError("docker exec: malformed answer from the engine")
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _error_body(sock: socket.socket, head: bytes, rest: bytes) -> str:
    """The engine's error message (JSON ``message``) of a failed start."""
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    body = rest
    sock.settimeout(1.0)
    try:
        while (length is None or len(body) < length) and len(body) < _HEADER_LIMIT:
            data = sock.recv(4096)
            if not data:
                break
            body += data
    except OSError:
        pass
    text = body.decode(errors="replace").strip()
    try:
        message = json.loads(text).get("message", text) if text else "no details"
    except (ValueError, AttributeError):
        message = text
    return str(message)[:300]
