"""The API's shapes: CircleCI API v2 field names, so CircleCI clients work.

Only the schema layer of the API (Prefect style): the model layer
(``api.convert``) fills these from records, the routes (``api.routes``) only
translate HTTP to calls and back.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    """Every error, and the 202 answers: ``{"message": "..."}``."""

    message: str


class TriggerPipelineBody(BaseModel):
    """``POST /project/{slug}/pipeline``: branch and tag are exclusive."""

    model_config = ConfigDict(extra="ignore")

    branch: str | None = Field(None, max_length=255)
    tag: str | None = Field(None, max_length=255)
    parameters: dict[str, str | int | bool] = Field(default_factory=dict)


class PipelineCreation(BaseModel):
    id: str
    state: Literal["created", "errored", "setup-pending", "setup", "pending"]
    number: int
    created_at: str


class Actor(BaseModel):
    login: str
    avatar_url: str | None = None


class Trigger(BaseModel):
    type: Literal["scheduled_pipeline", "explicit", "api", "webhook", "schedule"]
    received_at: str
    actor: Actor


class Commit(BaseModel):
    subject: str | None = None
    body: str | None = None


class Vcs(BaseModel):
    provider_name: str
    target_repository_url: str
    origin_repository_url: str
    branch: str | None = None
    tag: str | None = None
    revision: str | None = None
    review_id: str | None = None
    review_url: str | None = None
    commit: Commit | None = None


class PipelineError(BaseModel):
    type: str
    message: str


class PipelineOut(BaseModel):
    id: str
    errors: list[PipelineError]
    project_slug: str
    updated_at: str | None = None
    number: int
    trigger_parameters: dict[str, Any] = Field(default_factory=dict)
    state: Literal["created", "errored", "setup-pending", "setup", "pending"]
    created_at: str
    trigger: Trigger
    vcs: Vcs | None = None


class PipelineList(BaseModel):
    items: list[PipelineOut]
    next_page_token: str | None = None


WorkflowStatusOut = Literal[
    "success",
    "running",
    "not_run",
    "failed",
    "error",
    "failing",
    "on_hold",
    "canceled",
    "unauthorized",
]


class WorkflowOut(BaseModel):
    pipeline_id: str
    canceled_by: str | None = None
    id: str
    name: str
    project_slug: str
    errored_by: str | None = None
    tag: str | None = None
    status: WorkflowStatusOut
    started_by: str | None = None
    pipeline_number: int
    created_at: str
    stopped_at: str | None = None


class WorkflowList(BaseModel):
    items: list[WorkflowOut]
    next_page_token: str | None = None


class WorkflowJob(BaseModel):
    canceled_by: str | None = None
    dependencies: list[str]
    job_number: int | None = None
    id: str
    started_at: str | None = None
    name: str
    approved_by: str | None = None
    project_slug: str
    status: str
    type: Literal["build", "approval"]
    stopped_at: str | None = None
    approval_request_id: str | None = None


class WorkflowJobList(BaseModel):
    items: list[WorkflowJob]
    next_page_token: str | None = None


class ProjectRef(BaseModel):
    id: str
    slug: str
    name: str
    external_url: str


class ParallelRun(BaseModel):
    index: int
    status: str


class WorkflowRef(BaseModel):
    id: str
    name: str


class ExecutorRef(BaseModel):
    resource_class: str
    type: str | None = None


class PipelineRef(BaseModel):
    id: str


class ContextRef(BaseModel):
    name: str


class OrganizationRef(BaseModel):
    name: str


class JobMessage(BaseModel):
    type: str
    message: str
    reason: str | None = None


class JobDetails(BaseModel):
    web_url: str
    project: ProjectRef
    parallel_runs: list[ParallelRun]
    started_at: str | None = None
    latest_workflow: WorkflowRef
    name: str
    executor: ExecutorRef
    parallelism: int
    status: str
    number: int
    pipeline: PipelineRef
    duration: int | None = None  # milliseconds
    created_at: str
    messages: list[JobMessage]
    contexts: list[ContextRef]
    organization: OrganizationRef
    queued_at: str
    stopped_at: str | None = None


class ArtifactOut(BaseModel):
    path: str
    node_index: int
    url: str


class ArtifactList(BaseModel):
    items: list[ArtifactOut]
    next_page_token: str | None = None


class TestOut(BaseModel):
    __test__ = False  # not a pytest class

    message: str
    source: str
    run_time: float
    file: str | None = None
    result: str
    name: str
    classname: str


class TestList(BaseModel):
    __test__ = False

    items: list[TestOut]
    next_page_token: str | None = None


class RerunBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    enable_ssh: bool = False
    from_failed: bool = False
    jobs: list[str] = Field(default_factory=list, max_length=500)
    sparse_tree: bool = False
    # A circlet addition (CircleCI's API has no field for it; its web app's "Rerun
    # failed tests"): rerun from failed, the failed jobs running only their failed tests.
    failed_tests: bool = False


class RerunOut(BaseModel):
    workflow_id: str


class UserOut(BaseModel):
    id: str
    login: str
    name: str


class ProjectOut(BaseModel):
    slug: str
    name: str
    id: str
    organization_name: str
    organization_slug: str
    organization_id: str
    vcs_info: dict[str, str]
