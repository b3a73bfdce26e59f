"""``persist_to_workspace`` and ``attach_workspace``: a workflow's shared files.

As on CircleCI the workspace is a stack of immutable layers: each persist step
of each job copy adds one tree to the namespace ``workspace/<workflow_id>``
under the key ``<job>/<node index>/<step index>``, and ``attach_workspace``
applies the layers of the node's upstream jobs in workflow order, so a later
layer wins where two hold the same path.

A rerun workflow (from failed, or some jobs) does not run every job: its
request's extra :data:`INHERITED_WORKSPACE` names, for each upstream job it
does not rerun, the workflow whose workspace holds that job's layers (as on
CircleCI, the original workflow's layers are attached for those jobs).
"""

from __future__ import annotations

import posixpath

from circlet.engine.steps import register
from circlet.engine.steps.base import StepContext, StepOutcome
from circlet.engine.steps.transfer import (
    discard,
    glob_inside,
    has_glob,
    ibytes,
    relative_inside,
    scratch,
)
from circlet.plan import AttachWorkspaceStep, PersistToWorkspaceStep, Step
from circlet.store.api import TreeEntry

# StepContext.extra key: {"upstream": [job names in the original workflow's order],
# "sources": {job name: workflow id holding its layers}} (run_options.workspace_extra).
INHERITED_WORKSPACE = "inherited_workspace"


def namespace(workflow_id: str) -> str:
    """The blob-store namespace of one workflow's workspace."""
    return f"workspace/{workflow_id}"


def layer_key(job_name: str, node_index: int, step_index: int) -> str:
    """The key of one persisted layer."""
    return f"{job_name}/{node_index}/{step_index}"


def parse_layer_key(key: str) -> tuple[str, int, int] | None:
    """Inverse of :func:`layer_key` (job names may contain ``/``)."""
    parts = key.rsplit("/", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


@register("persist_to_workspace")
def persist_to_workspace(step: Step, ctx: StepContext) -> StepOutcome:
    """Copy ``root``/``paths`` (globs allowed) out of the job into a new layer."""
    assert isinstance(step, PersistToWorkspaceStep)
    root = ctx.environment.expand(step.root)
    ctx.write("Creating workspace archive...\n")
    wanted: list[str] = []
    patterns = [p for p in step.paths if has_glob(p)]
    for path in step.paths:
        if has_glob(path):
            continue
        rel = relative_inside(path, root)
        if rel is None:
            reason = f"The path {path} is not inside the workspace root {root}"
            ctx.write(reason + "\n")
            return StepOutcome("failed", 1, reason)
        wanted.append(rel)
    if patterns:
        matched = glob_inside(ctx, root, patterns)
        wanted.extend(matched or [])
    layer = scratch(ctx, "workspace")
    try:
        copied = [
            rel
            for rel in dict.fromkeys(wanted)
            if ctx.environment.copy_out(
                posixpath.normpath(posixpath.join(root, rel)),
                layer if rel == "." else layer / rel,
            )
        ]
        if not copied:
            reason = f"The specified paths did not match any files in {root}"
            ctx.write(reason + "\n")
            return StepOutcome("failed", 1, reason)
        ctx.write("\nUploading workspace archive...\n")
        key = layer_key(ctx.job_name, ctx.node_index, ctx.index)
        meta = {
            "job": ctx.job_name,
            "job_id": ctx.job_id,
            "node_index": ctx.node_index,
            "build_num": ctx.build_num,
            "root": root,
            "paths": copied,
        }
        entry = ctx.blobs.put_tree(namespace(ctx.workflow_id), key, layer, meta=meta)
    finally:
        discard(layer)
    ctx.write(f"Total size uploaded: {ibytes(entry.size)}\n")
    ctx.write("Workspace archive uploaded successfully.\n")
    return StepOutcome("success")


def upstream_layers(ctx: StepContext) -> list[tuple[str, TreeEntry]]:
    """(job name, layer) of every upstream job, in the order they are applied."""
    return [(job, entry) for job, _, entry in sourced_layers(ctx)]


def sourced_layers(ctx: StepContext) -> list[tuple[str, str, TreeEntry]]:
    """(job name, workflow id, layer) of every upstream job, in the order applied.

    A job that ran in this workflow gives its layers from here; an upstream job a
    rerun did not run gives them from the workflow named in the inherited sources."""
    inherited = ctx.extra.get(INHERITED_WORKSPACE) or {}
    sources: dict[str, str] = dict(inherited.get("sources") or {})
    here = set(ctx.upstream)
    order = list(dict.fromkeys([*inherited.get("upstream", []), *ctx.upstream]))
    by_workflow: dict[str, dict[str, list[tuple[int, int, TreeEntry]]]] = {}
    ordered: list[tuple[str, str, TreeEntry]] = []
    for job in order:
        workflow_id = ctx.workflow_id if job in here else sources.get(job)
        if workflow_id is None:
            continue
        if workflow_id not in by_workflow:
            by_workflow[workflow_id] = _layers_by_job(ctx, workflow_id)
        found = sorted(by_workflow[workflow_id].get(job, []), key=lambda t: (t[0], t[1]))
        ordered.extend((job, workflow_id, entry) for _, _, entry in found)
    return ordered


def _layers_by_job(
    ctx: StepContext, workflow_id: str
) -> dict[str, list[tuple[int, int, TreeEntry]]]:
    by_job: dict[str, list[tuple[int, int, TreeEntry]]] = {}
    for entry in ctx.blobs.list_trees(namespace(workflow_id)):
        parsed = parse_layer_key(entry.key)
        if parsed is not None:
            job, node, index = parsed
            by_job.setdefault(job, []).append((node, index, entry))
    return by_job


@register("attach_workspace")
def attach_workspace(step: Step, ctx: StepContext) -> StepOutcome:
    """Apply the upstream jobs' layers at ``at``, in workflow order (later wins)."""
    assert isinstance(step, AttachWorkspaceStep)
    at = ctx.environment.expand(step.at)
    layers = sourced_layers(ctx)
    ctx.write("Downloading workspace layers\n")
    for _, workflow_id, entry in layers:
        ctx.write(f"  workflows/workspaces/{workflow_id}/0/{entry.key} ({ibytes(entry.size)})\n")
    if not layers:
        ctx.write("  (none: no upstream job of this workflow persisted to the workspace)\n")
        return StepOutcome("success")
    ctx.write(f"Applying workspace layers for job: {ctx.job_id}\n")
    for job, _, entry in layers:
        node = entry.meta.get("node_index", 0)
        ctx.write(f"  Applying workspace layer for job: {job} (node {node})\n")
        host_path = getattr(ctx.environment, "host_path", None)
        direct = host_path(at) if host_path is not None else None
        if direct is not None:  # straight into the job's files: no second copy
            ctx.blobs.restore_tree(entry, direct)
            ctx.environment.adopt(at)
            continue
        target = scratch(ctx, "attach")
        try:
            ctx.blobs.restore_tree(entry, target)
            ctx.environment.copy_in(target, at)
        finally:
            discard(target)
    return StepOutcome("success")
