"""The server's settings: one frozen value built from flags and environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from circlet import settings as global_settings


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``create_app`` needs. ``home`` holds the SQLite database, the
    blob store, the secrets key and the clones of git projects."""

    home: Path = field(default_factory=lambda: Path(global_settings.HOME.get()))
    database_url: str = ""  # empty: $CIRCLET_DATABASE_URL, else SQLite under home
    workers: int = 2  # pipelines run at once by the in-process runner pool
    job_parallelism: int = 2  # jobs at once inside one pipeline
    executor: str = "docker"  # "docker" | "host": where jobs of docker executors run
    base_url: str = ""  # public URL, for links in CIRCLE_BUILD_URL; empty: from requests
    secure_cookies: bool = False  # set behind HTTPS
    schedules: bool = True  # run `triggers: schedule` crons
    page_size: int = 25
    queue_prefix: str = "circlet"  # the fleet's Celery queues: <prefix>:<resource class>

    @property
    def url(self) -> str:
        """The records database URL."""
        if self.database_url:
            return self.database_url
        env = global_settings.DATABASE_URL.get()
        return env or f"sqlite:///{self.home / 'circlet.db'}"

    @property
    def key_file(self) -> Path:
        """The Fernet key that encrypts secrets at rest."""
        return self.home / "server-secrets.key"

    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def checkouts_dir(self) -> Path:
        """Where git projects are cloned."""
        return self.home / "server" / "checkouts"

    @property
    def work_dir(self) -> Path:
        """Where host-executor job directories go."""
        return self.home / "server" / "work"


def from_environment(**overrides: object) -> ServerSettings:
    """Settings from ``CIRCLET_*`` variables, then ``overrides`` (flags)."""
    values: dict[str, object] = {}
    if os.environ.get("CIRCLET_SERVER_EXECUTOR"):
        values["executor"] = os.environ["CIRCLET_SERVER_EXECUTOR"]
    if os.environ.get("CIRCLET_SERVER_WORKERS"):
        values["workers"] = int(os.environ["CIRCLET_SERVER_WORKERS"])
    if os.environ.get("CIRCLET_QUEUE_PREFIX"):
        values["queue_prefix"] = os.environ["CIRCLET_QUEUE_PREFIX"]
    if os.environ.get("CIRCLET_SERVER_URL"):
        values["base_url"] = os.environ["CIRCLET_SERVER_URL"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ServerSettings(**values)  # type: ignore[arg-type]
