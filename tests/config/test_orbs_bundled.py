"""The bundled orbs: step names, cache keys, and their scripts run for real.

The compiler is tested elsewhere; here a deliberately small expander (parameter
defaults, `when` with and/or/not/equal) turns install-packages into its steps,
and the run steps are executed in order with `bash -eo pipefail -c`, as CircleCI
does, inside circlet/cimg-python:3.11.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from circlet.config.orbs import bundled_orb_text

IMAGE = "circlet/cimg-python:3.11"
CA = "/etc/ssl/certs/ca-certificates.crt"
REF = re.compile(r"<<\s*parameters\.([\w-]+)\s*>>")
INSTALL = "Install dependencies with"
RESTORE, SAVE = "Restoring cache", "Saving cache"  # CircleCI's names of unnamed cache steps


def orb(name: str = "python") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(bundled_orb_text(f"circleci/{name}"))
    return loaded


def substitute(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    if not isinstance(value, str):
        return value
    whole = REF.fullmatch(value.strip())
    if whole:
        return params[whole.group(1)]

    def text(match: re.Match[str]) -> str:
        v = params[match.group(1)]
        return str(v).lower() if isinstance(v, bool) else str(v)

    return REF.sub(text, value)


def truthy(condition: Any) -> bool:
    if isinstance(condition, dict):
        ((op, arg),) = condition.items()
        if op == "and":
            return all(truthy(c) for c in arg)
        if op == "or":
            return any(truthy(c) for c in arg)
        if op == "not":
            return not truthy(arg)
        if op == "equal":
            return all(a == arg[0] for a in arg)
        raise AssertionError(f"unexpected logic {op}")
    return condition not in (False, None, 0, "")


def expand(command: str, *, orb_name: str = "python", **given: Any) -> list[dict[str, Any]]:
    """An orb command → its flat list of steps, parameters applied (no nested commands)."""
    definition = orb(orb_name)["commands"][command]
    params = {name: spec.get("default") for name, spec in definition["parameters"].items()}
    unknown = set(given) - set(params)
    assert not unknown, f"{command} has no parameters {unknown}"
    params.update(given)
    return _flatten(substitute(definition["steps"], params))


def _flatten(steps: list[Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for step in steps:
        ((kind, body),) = step.items()
        if kind in ("when", "unless"):
            if truthy(body["condition"]) == (kind == "when"):
                result += _flatten(body["steps"])
        elif kind == "steps":
            result += _flatten(body)
        elif kind == "run":
            result.append({"name": body["name"], **body})
        elif kind == "restore_cache":
            result.append({"name": RESTORE, **body})
        elif kind == "save_cache":
            result.append({"name": SAVE, **body})
        elif kind == "attach_workspace":
            result.append({"name": "Attaching Workspace", **body})
        else:
            raise AssertionError(f"unexpected step {kind}")
    return result


def names(steps: list[dict[str, Any]]) -> list[str]:
    return [s["name"] for s in steps]


# --- shape --------------------------------------------------------------------------


def test_pipenv_steps_are_named_as_on_circleci() -> None:
    assert names(expand("install-packages", **{"pkg-manager": "pipenv"})) == [
        "Link lockfile",
        "Save python version",
        RESTORE,
        "Move restored cache",
        "Install dependencies with pipenv using project Pipfile or inline packages",
        "Copy to cache directory",
        SAVE,
    ]


@pytest.mark.parametrize(
    ("given", "install_step"),
    [
        ({"pkg-manager": "pip"}, "Install dependencies with pip using project requirements.txt"),
        (
            {"pkg-manager": "pip", "pip-dependency-file": "dev-requirements.txt"},
            "Install dependencies with pip using project dev-requirements.txt",
        ),
        ({"pkg-manager": "pip-dist"}, "Install dependencies with pip using project setup.py"),
        ({"pkg-manager": "poetry"}, f"{INSTALL} poetry using project pyproject.toml"),
        ({"pkg-manager": "uv"}, f"{INSTALL} uv using project pyproject.toml"),
        ({}, "Install dependencies with automatically determined project package manager"),
    ],
)
def test_each_pkg_manager_has_one_install_step(given: dict[str, Any], install_step: str) -> None:
    steps = names(expand("install-packages", **given))
    assert steps[4:] == [install_step, "Copy to cache directory", SAVE]


def test_pip_without_dependency_file_installs_args_only() -> None:
    steps = expand(
        "install-packages", **{"pkg-manager": "pip", "pip-dependency-file": "", "args": "pytest"}
    )
    install = [s for s in steps if s["name"].startswith("Install")]
    assert [s["command"].strip() for s in install] == ["pip install pytest"]
    # neither a file nor args: nothing to install
    bare = expand("install-packages", **{"pkg-manager": "pip", "pip-dependency-file": ""})
    assert not [s for s in bare if s["name"].startswith("Install")]


def test_no_caches_means_install_only() -> None:
    steps = expand(
        "install-packages", **{"pkg-manager": "pipenv", "pypi-cache": False, "venv-cache": False}
    )
    assert names(steps) == [
        "Install dependencies with pipenv using project Pipfile or inline packages"
    ]


def test_pre_install_steps_run_after_the_restore() -> None:
    extra = [{"run": {"name": "Before install", "command": "true"}}]
    steps = names(expand("install-packages", **{"pkg-manager": "pip", "pre-install-steps": extra}))
    assert steps.index("Before install") == steps.index("Move restored cache") + 1


LOCK = '{{ checksum "/tmp/cci_pycache/lockfile" }}'
PY = '{{ checksum "/tmp/python-version" }}'


@pytest.mark.parametrize(
    ("branch", "python", "key"),
    [
        (True, True, f"-pypi-v1-{{{{ .Branch }}}}-{LOCK}-{PY}-"),
        (True, False, f"-pypi-v1-{{{{ .Branch }}}}-{LOCK}-"),
        (False, True, f"-pypi-v1-{LOCK}-{PY}-"),
        (False, False, f"-pypi-v1-{LOCK}-"),
    ],
)
def test_cache_keys_use_circleci_templates(branch: bool, python: bool, key: str) -> None:
    steps = expand(
        "install-packages",
        **{"include-branch-in-cache-key": branch, "include-python-in-cache-key": python},
    )
    restores = [s for s in steps if s["name"] == RESTORE]
    saves = [s for s in steps if s["name"] == SAVE]
    assert [r["keys"] for r in restores] == [[key]]
    assert [(s["key"], s["paths"]) for s in saves] == [(key, ["/tmp/cci_pycache"])]


def test_cache_version_is_in_the_key() -> None:
    steps = expand("install-packages", **{"cache-version": "v7"})
    assert next(s for s in steps if s["name"] == RESTORE)["keys"][0].startswith("-pypi-v7-")


def test_test_job_and_default_executor_follow_2_1_1() -> None:
    python = orb()
    executor = python["executors"]["default"]
    assert executor["parameters"]["tag"]["default"] == "3.8"
    assert executor["docker"] == [{"image": "cimg/python:<< parameters.tag >>"}]
    job = python["jobs"]["test"]
    for param in (
        "pkg-manager",
        "test-tool",
        "args",
        "test-tool-args",
        "app-dir",
        "version",
        "pip-dependency-file",
        "setup-file-path",
        "module-src-dir",
        "fail-if-missing-tool",
        "include-branch-in-cache-key",
        "cache-version",
    ):
        assert param in job["parameters"], param
    assert job["parameters"]["test-tool"]["enum"] == ["pytest", "unittest"]
    assert job["executor"] == {"name": "default", "tag": "<< parameters.version >>"}
    install = next(s["install-packages"] for s in job["steps"] if "install-packages" in s)
    command_params = python["commands"]["install-packages"]["parameters"]
    assert set(install) <= set(command_params)


# --- the scripts, for real ----------------------------------------------------------


def driver(steps: list[dict[str, Any]], base: str = "$HOME/project") -> str:
    """A bash script running each run step as CircleCI would (cd, env, bash -eo pipefail)."""
    lines = ["set -e"]
    for step in steps:
        if "command" not in step:
            continue  # cache steps are the engine's; the test moves /tmp/cci_pycache itself
        wd = step.get("working_directory", ".").replace("~", "$HOME", 1)
        env = " ".join(
            f"{k}={shlex.quote(str(v).lower() if isinstance(v, bool) else str(v))}"
            for k, v in (step.get("environment") or {}).items()
        )
        lines.append(f"echo {shlex.quote('=== ' + step['name'])}")
        lines.append(
            f'(cd "{base}" && cd "{wd}" && env {env} bash -eo pipefail -c '
            f"{shlex.quote(step['command'])})"
        )
    return "\n".join(lines) + "\n"


def run_in_image(tmp: Path, script: str, *mounts: str) -> subprocess.CompletedProcess[str]:
    (tmp / "script.sh").write_text(script)
    tmp.chmod(0o755)  # pytest makes it 0700; the container user is circleci
    args = [
        "docker",
        "run",
        "--rm",
        "-v",
        f"{CA}:{CA}:ro",
        "-v",
        f"{tmp}:/work:ro",
        "-e",
        f"PIP_CERT={CA}",
        "-e",
        f"REQUESTS_CA_BUNDLE={CA}",
        "-e",
        f"SSL_CERT_FILE={CA}",
        "-e",
        "CI=true",
        "-e",
        "PIP_DISABLE_PIP_VERSION_CHECK=1",
    ]
    for mount in mounts:
        args += ["-v", mount]
    proc = subprocess.run(
        [*args, IMAGE, "bash", "/work/script.sh"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    last = proc.stdout.strip().splitlines()[-1]
    loaded: dict[str, Any] = json.loads(last)
    return loaded


# Copies the project into a writable ~/project (the image's is root-owned), then
# hands over to the steps.
SETUP = "sudo cp -r /work/project/. ~/project/ && sudo chown -R circleci: ~/project\n"
REPORT = r"""
python3 - <<'EOF'
import json, os
def ls(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else None
print(json.dumps({
    "lockfile": open("/tmp/cci_pycache/lockfile").read(),
    "python_version": open("/tmp/python-version").read(),
    "venv": ls("/tmp/cci_pycache/venv"),
    "pypi": ls("/tmp/cci_pycache/pypi"),
    "checked": open("/tmp/checked").read() if os.path.exists("/tmp/checked") else None,
}))
EOF
"""


def b64(path: str) -> str:
    import base64

    return base64.b64encode(path.encode()).decode().replace("/", "_").replace("+", "-")


@pytest.mark.docker
def test_pipenv_install_packages_runs_and_its_cache_round_trips(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pipfile").write_text(
        '[[source]]\nurl = "https://pypi.org/simple"\nverify_ssl = true\nname = "pypi"\n\n'
        '[packages]\nsix = "*"\n\n[requires]\npython_version = "3.11"\n'
    )
    cache = tmp_path / "cci_pycache"  # stands for what save_cache stores and restores
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    steps = expand("install-packages", **{"pkg-manager": "pipenv"})

    first = run_in_image(
        tmp_path,
        SETUP
        + "(cd ~/project && pipenv lock >/dev/null 2>&1)\n"
        + driver(steps)
        + 'pipenv run python -c "import six; print(six.__name__)" > /tmp/checked\n'
        + "sudo cp -a /tmp/cci_pycache/. /saved/\n"
        + REPORT,
        f"{cache}:/saved",
    )
    out = result(first)
    copied = "Copying /home/circleci/project/Pipfile.lock to /tmp/cci_pycache/lockfile"
    assert copied in first.stdout
    assert json.loads(out["lockfile"])["default"]["six"]["version"].startswith("==")
    assert re.fullmatch(r"3\.11\.\d+\n", out["python_version"])
    assert out["venv"] == [b64("/home/circleci/.local/share/virtualenvs")]
    # pipenv may leave no download cache behind; each path is copied or reported missing
    for path in ("/home/circleci/.cache/pip", "/home/circleci/.cache/pipenv"):
        copied = f"Copying {path} to /tmp/cci_pycache/pypi/{b64(path)}" in first.stdout
        assert copied == (b64(path) in out["pypi"])
        assert copied or f"Could not find {path}. Skipping..." in first.stdout
    assert out["checked"] == "six\n"

    # A fresh container with the saved cache restored at /tmp/cci_pycache: the
    # virtualenv is moved back into place before pipenv installs.
    second = run_in_image(
        tmp_path,
        SETUP
        + "sudo cp -a /saved/. /tmp/cci_pycache/ && sudo chown -R circleci: /tmp/cci_pycache\n"
        + driver(steps[:2])
        + driver(steps[3:4])  # Move restored cache
        + "ls ~/.local/share/virtualenvs | grep -q '^project-' && echo restored > /tmp/checked\n"
        + driver(steps[4:])
        + REPORT,
        f"{cache}:/saved:ro",
    )
    again = result(second)
    assert "Restoring /tmp/cci_pycache/venv/" in second.stdout
    assert "to /home/circleci/.local/share/virtualenvs" in second.stdout
    assert again["checked"] == "restored\n"
    assert "Cache directory already exists. Skipping..." in second.stdout
    assert again["lockfile"] == out["lockfile"]
    assert again["venv"] == []  # moved out; save_cache would find its key and skip


@pytest.mark.docker
def test_pip_install_packages_runs(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "requirements.txt").write_text("six\n")
    steps = expand("install-packages", **{"pkg-manager": "pip"})
    proc = run_in_image(
        tmp_path,
        SETUP
        + driver(steps)
        + 'python -c "import six; print(six.__name__)" > /tmp/checked\n'
        + REPORT,
    )
    out = result(proc)
    assert out["lockfile"] == "six\n"
    assert out["checked"] == "six\n"
    assert out["venv"] is None  # pip has no virtualenv to cache
    # pip installed six as a user package: ~/.local/lib is what must be cached
    assert b64("/home/circleci/.local/lib") in out["pypi"]
    assert set(out["pypi"]) <= {b64("/home/circleci/.cache/pip"), b64("/home/circleci/.local/lib")}
    assert "=== Install dependencies with pip using project requirements.txt" in proc.stdout


# --- node ---------------------------------------------------------------------------

NODE_KEY = 'node-deps-{{ arch }}-v1-{{ .Branch }}-{{ checksum "/tmp/node-project-package.json" }}-'


def test_node_install_packages_steps_and_keys() -> None:
    steps = expand("install-packages", orb_name="node")
    assert names(steps) == [
        "Checking for package.json",
        "Determine lockfile",
        RESTORE,
        "Installing NPM packages",
        SAVE,
        "Remove temporary links",
    ]
    lock = '{{ checksum "/tmp/node-project-lockfile" }}'
    assert steps[2]["keys"] == [NODE_KEY + lock, NODE_KEY, "node-deps-{{ arch }}-v1-{{ .Branch }}-"]
    assert (steps[4]["key"], steps[4]["paths"]) == (NODE_KEY + lock, ["~/.npm"])


@pytest.mark.parametrize(
    ("given", "paths"),
    [
        ({"pkg-manager": "yarn"}, ["./node_modules"]),
        ({"pkg-manager": "yarn-berry", "app-dir": "web"}, ["web/.yarn/cache"]),
        ({"pkg-manager": "yarn", "cache-path": "~/.cache/yarn"}, ["~/.cache/yarn"]),
    ],
)
def test_node_cache_paths_follow_the_package_manager(
    given: dict[str, Any], paths: list[str]
) -> None:
    steps = expand("install-packages", orb_name="node", **given)
    assert [s["paths"] for s in steps if s["name"] == SAVE] == [paths]
    assert "Installing YARN packages" in names(steps)


def test_node_without_branch_or_cache() -> None:
    no_branch = expand(
        "install-packages", orb_name="node", **{"include-branch-in-cache-key": False}
    )
    restore = next(s for s in no_branch if s["name"] == RESTORE)
    assert restore["keys"][-1] == "node-deps-{{ arch }}-v1-"
    no_cache = expand("install-packages", orb_name="node", **{"with-cache": False})
    assert names(no_cache) == ["Checking for package.json", "Installing NPM packages"]


def test_node_install_packages_runs_npm_ci_on_the_host(tmp_path: Path) -> None:
    project = tmp_path / "app"
    (project / "dep").mkdir(parents=True)
    (project / "dep/package.json").write_text('{"name": "dep", "version": "1.0.0"}')
    (project / "package.json").write_text(
        '{"name": "app", "version": "1.0.0", "dependencies": {"dep": "file:./dep"}}'
    )
    subprocess.run(
        ["npm", "install", "--package-lock-only", "--offline", "--no-audit", "--no-fund"],
        cwd=project,
        check=True,
        capture_output=True,
        timeout=120,
    )
    steps = expand("install-packages", orb_name="node", **{"app-dir": "app"})
    snapshot = 'cp /tmp/node-project-lockfile /tmp/node-project-package.json "$OUT"/\n'
    script = (
        driver(steps[:2], base=str(tmp_path)) + snapshot + driver(steps[2:], base=str(tmp_path))
    )
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "OUT": str(out),
            "npm_config_offline": "true",
            "npm_config_audit": "false",
            "npm_config_fund": "false",
        },
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Found package-lock.json file, assuming lockfile" in proc.stdout
    for copy, original in (("lockfile", "package-lock.json"), ("package.json", "package.json")):
        assert (out / f"node-project-{copy}").read_text() == (project / original).read_text()
    assert (project / "node_modules/dep/package.json").exists()
    assert not Path("/tmp/node-project-lockfile").exists()  # "Remove temporary links"


def test_node_install_packages_fails_without_package_json(tmp_path: Path) -> None:
    steps = expand("install-packages", orb_name="node")
    proc = subprocess.run(
        ["bash", "-c", driver(steps[:1], base=str(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "Unable to find your package.json file" in proc.stdout


# --- docker -------------------------------------------------------------------------


def test_docker_commands_have_the_2_3_0_parameter_names() -> None:
    commands = orb("docker")["commands"]
    assert {"docker-username", "docker-password", "registry"} <= set(
        commands["check"]["parameters"]
    )
    assert {
        "image",
        "tag",
        "extra_build_args",
        "cache_from",
        "dockerfile",
        "path",
        "docker-context",
        "registry",
        "step-name",
    } <= set(commands["build"]["parameters"])
    push = set(commands["push"]["parameters"])
    assert {"image", "tag", "registry", "digest-path", "step-name"} <= push
    assert "default" not in commands["build"]["parameters"]["image"]  # required, as upstream
    assert names(expand("check", orb_name="docker")) == [
        "Check environment variables",
        "Docker login",
    ]
    assert names(expand("push", orb_name="docker", image="x")) == ["Docker push"]


def test_docker_check_names_the_missing_variable(tmp_path: Path) -> None:
    steps = expand("check", orb_name="docker", **{"docker-username": "REG_USER"})
    proc = subprocess.run(
        ["bash", "-c", driver(steps[:1], base=str(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    assert "REG_USER is not set, will not be able to push image." in proc.stdout


@pytest.mark.docker
def test_docker_build_tags_every_tag_and_passes_extra_args(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx/Dockerfile.test").write_text(
        "FROM circlet/debian-python:bookworm AS base\nARG GREETING\n"
        'RUN echo "$GREETING" > /greeting\nFROM base AS final\n'
    )
    image = f"circlet-orb-test/build-{tmp_path.name.lower()}"
    steps = expand(
        "build",
        orb_name="docker",
        image=image,
        tag="t1,$EXTRA_TAG",
        path="ctx",
        dockerfile="Dockerfile.test",
        extra_build_args="--build-arg GREETING=hi --target final",
        **{"docker-context": "ctx"},
    )
    assert names(steps) == ["Docker build"]
    try:
        proc = subprocess.run(
            ["bash", "-c", driver(steps, base=str(tmp_path))],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"PATH": "/usr/bin:/bin", "EXTRA_TAG": "t2"},
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        greeting = subprocess.run(
            ["docker", "run", "--rm", f"{image}:t2", "cat", "/greeting"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert greeting.stdout == "hi\n"
        assert (
            subprocess.run(
                ["docker", "image", "inspect", f"{image}:t1"], capture_output=True, check=False
            ).returncode
            == 0
        )
    finally:
        subprocess.run(
            ["docker", "rmi", "-f", f"{image}:t1", f"{image}:t2"], capture_output=True, check=False
        )


def test_node_cache_key_names_the_lockfile(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text("{}")
    (tmp_path / "package-lock.json").write_text("npm")
    (tmp_path / "deps.lock").write_text("custom")
    steps = expand("install-packages", orb_name="node", **{"cache-key": "deps.lock"})
    script = driver(steps[1:2], base=str(tmp_path)) + "cat /tmp/node-project-lockfile\n"
    script += "rm -f /tmp/node-project-lockfile /tmp/node-project-package.json\n"
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("Found deps.lock file, assuming lockfile\ncustom")
