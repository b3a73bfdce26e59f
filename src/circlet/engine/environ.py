"""A job's environment variables: CircleCI's built-ins, secrets, job and step values.

Precedence, lowest first, as CircleCI documents it ("Order of precedence"):
project variables < context variables < built-in ``CIRCLE_*`` variables <
executor/image ``environment`` < job ``environment`` < step ``environment``
(< anything the command itself exports, which is the shell's business).

The *Preparing environment variables* step text is :func:`describe`: the
built-ins with their values, the secrets as ``**REDACTED**``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from circlet.plan import JobSpec

REDACTED = "**REDACTED**"

# Ours, not CircleCI's: where the agent scripts find the halt flag and timings.
HALT_FILE_VAR = "CIRCLET_HALT_FILE"
TIMINGS_FILE_VAR = "CIRCLET_TIMINGS_FILE"
RERUN_TESTS_FILE_VAR = "CIRCLET_RERUN_TESTS_FILE"  # only in "rerun failed tests" jobs

# Built-ins CircleCI sets but does not list in *Preparing environment variables*.
_UNLISTED = frozenset(
    {"CIRCLE_INTERNAL_TASK_DATA", HALT_FILE_VAR, TIMINGS_FILE_VAR, RERUN_TESTS_FILE_VAR}
)


@dataclass(frozen=True)
class BuildIdentity:
    """Who/what/where a job copy is: everything the built-in variables say."""

    job_name: str
    build_num: int
    project: str  # "local/lettings", "gh/org/repo"
    pipeline_id: str
    workflow_id: str
    workflow_job_id: str
    working_directory: str  # as configured ("~/project"): CircleCI does not expand it
    task_id: str  # 24 hex digits, names the per-job files (BASH_ENV…)
    node_index: int = 0
    node_total: int = 1
    branch: str | None = None
    tag: str | None = None
    revision: str | None = None
    username: str = ""
    repository_url: str = ""
    build_url: str = ""
    workflow_workspace_id: str | None = None  # differs from workflow_id on reruns

    @property
    def bash_env(self) -> str:
        """The per-job BASH_ENV file, named like CircleCI's."""
        return f"/tmp/.bash_env-{self.task_id}-{self.node_index}-build"

    @property
    def task_data(self) -> str:
        """A private directory for the agent (halt flag, test timings)."""
        return f"/tmp/.circleci-task-data-{self.task_id}-{self.node_index}-build"

    @property
    def halt_file(self) -> str:
        return f"{self.task_data}/halt"

    @property
    def timings_file(self) -> str:
        return f"{self.task_data}/timings.json"


def project_parts(project: str) -> tuple[str, str]:
    """``gh/org/repo`` or ``local/repo`` → (username, reponame)."""
    parts = [p for p in project.split("/") if p]
    if len(parts) >= 3:
        return parts[-2], parts[-1]
    if len(parts) == 2:
        return parts[0], parts[1]
    return "", parts[0] if parts else ""


def builtin_environment(who: BuildIdentity) -> dict[str, str]:
    """The built-in variables of CircleCI's reference ("Built-in environment variables")."""
    user, repo = project_parts(who.project)
    env = {
        "BASH_ENV": who.bash_env,
        "CI": "true",
        "CIRCLECI": "true",
        "CIRCLE_BUILD_NUM": str(who.build_num),
        "CIRCLE_BUILD_URL": who.build_url or f"circlet://{who.project}/{who.build_num}",
        "CIRCLE_INTERNAL_TASK_DATA": who.task_data,
        "CIRCLE_JOB": who.job_name,
        "CIRCLE_NODE_INDEX": str(who.node_index),
        "CIRCLE_NODE_TOTAL": str(who.node_total),
        "CIRCLE_PIPELINE_ID": who.pipeline_id,
        "CIRCLE_PROJECT_REPONAME": repo,
        "CIRCLE_PROJECT_USERNAME": user,
        "CIRCLE_REPOSITORY_URL": who.repository_url,
        "CIRCLE_SHELL_ENV": who.bash_env,
        "CIRCLE_USERNAME": who.username,
        "CIRCLE_WORKFLOW_ID": who.workflow_id,
        "CIRCLE_WORKFLOW_JOB_ID": who.workflow_job_id,
        "CIRCLE_WORKFLOW_WORKSPACE_ID": who.workflow_workspace_id or who.workflow_id,
        "CIRCLE_WORKING_DIRECTORY": who.working_directory,
        HALT_FILE_VAR: who.halt_file,
        TIMINGS_FILE_VAR: who.timings_file,
    }
    # A tag pipeline has CIRCLE_TAG and no CIRCLE_BRANCH (unless both were given).
    if who.branch is not None:
        env["CIRCLE_BRANCH"] = who.branch
    if who.tag is not None:
        env["CIRCLE_TAG"] = who.tag
    if who.revision:
        env["CIRCLE_SHA1"] = who.revision
    return dict(sorted(env.items()))


def job_environment(
    builtins: Mapping[str, str], secrets: Mapping[str, str], job: JobSpec
) -> dict[str, str]:
    """All variables of a job, merged in CircleCI's order of precedence.

    ``secrets`` are the project and context variables, already merged by the
    caller (contexts over project).
    """
    env: dict[str, str] = dict(secrets)
    env.update(builtins)
    if job.executor is not None:
        if job.executor.images:
            env.update(job.executor.images[0].environment)
        env.update(job.executor.environment)
    env.update(job.environment)
    return env


def step_environment(job_env: Mapping[str, str], step_env: Mapping[str, str]) -> dict[str, str]:
    """A step's variables: the job's, overridden by the step's ``environment``."""
    if not step_env:
        return dict(job_env)
    merged = dict(job_env)
    merged.update(step_env)
    return merged


def describe(builtins: Mapping[str, str], secrets: Mapping[str, str]) -> str:
    """The text of *Preparing environment variables*, as CircleCI prints it."""
    lines = ["Using build environment variables:"]
    lines += [f"  {k}={v}" for k, v in sorted(builtins.items()) if k not in _UNLISTED]
    if secrets:
        lines.append("")
        lines.append("Using environment variables from project settings and/or contexts:")
        lines += [f"  {k}={REDACTED}" for k in sorted(secrets)]
        lines.append("")
        lines.append("The redacted variables listed above will be masked in run step output.")
    return "\n".join(lines) + "\n"
