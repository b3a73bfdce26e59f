"""The Plan: the contract between the config compiler and the engine.

Plain frozen dataclasses, JSON-serializable with :func:`to_json` and back with
:func:`from_json`. Nothing here knows about YAML, Docker, SQL or HTTP. All
parameters, orbs, commands, executors, matrix entries and ``when`` steps are
already expanded: the engine runs exactly what it finds here.

Mapping fields (``environment`` …) are plain dicts for JSON's sake; treat
them as read-only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

StepWhen = Literal["on_success", "always", "on_fail"]
DEFAULT_SHELL = "/bin/bash -eo pipefail"
DEFAULT_WORKING_DIRECTORY = "~/project"
DEFAULT_NO_OUTPUT_TIMEOUT = 600.0  # seconds: CircleCI's 10m


@dataclass(frozen=True)
class Location:
    """Where a value came from: ``file:line:col`` (1-based)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


# --------------------------------------------------------------------- steps


@dataclass(frozen=True)
class RunStep:
    """``run``: a shell command. ``shell`` None means the job's (or the default) shell."""

    name: str
    command: str
    shell: str | None = None
    working_directory: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    background: bool = False
    no_output_timeout: float = DEFAULT_NO_OUTPUT_TIMEOUT
    max_auto_reruns: int = 0
    when: StepWhen = "on_success"
    type: Literal["run"] = "run"


@dataclass(frozen=True)
class CheckoutStep:
    name: str = "Checkout code"
    path: str | None = None
    method: Literal["full", "blobless"] = "full"
    when: StepWhen = "on_success"
    type: Literal["checkout"] = "checkout"


@dataclass(frozen=True)
class SaveCacheStep:
    key: str  # template: {{ .Branch }}, {{ checksum "f" }}, … rendered by the engine
    paths: tuple[str, ...]
    name: str = "Saving cache"
    when: StepWhen = "on_success"
    type: Literal["save_cache"] = "save_cache"


@dataclass(frozen=True)
class RestoreCacheStep:
    keys: tuple[str, ...]  # templates, tried in order, each a prefix match, newest first
    name: str = "Restoring cache"
    when: StepWhen = "on_success"
    type: Literal["restore_cache"] = "restore_cache"


@dataclass(frozen=True)
class PersistToWorkspaceStep:
    root: str
    paths: tuple[str, ...]
    name: str = "Persisting to workspace"
    when: StepWhen = "on_success"
    type: Literal["persist_to_workspace"] = "persist_to_workspace"


@dataclass(frozen=True)
class AttachWorkspaceStep:
    at: str
    name: str = "Attaching workspace"
    when: StepWhen = "on_success"
    type: Literal["attach_workspace"] = "attach_workspace"


@dataclass(frozen=True)
class StoreArtifactsStep:
    path: str
    destination: str | None = None
    name: str = "Uploading artifacts"
    when: StepWhen = "on_success"
    type: Literal["store_artifacts"] = "store_artifacts"


@dataclass(frozen=True)
class StoreTestResultsStep:
    path: str
    name: str = "Uploading test results"
    when: StepWhen = "on_success"
    type: Literal["store_test_results"] = "store_test_results"


@dataclass(frozen=True)
class AddSshKeysStep:
    fingerprints: tuple[str, ...] = ()
    name: str = "Install additional SSH keys"
    when: StepWhen = "on_success"
    type: Literal["add_ssh_keys"] = "add_ssh_keys"


@dataclass(frozen=True)
class SetupRemoteDockerStep:
    version: str | None = None
    docker_layer_caching: bool = False
    name: str = "Setup a remote Docker engine"
    when: StepWhen = "on_success"
    type: Literal["setup_remote_docker"] = "setup_remote_docker"


Step: TypeAlias = (
    RunStep
    | CheckoutStep
    | SaveCacheStep
    | RestoreCacheStep
    | PersistToWorkspaceStep
    | AttachWorkspaceStep
    | StoreArtifactsStep
    | StoreTestResultsStep
    | AddSshKeysStep
    | SetupRemoteDockerStep
)

STEP_TYPES: dict[str, type[Any]] = {
    "run": RunStep,
    "checkout": CheckoutStep,
    "save_cache": SaveCacheStep,
    "restore_cache": RestoreCacheStep,
    "persist_to_workspace": PersistToWorkspaceStep,
    "attach_workspace": AttachWorkspaceStep,
    "store_artifacts": StoreArtifactsStep,
    "store_test_results": StoreTestResultsStep,
    "add_ssh_keys": AddSshKeysStep,
    "setup_remote_docker": SetupRemoteDockerStep,
}


# ----------------------------------------------------------------- executors


