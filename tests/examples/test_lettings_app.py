"""Fast, offline checks of the bundled example project examples/lettings.

The e2e tests run the example's pipeline for real (Docker and host); these
catch the cheap mistakes first: a config that lost a job or a `requires`, a
Pipfile edited without re-locking (the orb's plain `pipenv install` would then
re-lock over the network), or generated files that a working-tree checkout
would copy into the job.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lettings"
IMAGE = "cimg/python:3.11"


def _config() -> dict[str, Any]:
    loaded = yaml.safe_load((EXAMPLE / ".circleci" / "config.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _steps(job: str) -> list[Any]:
    steps = _config()["jobs"][job]["steps"]
    assert isinstance(steps, list)
    return steps


def _step(job: str, name: str) -> dict[str, Any]:
    """The arguments of the first step called `name` in `job`."""
    for step in _steps(job):
        if isinstance(step, dict) and name in step:
            args = step[name]
            assert isinstance(args, dict)
            return args
    raise AssertionError(f"job {job} has no {name} step")


def _pipenv_verify(pipfile: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PIPENV_PIPFILE": str(pipfile),
        "PIPENV_VERBOSITY": "-1",
        "PIPENV_IGNORE_VIRTUALENVS": "1",
        "PIPENV_YES": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "pipenv", "verify"],
        cwd=pipfile.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_config_declares_the_seed_shaped_workflow() -> None:
    config = _config()
    assert config["version"] == 2.1
    assert config["orbs"] == {"python": "circleci/python@2.1.1"}
    jobs = config["jobs"]
    assert set(jobs) == {"run_test", "flake8_test", "report"}
    for job in jobs.values():
        assert job["docker"] == [{"image": IMAGE}]
    workflow_jobs = config["workflows"]["main"]["jobs"]
    assert workflow_jobs[:2] == ["run_test", "flake8_test"]
    assert workflow_jobs[2] == {"report": {"requires": ["run_test", "flake8_test"]}}


def test_run_test_installs_with_pipenv_and_keeps_its_results() -> None:
    assert _steps("run_test")[0] == "checkout"
    assert _step("run_test", "python/install-packages") == {"pkg-manager": "pipenv"}
    run = _step("run_test", "run")
    assert run["name"] == "Run tests"
    assert run["command"] == "mkdir test-results && pipenv run pytest"
    assert _step("run_test", "store_test_results") == {"path": "test-results"}
    assert _step("run_test", "store_artifacts") == {"path": "test-results", "destination": "tr1"}
    assert _step("run_test", "persist_to_workspace") == {"root": "~/project", "paths": ["."]}


def test_flake8_and_report_jobs() -> None:
    commands = [s["run"]["command"] for s in _steps("flake8_test") if isinstance(s, dict)]
    assert commands[0].startswith("pip install --user ")
    assert "flake8==7." in commands[0]
    assert commands[-1].endswith("flake8")
    assert _step("report", "attach_workspace") == {"at": "~/project"}
    assert "test-results/junit.xml" in _step("report", "run")["command"]


def test_circlet_settings_map_the_image_to_the_local_build() -> None:
    settings = yaml.safe_load((EXAMPLE / ".circlet.yml").read_text())
    assert settings == {"images": {IMAGE: "circlet/cimg-python:3.11"}}


def test_pytest_and_flake8_settings() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(EXAMPLE / "setup.cfg")
    assert cfg["tool:pytest"]["DJANGO_SETTINGS_MODULE"] == "oc_lettings_site.settings"
    assert cfg["tool:pytest"]["addopts"] == "--junitxml=test-results/junit.xml"
    assert cfg["flake8"]["max-line-length"] == "99"
    assert "*/migrations/*" in cfg["flake8"]["exclude"]
    # flake8 runs on CircleCI with a newer checker than the author's editor;
    # long lines are the usual surprise.
    for source in EXAMPLE.rglob("*.py"):
        if "migrations" in source.parts:
            continue
        compile(source.read_text(), str(source), "exec")
        for number, line in enumerate(source.read_text().splitlines(), 1):
            assert len(line) <= 99, f"{source}:{number}: line longer than 99"


def test_pipfile_does_not_pin_a_python_minor() -> None:
    # The local image has 3.11; a pinned 3.12 would make `pipenv install --deploy` fail.
    pipfile = tomllib.loads((EXAMPLE / "Pipfile").read_text())
    assert "python_version" not in pipfile.get("requires", {})
    assert set(pipfile["packages"]) == {"django", "pytest", "pytest-django", "flake8"}


def test_lock_pins_every_package_with_hashes() -> None:
    lock = json.loads((EXAMPLE / "Pipfile.lock").read_text())
    default = lock["default"]
    assert {"django", "pytest", "pytest-django", "flake8"} <= set(default)
    for name, entry in default.items():
        assert entry["version"].startswith("=="), name
        assert entry["hashes"], name
    assert default["django"]["version"].startswith("==5.2.")


def test_lock_matches_the_pipfile() -> None:
    result = _pipenv_verify(EXAMPLE / "Pipfile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up-to-date" in result.stdout + result.stderr


def test_pipenv_verify_notices_an_edited_pipfile(tmp_path: Path) -> None:
    # Proves the check above can fail: the same lock against a changed Pipfile.
    shutil.copy(EXAMPLE / "Pipfile.lock", tmp_path / "Pipfile.lock")
    text = (EXAMPLE / "Pipfile").read_text()
    (tmp_path / "Pipfile").write_text(text.replace('django = "~=5.2"', 'django = "~=5.1"'))
    result = _pipenv_verify(tmp_path / "Pipfile")
    assert result.returncode != 0
    assert "out-of-date" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "generated",
    [
        "test-results/junit.xml",
        "oc-lettings-site.sqlite3",
        ".venv/bin/python",
        "lettings/__pycache__/models.cpython-311.pyc",
    ],
)
def test_generated_files_are_ignored_by_git(generated: str) -> None:
    # A working-tree checkout copies untracked-not-ignored files; a stale
    # test-results/ would make the job's `mkdir test-results` fail.
    result = subprocess.run(
        ["git", "check-ignore", "-q", str(EXAMPLE / generated)],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, f"{generated} is not ignored"


def test_migrations_are_part_of_the_example() -> None:
    for app in ("lettings", "profiles"):
        assert (EXAMPLE / app / "migrations" / "0001_initial.py").is_file()
