"""``circlet tests glob|split|run``: the agent's logic behind click options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from circlet.cli.tests_cmd import command
from circlet.testing import agent


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("test_a.py", "test_b.py", "test_c.py", "pkg/test_d.py"):
        path = tmp_path / "tests" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("def test(): pass\n" * (1 + len(name)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIRCLE_NODE_INDEX", raising=False)
    monkeypatch.delenv("CIRCLE_NODE_TOTAL", raising=False)
    monkeypatch.delenv("CIRCLET_TIMINGS_FILE", raising=False)
    return tmp_path


def test_glob(project: Path) -> None:
    result = CliRunner().invoke(command, ["glob", "tests/**/*.py", "tests/{x,test_a}.py"])
    assert result.exit_code == 0
    assert result.output.split() == [
        "tests/pkg/test_d.py",
        "tests/test_a.py",
        "tests/test_b.py",
        "tests/test_c.py",
    ]


def test_split_reads_stdin_and_node_environment(project: Path) -> None:
    listing = "tests/test_a.py\ntests/test_b.py\ntests/test_c.py\ntests/pkg/test_d.py\n"
    outputs = []
    for index in range(3):
        result = CliRunner().invoke(
            command,
            ["split"],
            input=listing,
            env={"CIRCLE_NODE_INDEX": str(index), "CIRCLE_NODE_TOTAL": "3"},
        )
        assert result.exit_code == 0
        outputs.append(result.output.split())
    assert outputs == [
        ["tests/pkg/test_d.py", "tests/test_c.py"],
        ["tests/test_a.py"],
        ["tests/test_b.py"],
    ]


def test_split_by_timings_with_a_timings_file(project: Path) -> None:
    (project / "t.json").write_text(
        json.dumps({"classname": {"A": 10.0, "B": 4.0, "C": 3.0, "D": 2.0}})
    )
    (project / "names.txt").write_text("A B C D")
    result = CliRunner().invoke(
        command,
        [
            "split",
            "--split-by=timings",
            "--timings-file=t.json",
            "--index=1",
            "--total=2",
            "names.txt",
        ],
    )
    assert result.exit_code == 0
    assert result.output.split() == ["B", "C", "D"]


def test_split_by_filesize(project: Path) -> None:
    listing = "tests/test_a.py tests/pkg/test_d.py tests/test_b.py"
    result = CliRunner().invoke(
        command, ["split", "--split-by=filesize", "--index=0", "--total=2"], input=listing
    )
    assert result.exit_code == 0
    assert result.output.split() == ["tests/pkg/test_d.py"]  # the biggest file alone


def test_host_and_agent_agree(project: Path, tmp_path: Path) -> None:
    listing = "\n".join(f"spec/s{i}_spec.rb" for i in range(23))
    timings = project / "t.json"
    timings.write_text(
        json.dumps({"filename": {f"spec/s{i}_spec.rb": i % 7 + 0.5 for i in range(20)}})
    )
    args = ["tests", "split", "--split-by=timings", f"--timings-file={timings}", "--total=4"]
    for index in range(4):
        host = CliRunner().invoke(command, [*args[1:], f"--index={index}"], input=listing)
        script = subprocess.run(
            [sys.executable, "-I", agent.__file__, *args, f"--index={index}"],
            input=listing,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert host.exit_code == 0
        assert host.stdout == script.stdout
        assert host.stdout


def test_run_passes_this_nodes_share_on_stdin(project: Path) -> None:
    result = CliRunner().invoke(
        command,
        ["run", "--command", "cat > picked.txt", "--index", "0", "--total", "2"],
        input="z y x",
    )
    assert result.exit_code == 0, result.output
    assert (project / "picked.txt").read_text() == "x\nz\n"


def test_run_exit_code_is_the_commands(project: Path) -> None:
    result = CliRunner().invoke(command, ["run", "--command=exit 5"], input="a")
    assert result.exit_code == 5


def test_bad_values_are_usage_errors(project: Path) -> None:
    result = CliRunner().invoke(command, ["split", "--index=2", "--total=2"], input="a")
    assert result.exit_code == 2
    assert "--index must be between 0 and 1 (got 2)" in result.output
    result = CliRunner().invoke(
        command, ["split", "--split-by=timings", "--time-default=soon"], input="a"
    )
    assert result.exit_code == 2
    assert "invalid duration 'soon'" in result.output
    result = CliRunner().invoke(command, ["split", "--split-by=size"], input="a")
    assert result.exit_code == 2
    result = CliRunner().invoke(command, ["glob"])
    assert result.exit_code == 2