@dataclass(frozen=True)
class DockerImage:
    """One container of a docker executor: the first is the primary, the rest services."""

    image: str
    name: str | None = None
    entrypoint: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None
    user: str | None = None
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutorSpec:
    """Where a job runs. ``kind`` is CircleCI's executor type."""

    kind: Literal["docker", "machine", "macos", "windows"]
    images: tuple[DockerImage, ...] = ()  # docker only; images[0] is primary
    machine_image: str | None = None  # machine/macos (xcode)/windows image
    resource_class: str | None = None
    shell: str | None = None
    working_directory: str | None = None
    environment: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class JobSpec:
    """A job as it will run: fully expanded, nothing left to substitute."""

    name: str  # the job definition's name (e.g. "test" or "python/test")
    executor: ExecutorSpec | None  # None only for approval and no-op jobs
    steps: tuple[Step, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    parallelism: int = 1
    working_directory: str = DEFAULT_WORKING_DIRECTORY
    shell: str | None = None
    resource_class: str | None = None
    location: Location | None = None


@dataclass(frozen=True)
class BranchTagFilter:
    """``only``/``ignore`` lists; a value ``/re/`` is a regex matching the whole name."""

    only: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class Filters:
    branches: BranchTagFilter | None = None
    tags: BranchTagFilter | None = None


@dataclass(frozen=True)
class Requirement:
    """``requires`` entry: the upstream job's name and the statuses that satisfy it."""

    job: str
    statuses: tuple[str, ...] = ("success",)


@dataclass(frozen=True)
class JobNode:
    """A job's place in a workflow. ``name`` is unique in the workflow."""

    name: str
    job: JobSpec
    requires: tuple[Requirement, ...] = ()
    type: Literal["build", "approval", "no-op"] = "build"  # no-op: nothing to run, succeeds
    contexts: tuple[str, ...] = ()
    filters: Filters = field(default_factory=Filters)
    matrix: dict[str, Any] = field(default_factory=dict)  # the matrix values of this copy
    serial_group: str | None = None
    max_auto_reruns: int = 0
    location: Location | None = None


@dataclass(frozen=True)
class ScheduleTrigger:
    cron: str
    filters: Filters = field(default_factory=Filters)


@dataclass(frozen=True)
class Workflow:
    name: str
    jobs: tuple[JobNode, ...]  # in a deterministic topological order
    enabled: bool = True  # result of the workflow's when/unless for these pipeline values
    triggers: tuple[ScheduleTrigger, ...] = ()
    location: Location | None = None


@dataclass(frozen=True)
class Pipeline:
    """A compiled config for one set of pipeline values."""

    version: str
    workflows: tuple[Workflow, ...]
    setup: bool = False
    pipeline_values: dict[str, Any] = field(default_factory=dict)  # "pipeline.git.branch" → …
    parameters: dict[str, Any] = field(default_factory=dict)  # pipeline parameters, resolved
    orbs: dict[str, str] = field(default_factory=dict)  # alias → "ns/name@version" or "<inline>"
    source: str | None = None


# --------------------------------------------------------------- (de)serialize


def to_dict(value: Any) -> Any:
    """A Plan value as JSON-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [to_dict(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_dict(v) for k, v in value.items()}
    return value


def to_json(value: Any, *, indent: int | None = 2) -> str:
    """Serialize a Plan (or any part of it) to JSON text with stable key order."""
    return json.dumps(to_dict(value), indent=indent, sort_keys=False)


def _build(cls: type[Any], data: Any) -> Any:
    return cls(**data)


def step_from_dict(data: dict[str, Any]) -> Step:
    cls = STEP_TYPES[data["type"]]
    kwargs = dict(data)
    for key in ("paths", "keys", "fingerprints"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    return _build(cls, kwargs)  # type: ignore[no-any-return]


def _filters(data: dict[str, Any] | None) -> Filters:
    if not data:
        return Filters()

    def btf(d: dict[str, Any] | None) -> BranchTagFilter | None:
        if d is None:
            return None
        return BranchTagFilter(only=tuple(d["only"]), ignore=tuple(d["ignore"]))

    return Filters(branches=btf(data.get("branches")), tags=btf(data.get("tags")))


def _location(data: dict[str, Any] | None) -> Location | None:
    return Location(**data) if data else None


def _executor(data: dict[str, Any] | None) -> ExecutorSpec | None:
    if data is None:
        return None
    images = tuple(
        DockerImage(
            **{
                **img,
                "entrypoint": tuple(img["entrypoint"]) if img.get("entrypoint") else None,
                "command": tuple(img["command"]) if img.get("command") else None,
            }
        )
        for img in data["images"]
    )
    return ExecutorSpec(**{**data, "images": images})


def job_from_dict(data: dict[str, Any]) -> JobSpec:
    return JobSpec(
        **{
            **data,
            "executor": _executor(data["executor"]),
            "steps": tuple(step_from_dict(s) for s in data["steps"]),
            "location": _location(data.get("location")),
        }
    )


def pipeline_from_dict(data: dict[str, Any]) -> Pipeline:
    """Inverse of :func:`to_dict` for a whole Pipeline."""
    workflows = []
    for wf in data["workflows"]:
        nodes = tuple(
            JobNode(
                **{
                    **n,
                    "job": job_from_dict(n["job"]),
                    "requires": tuple(
                        Requirement(r["job"], tuple(r["statuses"])) for r in n["requires"]
                    ),
                    "contexts": tuple(n["contexts"]),
                    "filters": _filters(n["filters"]),
                    "location": _location(n.get("location")),
                }
            )
            for n in wf["jobs"]
        )
        triggers = tuple(ScheduleTrigger(t["cron"], _filters(t["filters"])) for t in wf["triggers"])
        workflows.append(
            Workflow(
                name=wf["name"],
                jobs=nodes,
                enabled=wf["enabled"],
                triggers=triggers,
                location=_location(wf.get("location")),
            )
        )
    return Pipeline(**{**data, "workflows": tuple(workflows)})


def from_json(text: str) -> Pipeline:
    return pipeline_from_dict(json.loads(text))
