"""The ``run`` step: a command run by a shell, as CircleCI runs it.

CircleCI writes the command to a file and runs ``<shell> <file>`` (default
shell ``/bin/bash -eo pipefail``), so multi-line commands, ``-e`` and custom
shells such as ``python3`` or ``node`` all behave the same. The JobRunner
writes every run step's file into the job's task-data directory once, while
*Preparing environment variables* (``ctx.extra["scripts"]``: step index →
path), so a step costs exactly one process start. A step without a prepared
file (or with its own ``working_directory``, which may not exist yet) goes
through a tiny ``/bin/sh`` prologue that writes the file / enters the
directory and ``exec``s the shell.

``$BASH_ENV`` needs nothing here: non-interactive bash reads the file named
by the ``BASH_ENV`` variable before running a script, which is exactly how
CircleCI carries exported variables from one step to the next.
"""

from __future__ import annotations

import posixpath
import shlex

from circlet.engine.environ import step_environment
from circlet.engine.steps import register
from circlet.engine.steps.base import StepContext, StepOutcome
from circlet.plan import DEFAULT_SHELL, RunStep, Step

# Arguments above this size go through stdin (Linux caps one argument at 128 KiB).
MAX_ARG = 100_000

_PROLOGUE = (
    'f=$1; d=$2; printf "%s" "$3" > "$f" || exit 1; '
    '[ -d "$d" ] || mkdir -p "$d" || exit 1; cd "$d" || exit 1; shift 3; exec "$@" "$f"'
)
_PROLOGUE_STDIN = (
    'f=$1; d=$2; cat > "$f" || exit 1; '
    '[ -d "$d" ] || mkdir -p "$d" || exit 1; cd "$d" || exit 1; shift 3; exec "$@" "$f" </dev/null'
)
_PROLOGUE_CD = '[ -d "$1" ] || mkdir -p "$1" || exit 1; cd "$1" || exit 1; shift; exec "$@"'
SCRIPTS = "scripts"  # ctx.extra key: {step index: prepared script path}


def script_text(command: str) -> str:
    """The script file's content for ``command``."""
    return command if command.endswith("\n") else command + "\n"


def go_duration(seconds: float) -> str:
    """Seconds as Go's ``time.Duration.String()`` prints them: 10m0s, 1s, 1h0m0s, 1.5s."""
    if seconds < 1:
        ms = round(seconds * 1000)
        return f"{ms}ms" if ms else "0s"
    whole = int(seconds)
    frac = seconds - whole
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs + frac:.3f}".rstrip("0").rstrip(".") if frac else str(secs)
    if hours:
        return f"{hours}h{minutes}m{sec_text}s"
    if minutes:
        return f"{minutes}m{sec_text}s"
    return f"{sec_text}s"


def step_shell(step: RunStep, ctx: StepContext) -> str:
    """The shell of a step: the step's, else the job's, else the executor's, else bash."""
    executor_shell = ctx.job.executor.shell if ctx.job.executor is not None else None
    return step.shell or ctx.job.shell or executor_shell or DEFAULT_SHELL


def step_directory(step: RunStep, ctx: StepContext) -> str:
    """The step's working directory: relative to the job's, ``~`` expanded."""
    wd = step.working_directory
    if not wd or wd == ".":
        return ctx.working_directory
    if wd.startswith("~"):
        return ctx.environment.expand(wd)
    return posixpath.normpath(posixpath.join(ctx.working_directory, wd))


def header(shell: str, command: str) -> str:
    """What CircleCI shows above a run step's output."""
    return f"#!{shell}\n{command.rstrip(chr(10))}"


def run_argv(
    shell: str, script: str, directory: str, command: str
) -> tuple[list[str], bytes | None]:
    """The argv (and stdin) that writes ``command`` to ``script`` and runs it with ``shell``."""
    shell_argv = shlex.split(shell)
    text = script_text(command)
    if len(text.encode()) > MAX_ARG:
        argv = ["/bin/sh", "-c", _PROLOGUE_STDIN, "circlet-run", script, directory, "", *shell_argv]
        return argv, text.encode()
    return ["/bin/sh", "-c", _PROLOGUE, "circlet-run", script, directory, text, *shell_argv], None


@register("run")
def run_step(step: Step, ctx: StepContext) -> StepOutcome:
    """Run a ``run`` step; background steps are started by the JobRunner in a thread."""
    assert isinstance(step, RunStep)
    shell = step_shell(step, ctx)
    directory = step_directory(step, ctx)
    prepared: str | None = ctx.extra.get(SCRIPTS, {}).get(ctx.index)
    cwd = "/"
    if prepared is None:
        script = posixpath.join(ctx.task_data or "/tmp", f"step-{ctx.index}.sh")
        argv, stdin = run_argv(shell, script, directory, step.command)
    elif directory != ctx.working_directory:
        argv, stdin = (
            [
                "/bin/sh",
                "-c",
                _PROLOGUE_CD,
                "circlet-run",
                directory,
                *shlex.split(shell),
                prepared,
            ],
            None,
        )
    else:  # the common case: one exec, like `bash -eo pipefail <file>` on CircleCI
        argv, stdin, cwd = [*shlex.split(shell), prepared], None, directory
    env = step_environment(ctx.environ, step.environment)
    timeout = step.no_output_timeout if step.no_output_timeout > 0 else None
    attempts = 1 + max(step.max_auto_reruns, 0)
    for attempt in range(1, attempts + 1):
        result = ctx.environment.exec(
            argv,
            env=env,
            cwd=cwd,
            on_output=ctx.write,
            stdin=stdin,
            no_output_timeout=timeout,
            cancel=ctx.cancel,
        )
        if result.exit_code in (0, None) or attempt == attempts or ctx.cancel.is_set():
            break
        ctx.write(
            f"\nExited with code exit status {result.exit_code}; "
            f"rerunning the step (attempt {attempt + 1} of {attempts})\n"
        )
    if result.cancelled:
        return StepOutcome("canceled", reason="Step was canceled")
    if result.no_output_timeout:
        reason = (
            f"Too long with no output (exceeded {go_duration(step.no_output_timeout)}): "
            "context deadline exceeded"
        )
        ctx.write(f"\n{reason}\n")
        return StepOutcome("timedout", reason=reason)
    if result.timed_out:
        reason = "Timed out: context deadline exceeded"
        ctx.write(f"\n{reason}\n")
        return StepOutcome("timedout", reason=reason)
    if result.exit_code == 0:
        return StepOutcome("success", exit_code=0)
    reason = f"Exited with code exit status {result.exit_code}"
    ctx.write(f"\n{reason}\n")
    return StepOutcome("failed", exit_code=result.exit_code, reason=reason)
