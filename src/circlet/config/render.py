"""``circlet config process``: a compiled Pipeline written back as a plain
version 2 config, like ``circleci config process`` prints (every orb,
command, executor, parameter and matrix already expanded)."""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from circlet import plan


def _field_defaults(cls: type[Any]) -> dict[str, Any]:
    return {
        f.name: f.default
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING and f.name != "type"
    }


_STEP_DEFAULTS = {kind: _field_defaults(cls) for kind, cls in plan.STEP_TYPES.items()}


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as ``|`` literals."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def _step(step: plan.Step) -> Any:
    kind = step.type
    defaults = _STEP_DEFAULTS[kind]
    fields = {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in plan.to_dict(step).items()
        if k != "type" and v != defaults.get(k, object()) and v != {}
    }
    if kind == "run":
        step_run: plan.RunStep = step  # type: ignore[assignment]
        fields["name"] = step_run.name
        fields["command"] = step_run.command
        if "no_output_timeout" in fields:
            fields["no_output_timeout"] = f"{int(step_run.no_output_timeout)}s"
    if not fields:
        return kind
    return {kind: fields}


def _executor(spec: plan.ExecutorSpec | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec is None:
        return out
    if spec.kind == "docker":
        images = []
        for image in spec.images:
            entry = {k: v for k, v in plan.to_dict(image).items() if v not in (None, {}, [])}
            images.append(entry)
        out["docker"] = images
    elif spec.kind == "macos":
        out["macos"] = {"xcode": spec.machine_image}
    else:
        out["machine"] = {"image": spec.machine_image} if spec.machine_image else True
    if spec.environment:
        out["environment"] = dict(spec.environment)
    return out


def _job(spec: plan.JobSpec) -> dict[str, Any]:
    out = _executor(spec.executor)
    if spec.resource_class:
        out["resource_class"] = spec.resource_class
    if spec.shell:
        out["shell"] = spec.shell
    if spec.parallelism != 1:
        out["parallelism"] = spec.parallelism
    if spec.working_directory != plan.DEFAULT_WORKING_DIRECTORY:
        out["working_directory"] = spec.working_directory
    if spec.environment:
        out["environment"] = {**out.get("environment", {}), **spec.environment}
    out["steps"] = [_step(s) for s in spec.steps]
    return out


def _filters(filters: plan.Filters) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("branches", "tags"):
        btf: plan.BranchTagFilter | None = getattr(filters, key)
        if btf is None:
            continue
        entry = {k: list(v) for k, v in (("only", btf.only), ("ignore", btf.ignore)) if v}
        out[key] = entry
    return out


def _node(node: plan.JobNode, job_key: str) -> Any:
    args: dict[str, Any] = {}
    if job_key != node.name:
        args["name"] = node.name
    if node.type == "approval":
        args["type"] = "approval"
    if node.requires:
        args["requires"] = [
            r.job if r.statuses == ("success",) else {r.job: list(r.statuses)}
            for r in node.requires
        ]
    if node.contexts:
        args["context"] = list(node.contexts)
    filters = _filters(node.filters)
    if filters:
        args["filters"] = filters
    if node.serial_group:
        args["serial-group"] = node.serial_group
    if node.max_auto_reruns:
        args["max_auto_reruns"] = node.max_auto_reruns
    return {job_key: args} if args else job_key


def processed_config(pipeline: plan.Pipeline) -> dict[str, Any]:
    """The expanded config as plain data (what :func:`render_processed_yaml` dumps)."""
    jobs: dict[str, Any] = {}
    specs: dict[str, plan.JobSpec] = {}
    workflows: dict[str, Any] = {"version": 2}
    for wf in pipeline.workflows:
        entries = []
        for node in wf.jobs:
            if node.type == "approval":
                entries.append(_node(node, node.name))
                continue
            # A job's name cannot hold '/' (an orb job's node name can).
            base = key = node.name.replace("/", "-")
            # The same name may stand for different jobs in two workflows.
            n = 2
            while key in specs and specs[key] != node.job:
                key = f"{base}-{n}"
                n += 1
            if key not in specs:
                specs[key] = node.job
                jobs[key] = _job(node.job) if node.type != "no-op" else {"type": "no-op"}
            entries.append(_node(node, key))
        body: dict[str, Any] = {}
        if not wf.enabled:
            body["when"] = False
        if wf.triggers:
            body["triggers"] = [
                {
                    "schedule": {
                        "cron": t.cron,
                        **({"filters": _filters(t.filters)} if _filters(t.filters) else {}),
                    }
                }
                for t in wf.triggers
            ]
        body["jobs"] = entries
        workflows[wf.name] = body
    out: dict[str, Any] = {"version": 2}
    if pipeline.setup:
        out["setup"] = True
    out["jobs"] = jobs
    out["workflows"] = workflows
    return out


def render_processed_yaml(pipeline: plan.Pipeline) -> str:
    """The expanded config as YAML text, preceded by one comment line per orb."""
    header = "".join(
        f"# Orb '{ref}' resolved to '{ref}'\n"
        if ref != "<inline>"
        else f"# Orb '{alias}' is inline\n"
        for alias, ref in pipeline.orbs.items()
    )
    body = yaml.dump(
        processed_config(pipeline),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=1000,
    )
    return header + body
