"""``circlet cache ls|rm|prune`` against a real store under $CIRCLET_HOME."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from circlet.cli.cache_cmd import parse_age, parse_size
from circlet.cli.main import cli
from circlet.store.blobs import LocalBlobStore


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CIRCLET_HOME", str(home))
    project = tmp_path / "app"
    project.mkdir()
    monkeypatch.chdir(project)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (src / "b.txt").write_text("hello")
    with LocalBlobStore(home / "blobs") as store:
        store.put_tree("cache/local/app", "v1-deps-abc", src)
        time.sleep(0.01)
        store.put_tree("workspace/wf-1", "job-a", src, paths=["b.txt"])
    return home


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["cache", *args])
    return result.exit_code, result.output


def test_ls_lists_keys_with_size_and_age(home: Path) -> None:
    code, out = run("ls")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "KEY", "CREATED", "AGE", "SIZE", "FILES"]
    assert "cache/local/app" in lines[1]
    assert "v1-deps-abc" in lines[1]
    assert "3.0 MiB" in lines[1]
    assert lines[1].split()[-1] == "2"
    assert "s ago" in lines[1]
    assert "job-a" in lines[2]
    code, out = run("ls", "--namespace", "workspace/wf-1")
    assert code == 0
    assert "job-a" in out
    assert "v1-deps-abc" not in out
    assert run("ls", "-n", "cache/none") == (0, "No caches in cache/none.\n")


def test_rm_with_and_without_namespace(home: Path) -> None:
    assert run("rm", "workspace/wf-1", "job-a") == (0, "Removed job-a from workspace/wf-1.\n")
    # One argument: a key of this project's caches (the folder is named "app").
    assert run("rm", "v1-deps-abc") == (0, "Removed v1-deps-abc from cache/local/app.\n")
    assert run("ls") == (0, "No caches.\n")
    code, out = run("rm", "v1-deps-abc")
    assert code == 2
    assert out.strip() == "Error: no cache 'v1-deps-abc' in cache/local/app"


def test_prune_by_size_and_age(home: Path) -> None:
    code, out = run("prune", "--max-size", "1M")
    assert code == 0
    assert "Removed v1-deps-abc from cache/local/app." in out
    assert out.splitlines()[-1].startswith("Freed 3.0 MiB (1 trees")
    code, out = run("prune", "--max-age", "0s")
    assert code == 0
    assert "Removed job-a from workspace/wf-1." in out
    with LocalBlobStore(home / "blobs") as store:
        assert store.list_trees() == []
        assert store.stored_bytes() == 0


def test_prune_defaults_keep_recent_caches(home: Path) -> None:
    code, out = run("prune")
    assert code == 0
    assert out == "Freed 0 B (0 trees, 0 chunks, 0 packs).\n"
    assert "v1-deps-abc" in run("ls")[1]


def test_bad_sizes_and_ages_are_usage_errors(home: Path) -> None:
    code, out = run("prune", "--max-size", "lots")
    assert code == 2
    assert "size 'lots' is not like 10G" in out
    code, out = run("prune", "--max-age", "yesterday")
    assert code == 2
    assert "age 'yesterday' is not like 30d" in out


def test_parsers() -> None:
    assert parse_size("10G") == 10 << 30
    assert parse_size("1.5GiB") == 3 << 29
    assert parse_size("4096") == 4096
    assert parse_size("500m") == 500 << 20
    assert parse_age("30d") == 30
    assert parse_age("12h") == 0.5
    assert parse_age("7") == 7
    assert parse_age("2w") == 14
