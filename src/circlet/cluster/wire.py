"""What crosses a process boundary in the fleet, as JSON: events, job requests,
the resource-class → queue rule, and the per-runner key that seals secrets.

Everything here is plain data in and out; no HTTP, no SQL, no Celery.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from circlet import plan
from circlet.engine import events as ev
from circlet.engine.environ import BuildIdentity
from circlet.engine.runner import JobRequest

# CircleCI's self-hosted runner classes are "namespace/name".
RUNNER_CLASS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_CLASS = "default"  # the queue of jobs without a runner class, when one is used

EVENT_TYPES: dict[str, type[Any]] = {
    "pipeline_started": ev.PipelineStarted,
    "pipeline_finished": ev.PipelineFinished,
    "workflow_started": ev.WorkflowStarted,
    "workflow_finished": ev.WorkflowFinished,
    "job_status": ev.JobStatusChanged,
    "job_started": ev.JobStarted,
    "job_finished": ev.JobFinished,
    "step_started": ev.StepStarted,
    "output": ev.Output,
    "step_finished": ev.StepFinished,
    "tests_recorded": ev.TestsRecorded,
    "artifact_stored": ev.ArtifactStored,
}
_TUPLE_FIELDS = frozenset({"jobs", "cases"})


class WireError(ValueError):
    """A message that is not what the protocol says; one line for the log."""


# ------------------------------------------------------------------ classes


def runner_class(spec: plan.JobSpec) -> str | None:
    """The job's runner class (``org/name``), or None when it runs anywhere."""
    rc = spec.resource_class or (spec.executor.resource_class if spec.executor else None)
    return rc if rc and RUNNER_CLASS.match(rc) else None


def check_class(name: str) -> str:
    """``name`` if it is a runner class or ``default``; ValueError naming it otherwise."""
    if name == DEFAULT_CLASS or RUNNER_CLASS.match(name):
        return name
    raise ValueError(f"{name!r} is not a runner resource class (expected namespace/name)")


def queue_name(prefix: str, resource_class: str) -> str:
    """The Celery queue of a resource class: ``<prefix>:<class>``."""
    return f"{prefix}:{resource_class}"


# ------------------------------------------------------------------- events


def event_to_dict(event: ev.Event) -> dict[str, Any]:
    """An event as JSON-ready data (its ``kind`` says its type)."""
    data: dict[str, Any] = plan.to_dict(event)
    return data


def event_from_dict(data: Mapping[str, Any]) -> ev.Event:
    """Inverse of :func:`event_to_dict`; :class:`WireError` for anything else."""
    kind = data.get("kind") if isinstance(data, Mapping) else None
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WireError(f"unknown event kind {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: (tuple(v) if k in _TUPLE_FIELDS else v) for k, v in data.items() if k in names}
    try:
        event: ev.Event = cls(**values)
    except TypeError as exc:
        raise WireError(f"bad {kind} event: {exc}") from None
    return event


# ----------------------------------------------------------------- requests


def request_to_dict(request: JobRequest, *, repo_bundle: str | None = None) -> dict[str, Any]:
    """A JobRequest without its secrets and host paths (they do not travel this way).

    ``repo_bundle`` is the blob digest of a git pack holding ``commit`` and its
    history, for a checkout on another machine."""
    return {
        "spec": plan.to_dict(request.spec),
        "identity": dataclasses.asdict(request.identity),
        "job_id": request.job_id,
        "commit": request.commit,
        "upstream": list(request.upstream),
        "extra": _jsonable(dict(request.extra)),
        "repo_bundle": repo_bundle,
    }


def request_from_dict(data: Mapping[str, Any], secrets: Mapping[str, str]) -> JobRequest:
    """Rebuild a JobRequest (``repo`` is set by the runner once it has the code)."""
    try:
        return JobRequest(
            spec=plan.job_from_dict(dict(data["spec"])),
            identity=BuildIdentity(**data["identity"]),
            job_id=str(data["job_id"]),
            secrets=dict(secrets),
            commit=data.get("commit"),
            upstream=tuple(data.get("upstream") or ()),
            extra=dict(data.get("extra") or {}),
        )
    except (KeyError, TypeError) as exc:
        raise WireError(f"bad job request: {exc}") from None


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``value`` that survive JSON (the rest are process-local)."""
    kept: dict[str, Any] = {}
    for key, item in value.items():
        try:
            json.dumps(item)
        except (TypeError, ValueError):
            continue
        kept[key] = item
    return kept


# ------------------------------------------------------------------ secrets


def token_key(token: str) -> Fernet:
    """The Fernet key bound to one runner token: both ends derive it, nobody stores it."""
    digest = hashlib.sha256(b"circlet runner secrets v1\0" + token.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal_for_runner(token: str, secrets: Mapping[str, str]) -> str:
    """The secrets, encrypted so only the holder of ``token`` can read them."""
    return token_key(token).encrypt(json.dumps(dict(secrets)).encode()).decode()


def open_for_runner(token: str, sealed: str) -> dict[str, str]:
    """Inverse of :func:`seal_for_runner`; :class:`WireError` if it was not for us."""
    try:
        data = json.loads(token_key(token).decrypt(sealed.encode()))
    except (InvalidToken, ValueError):
        raise WireError("the job's secrets were not sealed for this runner token") from None
    return {str(k): str(v) for k, v in data.items()}
