"""``circlet config validate|process`` end to end: real files, real exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from circlet.cli.main import cli

FIXTURES = (Path(__file__).parents[2] / ".." / "shared" / "fixtures").resolve()
OC_LETTINGS = FIXTURES / "oc-lettings" / "config.yml"

BAD = """version: 2.1
jobs:
  build:
    docker: [{image: x}]
    steps:
      - chekout
workflows:
  main:
    jobs: [build, ghost]
"""

PARAMS = """version: 2.1
parameters:
  deploy: {type: boolean, default: false}
  shards: {type: integer, default: 1}
jobs:
  build:
    docker: [{image: cimg/base:current}]
    parallelism: << pipeline.parameters.shards >>
    steps:
      - run: echo << pipeline.git.branch >>
      - when:
          condition: << pipeline.parameters.deploy >>
          steps: [{run: ./deploy}]
workflows:
  main:
    jobs: [build]
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["config", *args])
    return result.exit_code, result.stdout, result.stderr


def test_validate_a_valid_config(tmp_path: Path) -> None:
    code, out, err = run("validate", str(OC_LETTINGS))
    assert code == 0
    assert out == f"Config file at {OC_LETTINGS} is valid.\n"
    # The unused, unavailable heroku orb is a warning (still valid).
    assert ": warning: orb circleci/heroku@2.0.0" in err


def test_validate_prints_each_problem_located(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(BAD)
    code, out, err = run("validate", str(config))
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        f"{config}:6:9: error: unknown step or command 'chekout' (at jobs.build.steps[0])",
        f"{config}:9:19: error: unknown job 'ghost' (at workflows.main.jobs[1].ghost)",
        f"Config file at {config} is invalid: 2 error(s).",
    ]


def test_validate_defaults_to_the_project_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".circleci").mkdir()
    (tmp_path / ".circleci" / "config.yml").write_text(PARAMS)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["config", "validate"])
    assert result.exit_code == 0
    assert result.stdout == "Config file at .circleci/config.yml is valid.\n"


def test_missing_file_is_one_line_exit_1(tmp_path: Path) -> None:
    code, _, err = run("validate", str(tmp_path / "nope.yml"))
    assert code == 1
    assert (
        err.splitlines()[0]
        == f"{tmp_path / 'nope.yml'}:1:1: error: cannot read config: No such file or directory"
    )


def test_process_prints_expanded_yaml(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(PARAMS)
    code, out, _ = run(
        "process", str(config), "--branch", "main", "--pipeline-param", "deploy=true",
        "--pipeline-param", "shards=3",
    )  # fmt: skip
    assert code == 0
    data = yaml.safe_load(out)
    assert data["version"] == 2
    job = data["jobs"]["build"]
    assert job["parallelism"] == 3
    assert job["steps"] == [
        {"run": {"name": "echo main", "command": "echo main"}},
        {"run": {"name": "./deploy", "command": "./deploy"}},
    ]
    assert data["workflows"]["main"]["jobs"] == ["build"]


def test_process_json_is_the_plan(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(PARAMS)
    code, out, _ = run("process", str(config), "--json", "--tag", "v1")
    assert code == 0
    data = json.loads(out)
    assert data["parameters"] == {"deploy": False, "shards": 1}
    assert data["pipeline_values"]["pipeline.git.tag"] == "v1"
    steps = data["workflows"][0]["jobs"][0]["job"]["steps"]
    assert [s["command"] for s in steps] == ["echo "]


def test_process_rejects_unknown_and_malformed_params(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(PARAMS)
    code, _, err = run("process", str(config), "--pipeline-param", "nope=1")
    assert code == 1
    assert "unexpected argument 'nope' for the pipeline" in err
    code, _, err = run("process", str(config), "--pipeline-param", "novalue")
    assert code == 2
    assert "is not KEY=VALUE" in err


def test_the_installed_command_exits_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("version: 2.1\njobs: [\n")
    entry = "from circlet.cli.main import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", entry, "config", "validate", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"{config}:3:1: error: invalid YAML:")
