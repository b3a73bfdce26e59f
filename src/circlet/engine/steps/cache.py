"""``save_cache`` and ``restore_cache``: CircleCI's caches on the blob store.

Caches live in the namespace ``cache/<project>``, one immutable tree per
rendered key. ``restore_cache`` tries its keys in order, each as a prefix,
newest match first, exactly as CircleCI does. The messages are CircleCI's
(*Found a cache from build 75 at …*, *Skipping cache generation, cache already
exists for key: …*), with durations that say what circlet really did.

A tree stores each saved path under ``home/…`` when it was below the job's
``$HOME`` and under ``root/…`` otherwise, and the entry's ``meta["paths"]``
lists them as ``~/…`` or absolute. So a cache of ``~/.cache/pip`` made in one
environment restores into the home of another (the host executor's homes are
per job; CircleCI images all use /home/circleci).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path

from circlet import overlay as cow
from circlet.engine.cachekey import CacheKeyError, render_for_job
from circlet.engine.steps import register
from circlet.engine.steps.base import StepContext, StepOutcome
from circlet.engine.steps.transfer import (
    discard,
    elapsed,
    go_duration,
    ibytes,
    scratch,
    utc_stamp,
)
from circlet.executors import mergeddir
from circlet.overlay import CowArea
from circlet.plan import RestoreCacheStep, SaveCacheStep, Step
from circlet.store.api import TreeEntry


def namespace(project: str) -> str:
    """The blob-store namespace of a project's caches."""
    return f"cache/{project}"


def label_for(inside: str, home: str) -> str:
    """How a saved path is remembered: ``~/rel`` below ``home``, else absolute."""
    home = home.rstrip("/") or "/"
    if inside == home:
        return "~"
    if home != "/" and inside.startswith(home + "/"):
        return "~/" + inside[len(home) + 1 :]
    return inside


def tree_path(label: str) -> str:
    """Where a remembered path lives inside the cache tree."""
    if label == "~":
        return "home"
    if label.startswith("~/"):
        return "home/" + label[2:]
    return "root/" + label.lstrip("/")


def _key_error(ctx: StepContext, exc: CacheKeyError, template: str) -> str:
    line = f"Error computing cache key: {exc}"
    ctx.write(f"{line}\n  key template: {template}\n")
    return line


@register("save_cache")
def save_cache(step: Step, ctx: StepContext) -> StepOutcome:
    """Save the step's paths under its rendered key, unless that key exists."""
    assert isinstance(step, SaveCacheStep)
    try:
        key = render_for_job(step.key, ctx)
    except CacheKeyError as exc:
        return StepOutcome("failed", 1, _key_error(ctx, exc, step.key))
    ns = namespace(ctx.project)
    existing = ctx.blobs.get_tree(ns, key)
    if existing is not None:
        _skipping(ctx, key, existing)
        return StepOutcome("success")

    ctx.write("Creating cache archive...\n")
    started = time.monotonic()
    home = ctx.environment.info.home
    layer = scratch(ctx, "save-cache")
    saved: list[tuple[str, str]] = []  # (label, path inside)
    try:
        for path in step.paths:
            inside = ctx.environment.expand(path)
            label = label_for(inside, home)
            if any(label == done for done, _ in saved):
                continue
            if ctx.environment.copy_out(inside, layer / tree_path(label)):
                saved.append((label, inside))
            else:
                ctx.write(f"Warning: could not find path {inside}: skipping it\n")
        if not saved:
            ctx.write("Warning: none of the paths exist: no cache was saved\n")
            return StepOutcome("success")
        ctx.write("Uploading cache archive...\n")
        meta = {
            "build_num": ctx.build_num,
            "job_id": ctx.job_id,
            "job": ctx.job_name,
            "paths": [label for label, _ in saved],
            "template": step.key,
        }
        entry = ctx.blobs.put_tree(
            ns, key, layer, paths=[tree_path(label) for label, _ in saved], meta=meta
        )
    finally:
        discard(layer)
    if entry.meta.get("job_id") != ctx.job_id:  # another job saved the key meanwhile
        _skipping(ctx, key, entry)
        return StepOutcome("success")
    ctx.write(f"Stored Cache to {key}\n")
    ctx.write("".join(f"  * {inside}\n" for _, inside in saved))
    ctx.write(f"Total size uploaded: {ibytes(entry.size)}\n")
    ctx.write(
        f"({entry.files} files; {ibytes(entry.stored_size)} of new data stored after "
        f"deduplication, in {go_duration(time.monotonic() - started)})\n"
    )
    return StepOutcome("success")


