"""Executors for engine tests of failures above the executor seam: the real host
executor, changed only where a test needs a case the contract allows (no shared
staging directory) or a bug of an executor (``stop`` raising)."""

from __future__ import annotations

from typing import Any

from circlet.executors.host import HostExecutor


class NoSharedStaging:
    """The host executor as a remote Docker engine looks to the engine: no staging
    directory shared with this process (``staging_dir`` None, as the contract allows)."""

    name = "host"

    def __init__(self, inner: HostExecutor) -> None:
        self.inner = inner

    def start(self, job: Any, *, job_key: str, extra_env: Any) -> Any:
        env = self.inner.start(job, job_key=job_key, extra_env=extra_env)
        env.staging_dir = None
        return env


class StopFails(HostExecutor):
    """A host executor whose environments break the contract: ``stop`` raises."""

    def start(self, job: Any, *, job_key: str, extra_env: Any) -> Any:
        env = super().start(job, job_key=job_key, extra_env=extra_env)
        stop = env.stop

        def failing_stop() -> None:
            stop()
            raise RuntimeError("the engine went away while removing the job")

        env.stop = failing_stop  # type: ignore[method-assign]
        return env
