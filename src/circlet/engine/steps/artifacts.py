"""``store_artifacts``: files of the job kept after it, one blob each.

Each file becomes a blob and an :class:`~circlet.engine.events.ArtifactStored`
event naming it as CircleCI's artifacts API does: ``destination/<path below
the directory>`` (``destination`` defaults to the path itself, without the
leading ``/``). A missing path is reported, not a failure, as on CircleCI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from circlet.engine.events import ArtifactStored
from circlet.engine.steps import register
from circlet.engine.steps.base import StepContext, StepOutcome
from circlet.engine.steps.transfer import ibytes, scratch
from circlet.plan import Step, StoreArtifactsStep


def artifact_files(root: Path) -> list[tuple[str, Path]]:
    """(path below ``root`` with ``/``, host file) of every regular file, sorted.
    Symlinks to files count as the file; other symlinks are left out."""
    if not root.is_dir():
        return [("", root)] if root.is_file() else []
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            file = Path(dirpath) / name
            if file.is_file():
                found.append((file.relative_to(root).as_posix(), file))
    return found


@register("store_artifacts")
def store_artifacts(step: Step, ctx: StepContext) -> StepOutcome:
    """Upload the file or directory at ``path`` under ``destination``."""
    assert isinstance(step, StoreArtifactsStep)
    inside = ctx.environment.expand(step.path)
    prefix = (step.destination or inside).strip("/")
    copy = scratch(ctx, "artifacts") / "copy"
    try:
        if not ctx.environment.copy_out(inside, copy):
            ctx.write(f"No artifact files found at {inside}\n")
            return StepOutcome("success")
        files = artifact_files(copy)
        ctx.write(f"Uploading {inside} to {prefix}\n")
        total = 0
        for rel, file in files:
            name = f"{prefix}/{rel}" if rel else prefix
            shown = f"{inside}/{rel}" if rel else inside
            with file.open("rb") as stream:
                digest, size = ctx.blobs.put_blob(stream)
            total += size
            ctx.sink(ArtifactStored(ctx.job_id, name, digest, size, ctx.node_index))
            ctx.write(f"  Uploading {shown} ({ibytes(size)}): DONE\n")
        if not files:
            ctx.write(f"No artifact files found at {inside}\n")
        else:
            ctx.write(f"Uploaded {len(files)} artifacts ({ibytes(total)})\n")
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    return StepOutcome("success")
