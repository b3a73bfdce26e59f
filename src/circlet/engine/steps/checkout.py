"""``checkout``: the code under test, as a real git working copy, in the job.

The engine gives the step the host repository (``ctx.repo``) and the commit
to check out (``ctx.commit``: a snapshot of the working tree unless
``--commit`` was given, see :mod:`circlet.engine.gitsnapshot`). The step
exports that commit into a host staging directory (a clone with ``.git``, a
local branch named like the pipeline's branch, ``origin`` set) and copies it
into the job at ``path`` (default: the working directory).

Its output follows CircleCI's *Checkout code* where that is true here
("Cloning git repository", "Checking out branch", "HEAD is now at …") and says
what circlet does instead of the SSH set-up it has no need for.

Without git (``ctx.commit`` None and ``ctx.repo`` a plain directory: ``--no-git``)
the directory is copied as it is; with ``ctx.repo`` None the step fails with
the fix in its message.
"""

from __future__ import annotations

import time

from circlet.engine import gitsnapshot
from circlet.engine.steps import register
from circlet.engine.steps.base import StepContext, StepOutcome
from circlet.engine.steps.transfer import discard, go_duration, scratch
from circlet.plan import CheckoutStep, Step

_ABSENT, _GIT_REPO, _NOT_EMPTY = 0, 10, 11
_TARGET_STATE = (
    't="$1"; [ -e "$t" ] || exit 0; [ -d "$t/.git" ] && exit 10; '
    '[ -d "$t" ] && [ -z "$(ls -A "$t")" ] && exit 0; exit 11'
)


def _target_state(ctx: StepContext, target: str) -> int | None:
    result = ctx.environment.exec(
        ["/bin/sh", "-c", _TARGET_STATE, "checkout", target],
        env=ctx.environ,
        cwd=None,
        on_output=lambda _: None,
        cancel=ctx.cancel,
    )
    return result.exit_code


@register("checkout")
def checkout(step: Step, ctx: StepContext) -> StepOutcome:
    """Check the code under test out into ``step.path`` (default: the working directory)."""
    assert isinstance(step, CheckoutStep)
    target = ctx.environment.expand(step.path) if step.path else ctx.working_directory
    if ctx.repo is None:
        reason = (
            "There is no code to check out: the project is not in a git repository "
            "(run `git init` there, or let circlet copy it as it is with --no-git)"
        )
        ctx.write(reason + "\n")
        return StepOutcome("failed", 1, reason)
    state = _target_state(ctx, target)
    if state == _NOT_EMPTY:
        reason = (
            f"Directory ({target}) you are trying to checkout to is not empty "
            "and not a git repository"
        )
        ctx.write(reason + "\n")
        return StepOutcome("failed", 1, reason)
    if state not in (_ABSENT, _GIT_REPO):
        reason = f"Could not inspect the checkout directory {target} (exit code {state})"
        ctx.write(reason + "\n")
        return StepOutcome("failed", 1, reason)

    started = time.monotonic()
    if ctx.commit is None:
        ctx.write(f"Copying {ctx.repo} as it is (not checked out with git: --no-git)\n")
        ctx.environment.copy_in(ctx.repo, target)
        ctx.write(f"Copied into {target} in {go_duration(time.monotonic() - started)}\n")
        return StepOutcome("success")

    try:
        top = gitsnapshot.find_repo(ctx.repo)
        note = gitsnapshot.snapshot_note(top, ctx.commit)
        subject, _ = gitsnapshot.commit_info(top, ctx.commit)
        origin = gitsnapshot.origin_url(top)
        if note is not None and note.startswith("working tree"):
            ctx.write(f"Using a snapshot of the {note}\n")
        elif note is not None:  # --commit of a project in a subdirectory
            ctx.write(f"Using a snapshot of {note}\n")
        else:
            ctx.write(f"Using commit {ctx.commit[:7]} of {ctx.repo}\n")
        if state == _GIT_REPO:
            ctx.write(f"Updating the existing git repository in {target}\n")
        ctx.write("Cloning git repository\n")
        work = scratch(ctx, "checkout")
        clone = work / "repo"
        gitsnapshot.export_checkout(top, ctx.commit, clone, branch=ctx.branch, origin_url=origin)
    except gitsnapshot.GitError as exc:
        ctx.write(f"{exc}\n")
        return StepOutcome("failed", 1, str(exc))
    try:
        if ctx.branch:
            ctx.write("Checking out branch\n")
        ctx.write(f"HEAD is now at {ctx.commit[:7]} {subject}\n")
        ctx.environment.copy_in(clone, target)
    finally:
        discard(work)
    ctx.write(f"Checked out into {target} in {go_duration(time.monotonic() - started)}\n")
    return StepOutcome("success")