def _skipping(ctx: StepContext, key: str, entry: TreeEntry) -> None:
    ctx.write(f"Skipping cache generation, cache already exists for key: {key}\n")
    ctx.write(f"Found one created at {utc_stamp(entry.created_at)}\n")


@register("restore_cache")
def restore_cache(step: Step, ctx: StepContext) -> StepOutcome:
    """Restore the newest cache matching the first key (as a prefix) that matches."""
    assert isinstance(step, RestoreCacheStep)
    ns = namespace(ctx.project)
    for template in step.keys:
        try:
            key = render_for_job(template, ctx)
        except CacheKeyError as exc:
            # A cache is an optimization: an unusable key is reported, the next is tried.
            _key_error(ctx, exc, template)
            continue
        entry = ctx.blobs.find_tree(ns, key)
        if entry is None:
            ctx.write(f"No cache is found for key: {key}\n")
            continue
        _restore(ctx, entry)
        return StepOutcome("success")
    return StepOutcome("success")


def _restore(ctx: StepContext, entry: TreeEntry) -> None:
    build = entry.meta.get("build_num", "?")
    labels = _labels(entry)
    ctx.write(f"Found a cache from build {build} at {entry.key}\n")
    ctx.write(f"Size: {ibytes(entry.size)}\n")
    ctx.write("Cached paths:\n")
    ctx.write("".join(f"  * {ctx.environment.expand(label)}\n" for label in labels))
    ctx.write("\nRestoring cache from the blob store...\n")
    if _restore_cow(ctx, entry, labels) or _restore_direct(ctx, entry, labels):
        ctx.write("Cache restored successfully\n")
        return
    target = scratch(ctx, "restore-cache")
    try:
        stats = ctx.blobs.restore_tree(entry, target)
        ctx.write(
            f"Restore duration for cache {entry.key}: {go_duration(stats.seconds)} "
            f"({stats.files} files, {stats.method})\n"
        )
        ctx.write("\nUnarchiving cache...\n")
        started = time.monotonic()
        for label in labels:
            source = target / tree_path(label)
            if source.exists() or source.is_symlink():
                ctx.environment.copy_in(source, ctx.environment.expand(label))
        # The key of the cache found (rendered), never the step's template.
        ctx.write(f"Extraction duration for {entry.key}: {elapsed(started)}\n")
    finally:
        discard(target)
    ctx.write("Cache restored successfully\n")


