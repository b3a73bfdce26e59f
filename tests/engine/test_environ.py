"""Built-in variables, precedence, and the *Preparing environment variables* text."""

from __future__ import annotations

from circlet.engine.environ import (
    REDACTED,
    BuildIdentity,
    builtin_environment,
    describe,
    job_environment,
    project_parts,
    step_environment,
)
from circlet.plan import DockerImage, ExecutorSpec, JobSpec

WHO = BuildIdentity(
    job_name="build_and_test",
    build_num=77,
    project="gh/LaurentJouron/Orange_County_Lettings",
    pipeline_id="pid",
    workflow_id="27ce7e4d",
    workflow_job_id="63d194ad",
    working_directory="~/project",
    task_id="65db6152a4df651845c2d2cf",
    branch="master",
    revision="b5565da",
    username="LaurentJouron",
    repository_url="git@github.com:LaurentJouron/Orange_County_Lettings.git",
)


def test_builtins_like_circleci() -> None:
    env = builtin_environment(WHO)
    assert env["BASH_ENV"] == "/tmp/.bash_env-65db6152a4df651845c2d2cf-0-build"
    assert env["CIRCLE_SHELL_ENV"] == env["BASH_ENV"]
    assert env["CI"] == env["CIRCLECI"] == "true"
    assert env["CIRCLE_BRANCH"] == "master"
    assert env["CIRCLE_BUILD_NUM"] == "77"
    assert env["CIRCLE_JOB"] == "build_and_test"
    assert (env["CIRCLE_NODE_INDEX"], env["CIRCLE_NODE_TOTAL"]) == ("0", "1")
    assert env["CIRCLE_PROJECT_USERNAME"] == "LaurentJouron"
    assert env["CIRCLE_PROJECT_REPONAME"] == "Orange_County_Lettings"
    assert env["CIRCLE_SHA1"] == "b5565da"
    assert env["CIRCLE_WORKFLOW_WORKSPACE_ID"] == env["CIRCLE_WORKFLOW_ID"] == "27ce7e4d"
    assert env["CIRCLE_WORKFLOW_JOB_ID"] == "63d194ad"
    assert env["CIRCLE_WORKING_DIRECTORY"] == "~/project"  # CircleCI leaves the ~ in
    assert env["CIRCLE_PIPELINE_ID"] == "pid"
    assert "CIRCLE_TAG" not in env
    assert "HOME" not in env  # the environment's own HOME stays


def test_tag_pipeline_has_tag_and_no_branch() -> None:
    from dataclasses import replace

    env = builtin_environment(replace(WHO, branch=None, tag="v1.0"))
    assert env["CIRCLE_TAG"] == "v1.0"
    assert "CIRCLE_BRANCH" not in env


def test_project_parts() -> None:
    assert project_parts("local/lettings") == ("local", "lettings")
    assert project_parts("gh/org/repo") == ("org", "repo")


def test_precedence() -> None:
    job = JobSpec(
        "j",
        ExecutorSpec(
            kind="docker",
            images=(DockerImage("img", environment={"A": "image", "B": "image"}),),
            environment={"B": "executor", "C": "executor"},
        ),
        environment={"C": "job", "CIRCLE_JOB": "job-override"},
    )
    secrets = {"A": "project", "CIRCLE_BRANCH": "secret-loses", "TOKEN": "t0ken"}
    env = job_environment(builtin_environment(WHO), secrets, job)
    assert env["TOKEN"] == "t0ken"
    assert env["CIRCLE_BRANCH"] == "master"  # built-ins beat project variables
    assert env["A"] == "image"
    assert env["B"] == "executor"
    assert env["C"] == "job"
    assert env["CIRCLE_JOB"] == "job-override"  # the job's environment beats built-ins
    step = step_environment(env, {"C": "step"})
    assert step["C"] == "step"
    assert env["C"] == "job"  # not changed in place


def test_describe_matches_the_seed_screenshot() -> None:
    text = describe(builtin_environment(WHO), {"CIRCLE_OIDC_TOKEN": "x" * 20, "DSN": "dsn-value"})
    lines = text.splitlines()
    assert lines[0] == "Using build environment variables:"
    assert lines[1] == "  BASH_ENV=/tmp/.bash_env-65db6152a4df651845c2d2cf-0-build"
    assert lines[2:4] == ["  CI=true", "  CIRCLECI=true"]
    assert "  CIRCLE_BUILD_NUM=77" in lines
    assert "  CIRCLE_WORKING_DIRECTORY=~/project" in lines
    assert not any("CIRCLE_INTERNAL_TASK_DATA" in line or "CIRCLET_" in line for line in lines)
    names = [line.split("=")[0].strip() for line in lines[1 : lines.index("")]]
    assert names == sorted(names)
    assert "Using environment variables from project settings and/or contexts:" in lines
    assert f"  CIRCLE_OIDC_TOKEN={REDACTED}" in lines
    assert f"  DSN={REDACTED}" in lines
    assert "dsn-value" not in text
    assert lines[-1] == "The redacted variables listed above will be masked in run step output."


def test_describe_without_secrets() -> None:
    text = describe(builtin_environment(WHO), {})
    assert "REDACTED" not in text
    assert "project settings" not in text
