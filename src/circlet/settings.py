"""Settings, each defined once: name, environment variable, default, help.

The CLI turns every setting into a flag of the same name (``--ca-bundle``);
flags win over environment variables, which win over ``.circlet.yml`` in the
project, which wins over the default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: str
    help: str

    def get(self) -> str:
        """The value from the environment, else the default (``~`` expanded)."""
        value = os.environ.get(self.env, self.default)
        return os.path.expanduser(value) if value.startswith("~") else value


HOME = Setting(
    "home",
    "CIRCLET_HOME",
    "~/.local/share/circlet",
    "Where circlet keeps its records (SQLite) and blob store.",
)
CA_BUNDLE = Setting(
    "ca-bundle",
    "CIRCLET_CA_BUNDLE",
    "",
    "A PEM CA bundle mounted into every container and trusted there "
    "(for intercepting proxies); empty: none.",
)
ORB_DIR = Setting(
    "orb-dir",
    "CIRCLET_ORB_DIR",
    "~/.circlet/orbs",
    "A folder of local orbs: NS/NAME/orb.yml, NS/NAME@VERSION/orb.yml or orb-tools src/ layouts.",
)
ORB_NETWORK = Setting(
    "orb-network",
    "CIRCLET_ORB_NETWORK",
    "0",
    "1: fetch orbs that are not local, bundled or cached from CircleCI's registry.",
)
DATABASE_URL = Setting(
    "database-url",
    "CIRCLET_DATABASE_URL",
    "",
    "SQLAlchemy URL of the records database; empty: SQLite under the circlet home.",
)
IMAGE_MAP = Setting(
    "image",
    "CIRCLET_IMAGE_MAP",
    "",
    "Image substitutions, comma-separated FROM=TO "
    "(e.g. cimg/python:3.12.0=circlet/cimg-python:3.11).",
)

SSH_KEYS_DIR = Setting(
    "ssh-keys-dir",
    "CIRCLET_SSH_KEYS_DIR",
    "",
    "A folder of private SSH keys for add_ssh_keys: one file per key, named by its "
    "fingerprint (or with its .pub beside it); empty: <circlet home>/ssh-keys.",
)

BROKER_URL = Setting(
    "broker-url",
    "CIRCLET_BROKER_URL",
    "",
    "Celery broker of the runner fleet (redis://… or amqp://…); empty: no fleet, "
    "every job runs in the server's own pool.",
)

CACHE_COW = Setting(
    "cache-cow",
    "CIRCLET_CACHE_COW",
    "auto",
    "auto: restore caches and workspaces into host jobs as copy-on-write overlay mounts "
    "of a copy kept by the store (needs root and overlayfs); off: always extract.",
)


def home_dir() -> Path:
    """The circlet home directory, created if missing."""
    path = Path(HOME.get())
    path.mkdir(parents=True, exist_ok=True)
    return path


def parse_image_map(text: str) -> dict[str, str]:
    """``a=b,c=d`` → {"a": "b", "c": "d"}; blanks ignored."""
    result: dict[str, str] = {}
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        source, sep, target = part.partition("=")
        if not sep or not source or not target:
            raise ValueError(f"image mapping {part!r} is not FROM=TO")
        result[source.strip()] = target.strip()
    return result
