"""Pipeline values (``<< pipeline.git.branch >>`` …) and pipeline parameters."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from circlet.config.errors import Problems
from circlet.config.load import YMap
from circlet.config.params import PIPELINE_TYPES, ParamSpec, bind, parse_specs
from circlet.plan import Location

# Every pipeline value a config may name; absent ones read as "".
KNOWN_VALUES: tuple[str, ...] = (
    "pipeline.id",
    "pipeline.number",
    "pipeline.project.git_url",
    "pipeline.project.type",
    "pipeline.project.slug",
    "pipeline.git.tag",
    "pipeline.git.branch",
    "pipeline.git.branch.is_default",
    "pipeline.git.revision",
    "pipeline.git.base_revision",
    "pipeline.git.repo_url",
    "pipeline.git.repo_name",
    "pipeline.git.repo_owner",
    "pipeline.git.repo_id",
    "pipeline.git.commit.subject",
    "pipeline.git.commit.body",
    "pipeline.git.commit.url",
    "pipeline.git.commit.author_login",
    "pipeline.git.commit.author_name",
    "pipeline.git.commit.author_email",
    "pipeline.git.commit.author_avatar_url",
    "pipeline.in_setup",
    "pipeline.trigger_source",
    "pipeline.trigger.id",
    "pipeline.trigger.type",
    "pipeline.schedule.name",
    "pipeline.schedule.id",
    "pipeline.name",
    "pipeline.definition.id",
    "pipeline.integration_source",
    "pipeline.event.name",
    "pipeline.event.action",
    "pipeline.deploy.component_name",
    "pipeline.deploy.environment_name",
)


def pipeline_values(
    *,
    branch: str | None = None,
    tag: str | None = None,
    revision: str | None = None,
    number: int = 1,
    project_url: str = "",
    project_type: str = "local",
    trigger_source: str = "local",
    pipeline_id: str | None = None,
    base_revision: str | None = None,
    schedule_name: str | None = None,
) -> dict[str, Any]:
    """The pipeline values of one run, keyed like ``"pipeline.git.branch"``.

    Unknown ones are "" (CircleCI substitutes an empty string for an absent
    tag or branch); ``pipeline.id`` is a fresh UUID unless given.
    """
    values: dict[str, Any] = dict.fromkeys(KNOWN_VALUES, "")
    values.update(
        {
            "pipeline.id": pipeline_id or str(uuid.uuid4()),
            "pipeline.number": number,
            "pipeline.project.git_url": project_url,
            "pipeline.project.type": project_type,
            "pipeline.git.tag": tag or "",
            "pipeline.git.branch": branch or "",
            "pipeline.git.revision": revision or "",
            "pipeline.git.base_revision": base_revision or "",
            "pipeline.git.repo_url": project_url,
            "pipeline.in_setup": False,
            "pipeline.trigger_source": trigger_source,
            "pipeline.schedule.name": schedule_name or "",
        }
    )
    return values


def complete_values(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """``values`` with every known key present (defaults from :func:`pipeline_values`)."""
    base = pipeline_values()
    if values:
        base.update(values)
    return base


def coerce_cli(spec: ParamSpec, value: Any) -> Any:
    """A parameter value given as text on a command line, turned into the declared type."""
    if not isinstance(value, str):
        return value
    if spec.type == "boolean" and value.lower() in (
        "true",
        "false",
        "yes",
        "no",
        "1",
        "0",
        "on",
        "off",
    ):
        return value.lower() in ("true", "yes", "1", "on")
    if spec.type == "integer":
        try:
            return int(value)
        except ValueError:
            return value
    return value


def pipeline_parameters(
    root: YMap, given: Mapping[str, Any] | None, problems: Problems, filename: str
) -> tuple[dict[str, ParamSpec], dict[str, Any]]:
    """The declared pipeline parameters and their values for this run."""
    specs = parse_specs(
        root.get("parameters"),
        "parameters",
        problems,
        types=PIPELINE_TYPES,
        where=root.key_loc("parameters"),
    )
    args = {k: coerce_cli(specs[k], v) if k in specs else v for k, v in (given or {}).items()}
    where = root.key_loc("parameters") if "parameters" in root else Location(filename, 1, 1)
    values = bind(
        specs,
        args,
        owner="the pipeline",
        problems=problems,
        where=where,
        path="parameters",
    )
    return specs, values