def _restore_cow(ctx: StepContext, entry: TreeEntry, labels: list[str]) -> bool:
    """Restore as copy-on-write overlay mounts of the store's materialized copy
    (:mod:`circlet.overlay`): one mount(2) per top directory, whatever the size.

    A mount point cannot be removed or renamed, so a directory is only mounted
    where the restore creates it *above* a cached path (``~/.cache`` for
    ``~/.cache/pip``): the cached paths themselves stay removable (``rm -rf
    ~/.cache/pip`` works as on CircleCI). False, with nothing done, where that
    rule or the environment does not allow it: no ``cow_area`` (docker: the
    container would not see the mount), a store that cannot materialize (a
    runner's HTTP store), a cached path or its parent already present.
    """
    env = ctx.environment
    area: CowArea | None = getattr(env, "cow_area", None)
    materialize = getattr(ctx.blobs, "materialize", None)
    host_path = getattr(env, "host_path", None)
    if area is None or materialize is None or host_path is None or not cow.available():
        return False
    mounts: dict[Path, str] = {}  # mount point → its path in the tree
    for label in labels:
        dest = host_path(env.expand(label))
        if dest is None or os.path.lexists(dest):
            return False
        top, tree = _top_missing(dest, tree_path(label))
        if top is None or top == dest or mounts.get(top, tree) != tree:
            return False
        mounts[top] = tree
    started = time.monotonic()
    mounted = len(area.targets)
    try:
        lower: Path = materialize(entry)
        ctx.write(
            f"Restore duration for cache {entry.key}: "
            f"{go_duration(time.monotonic() - started)} ({entry.files} files, stored copy)\n"
        )
        ctx.write("\nUnarchiving cache...\n")
        started = time.monotonic()
        for top, tree in mounts.items():
            source = lower / tree
            if source.is_dir() and not source.is_symlink():
                area.mount(source, top)
    except OSError as exc:
        area.release_from(mounted)
        ctx.write(f"Copy-on-write restore not possible ({exc}); extracting instead\n")
        return False
    ctx.write(
        f"Extraction duration for {entry.key}: {elapsed(started)} "
        "(copy-on-write overlay of the stored copy)\n"
    )
    return True


def _top_missing(dest: Path, tree: str) -> tuple[Path | None, str]:
    """The highest missing ancestor of ``dest`` (or ``dest``) and its path in the tree
    (``tree`` is ``dest``'s); (None, "") if it is above the tree's own folders."""
    top, top_tree = dest, tree
    while not os.path.lexists(top.parent):
        if "/" not in top_tree.partition("/")[2]:  # never "home" or "root" itself
            return None, ""
        top, top_tree = top.parent, top_tree.rpartition("/")[0]
    if not top.parent.is_dir() or top.parent.is_symlink():
        return None, ""
    return top, top_tree


def _restore_direct(ctx: StepContext, entry: TreeEntry, labels: list[str]) -> bool:
    """Restore through the environment's own files (``host_path``); False if it has none.

    The tree is materialized in a fresh directory inside the job's filesystem,
    then each cached path is moved (a rename, no copy) into place, merging
    into existing directories as ``copy_in`` does, and given to the job's user.
    """
    env = ctx.environment
    host_path = getattr(env, "host_path", None)
    if host_path is None:
        return False
    insides = [env.expand(label) for label in labels]
    dests = [host_path(inside) for inside in insides]
    scratch_inside = f"/.circlet-restore-{secrets.token_hex(6)}"
    target = host_path(scratch_inside)
    if target is None or any(dest is None for dest in dests):
        return False
    try:
        stats = ctx.blobs.restore_tree(entry, target)
        ctx.write(
            f"Restore duration for cache {entry.key}: {go_duration(stats.seconds)} "
            f"({stats.files} files, {stats.method})\n"
        )
        ctx.write("\nUnarchiving cache...\n")
        started = time.monotonic()
        for label, inside, dest in zip(labels, insides, dests, strict=True):
            source = target / tree_path(label)
            if dest is not None and (source.exists() or source.is_symlink()):
                mergeddir.move_into(source, dest)
                env.adopt(inside)
        ctx.write(f"Extraction duration for {entry.key}: {elapsed(started)}\n")
    finally:
        shutil.rmtree(target, ignore_errors=True)
    return True


def _labels(entry: TreeEntry) -> list[str]:
    paths = entry.meta.get("paths")
    if isinstance(paths, list) and all(isinstance(p, str) for p in paths):
        return list(paths)
    return []


def saved_paths(entry: TreeEntry) -> list[str]:
    """The paths a cache entry restores (``~/…`` or absolute), for listings."""
    return _labels(entry)
