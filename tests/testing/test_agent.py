"""The ``circleci`` / ``circleci-agent`` script, run for real as an isolated subprocess."""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from circlet.testing import agent
from circlet.testing.agent import install_agent
from circlet.testing.split import split


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("bin")
    install_agent(target)
    return target


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for rel in ("tests/test_one.py", "tests/test_two.py", "tests/sub/test_three.py", "README"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("pass\n")
    return tmp_path


def run(
    bin_dir: Path,
    name: str,
    *args: str,
    cwd: Path,
    stdin: str = "",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed script as a job would: ``python3 -I`` and a bare environment."""
    base = {"PATH": os.environ["PATH"], "HOME": str(cwd)}
    return subprocess.run(
        [sys.executable, "-I", str(bin_dir / name), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
        check=False,
    )


def test_install_writes_two_executables_with_a_shebang(bin_dir: Path) -> None:
    for name in ("circleci", "circleci-agent"):
        path = bin_dir / name
        assert path.read_text().startswith("#!/usr/bin/env python3\n")
        assert path.stat().st_mode & stat.S_IXUSR
        assert path.read_bytes() == Path(agent.__file__).read_bytes()
    assert sorted(p.name for p in bin_dir.iterdir()) == ["circleci", "circleci-agent"]


def test_the_script_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(agent.__file__).read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            modules.add((node.module or "").split(".")[0])
    assert modules - {"__future__"} <= sys.stdlib_module_names, modules


def test_executable_runs_directly_through_its_shebang(bin_dir: Path, workdir: Path) -> None:
    proc = subprocess.run(
        [str(bin_dir / "circleci"), "tests", "glob", "tests/*.py"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "tests/test_one.py\ntests/test_two.py\n"


def test_glob_then_split_by_node_environment(bin_dir: Path, workdir: Path) -> None:
    listed = run(bin_dir, "circleci", "tests", "glob", "tests/**/*.py", cwd=workdir)
    assert listed.stdout.split() == [
        "tests/sub/test_three.py",
        "tests/test_one.py",
        "tests/test_two.py",
    ]
    shares = []
    for index in range(2):
        env = {"CIRCLE_NODE_INDEX": str(index), "CIRCLE_NODE_TOTAL": "2"}
        proc = run(bin_dir, "circleci", "tests", "split", cwd=workdir, stdin=listed.stdout, env=env)
        assert proc.returncode == 0, proc.stderr
        shares.append(proc.stdout.split())
    assert shares == [["tests/sub/test_three.py", "tests/test_two.py"], ["tests/test_one.py"]]
    # The host-side function gives the same answer: one implementation.
    items = listed.stdout.split()
    assert shares == [split(items, index=i, total=2) for i in range(2)]


def test_split_by_timings_reads_the_file_named_in_the_environment(
    bin_dir: Path, workdir: Path
) -> None:
    timings = workdir / "timings.json"
    timings.write_text(json.dumps({"filename": {"tests/test_one.py": 50, "tests/test_two.py": 20}}))
    listed = "tests/test_one.py\ntests/test_two.py\ntests/sub/test_three.py\n"
    env = {"CIRCLET_TIMINGS_FILE": str(timings), "CIRCLE_NODE_TOTAL": "2"}
    first = run(
        bin_dir,
        "circleci-agent",
        "tests",
        "split",
        "--split-by=timings",
        "--time-default=25s",
        "--index=0",
        cwd=workdir,
        stdin=listed,
        env=env,
    )
    second = run(
        bin_dir,
        "circleci-agent",
        "tests",
        "split",
        "--split-by",
        "timings",
        "--index",
        "1",
        "--time-default",
        "25s",
        cwd=workdir,
        stdin=listed,
        env=env,
    )
    assert first.stdout.split() == ["tests/test_one.py"]
    assert second.stdout.split() == ["tests/sub/test_three.py", "tests/test_two.py"]
    assert 'No timing found for "tests/sub/test_three.py"' in first.stderr


def test_split_without_timings_falls_back_like_circleci(bin_dir: Path, workdir: Path) -> None:
    proc = run(
        bin_dir,
        "circleci",
        "tests",
        "split",
        "--split-by=timings",
        cwd=workdir,
        stdin="b a",
        env={"CIRCLET_TIMINGS_FILE": str(workdir / "missing.json")},
    )
    assert proc.returncode == 0
    assert proc.stdout == "a\nb\n"
    assert "Falling back to weighting by name." in proc.stderr


def test_tests_run_pipes_the_share_into_the_command(bin_dir: Path, workdir: Path) -> None:
    proc = run(
        bin_dir,
        "circleci",
        "tests",
        "run",
        "--command=>picked.txt xargs echo; exit 4",
        "--verbose",
        "--index=0",
        "--total=2",
        cwd=workdir,
        stdin="t1\nt2\nt3\n",
    )
    assert proc.returncode == 4
    assert (workdir / "picked.txt").read_text() == "t1 t3\n"
    assert "Running 2 of 3 tests" in proc.stderr


def test_filter_failed_matches_files_and_classnames() -> None:
    items = ["tests/test_one.py", "./tests/test_two.py", "tests/sub/test_three.py", "pkg.Klass"]
    # file attribute, pytest's dotted classname (module and class), a Java-style classname
    assert agent.filter_failed(items, ["tests/test_one.py"]) == ["tests/test_one.py"]
    assert agent.filter_failed(items, ["tests.test_two"]) == ["./tests/test_two.py"]
    assert agent.filter_failed(items, ["tests.sub.test_three.TestX"]) == ["tests/sub/test_three.py"]
    assert agent.filter_failed(items, ["pkg.Klass", ""]) == ["pkg.Klass"]
    # a prefix of a module name is no match
    assert agent.filter_failed(["tests/test_on.py"], ["tests.test_one"]) == []
    assert agent.filter_failed(items, []) == []


def test_tests_run_in_a_rerun_runs_only_the_failed_tests(bin_dir: Path, workdir: Path) -> None:
    failed = workdir / "rerun.txt"
    failed.write_text("tests/sub/test_three.py\ntests.sub.test_three\n")
    stdin = "tests/test_one.py\ntests/test_two.py\ntests/sub/test_three.py\n"
    env = {agent.RERUN_TESTS_FILE_ENV: str(failed)}
    command = "--command=>picked.txt xargs echo"
    proc = run(bin_dir, "circleci", "tests", "run", command, cwd=workdir, stdin=stdin, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "picked.txt").read_text() == "tests/sub/test_three.py\n"
    assert "1 of 3 tests given failed before" in proc.stderr

    # nothing given failed before: nothing runs, exit 0 and a note
    (workdir / "picked.txt").unlink()
    failed.write_text("tests/elsewhere.py\n")
    proc = run(bin_dir, "circleci", "tests", "run", command, cwd=workdir, stdin=stdin, env=env)
    assert proc.returncode == 0
    assert not (workdir / "picked.txt").exists()
    assert "none of the 3 tests given failed" in proc.stdout

    # the variable names no file (not a rerun): everything runs
    env = {agent.RERUN_TESTS_FILE_ENV: str(workdir / "missing.txt")}
    proc = run(bin_dir, "circleci", "tests", "run", command, cwd=workdir, stdin=stdin, env=env)
    assert proc.returncode == 0
    assert sorted((workdir / "picked.txt").read_text().split()) == sorted(stdin.split())


def test_step_halt_touches_the_halt_file(bin_dir: Path, workdir: Path) -> None:
    halt = workdir / "state" / "halt"
    for name in ("circleci-agent", "circleci"):
        halt.unlink(missing_ok=True)
        proc = run(bin_dir, name, "step", "halt", cwd=workdir, env={"CIRCLET_HALT_FILE": str(halt)})
        assert proc.returncode == 0, proc.stderr
        assert halt.exists()


def test_expected_errors_are_one_line_and_exit_2(bin_dir: Path, workdir: Path) -> None:
    no_env = run(bin_dir, "circleci-agent", "step", "halt", cwd=workdir)
    assert no_env.returncode == 2
    assert no_env.stderr.strip() == (
        "circleci-agent: error: step halt: CIRCLET_HALT_FILE is not set (not inside a circlet job?)"
    )
    bad_index = run(
        bin_dir, "circleci", "tests", "split", "--index=5", "--total=2", cwd=workdir, stdin="a"
    )
    assert bad_index.returncode == 2
    assert "--index must be between 0 and 1 (got 5)" in bad_index.stderr
    unknown = run(bin_dir, "circleci", "config", "validate", cwd=workdir)
    assert unknown.returncode == 2
    for proc in (no_env, bad_index, unknown):
        assert "Traceback" not in proc.stderr


def test_broken_pipe_is_quiet(bin_dir: Path, workdir: Path) -> None:
    for i in range(3000):
        (workdir / "tests" / f"test_gen_{i}.py").write_text("")
    proc = subprocess.run(
        f"{sys.executable} -I {bin_dir / 'circleci'} tests glob 'tests/*.py' | head -1",
        shell=True,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.stdout == "tests/test_gen_0.py\n"
    assert proc.stderr == ""
