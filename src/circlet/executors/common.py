"""Small pieces both backends share: names, paths, CA variables."""

from __future__ import annotations

import posixpath
import re

from circlet.executors.base import ExecutorError

# Variables that point HTTPS clients at a CA bundle; set to the ``ca-bundle``
# setting when one is given (behind an intercepting proxy nothing works without).
CA_BUNDLE_VARIABLES = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "CURL_CA_BUNDLE",
)
LABEL_JOB = "circlet.job"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(job_key: str) -> str:
    """``job_key`` as one directory / container name component."""
    name = _UNSAFE.sub("-", job_key).strip("-.")
    if not name:
        raise ExecutorError(f"job key {job_key!r} has no usable characters")
    return name


def expand_path(path: str, *, home: str, working_directory: str) -> str:
    """``~``/``~/x`` → under ``home``; relative → under the (expanded) working directory.

    A relative working directory is taken from ``home``, as CircleCI does.
    """

    def absolute(value: str, base: str) -> str:
        if value == "~":
            return home
        if value.startswith("~/"):
            return posixpath.normpath(posixpath.join(home, value[2:]))
        return posixpath.normpath(posixpath.join(base, value))

    return absolute(path, absolute(working_directory, home))
