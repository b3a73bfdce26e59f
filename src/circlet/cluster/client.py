"""A runner's HTTP client for the server's fleet API: one ``httpx.Client`` with the
runner token, and calls that retry while the server is away.

Transport errors and 5xx answers (a restarting server, a proxy in front of it)
are retried with backoff until ``retry_for`` seconds have passed; any other
error status is final and raised as :class:`ServerError` with the server's
one-line message.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

DEFAULT_TIMEOUT = 30.0
MAX_BACKOFF = 2.0


class ServerError(Exception):
    """The server answered no; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UnreachableError(Exception):
    """The server did not answer (or only with 5xx) for as long as we were willing to wait."""


def message_of(response: httpx.Response) -> str:
    """The server's one-line explanation of an error response."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or f"HTTP {response.status_code}"
    if isinstance(data, dict):
        for key in ("message", "detail"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return f"HTTP {response.status_code}"


class ApiClient:
    """Talks to ``base_url`` as the runner holding ``token``. Thread-safe."""

    def __init__(self, base_url: str, token: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        )

    def close(self) -> None:
        """Release the connections."""
        self.http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        retry_for: float = 60.0,
        stop: threading.Event | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request, retried on transport errors and 5xx for ``retry_for`` seconds
        (or until ``stop`` is set). Returns a 2xx/3xx response; :class:`ServerError`
        for a 4xx, :class:`UnreachableError` when giving up."""
        deadline = time.monotonic() + retry_for
        delay = 0.05
        while True:
            problem: str
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code < 500:
                    raise ServerError(response.status_code, message_of(response))
                problem = f"HTTP {response.status_code}: {message_of(response)}"
            if time.monotonic() + delay > deadline or (stop is not None and stop.is_set()):
                raise UnreachableError(f"{self.base_url}{path}: {problem}")
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
