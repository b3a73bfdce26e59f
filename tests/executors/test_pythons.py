"""Which Python the host executor picks for a cimg/python image."""

from __future__ import annotations

from pathlib import Path

import pytest

from circlet.executors.pythons import Interpreter, choose, find_interpreters, requested_version


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("cimg/python:3.12.0", (3, 12, 0)),
        ("cimg/python:3.12", (3, 12)),
        ("cimg/python:3.11.4-browsers", (3, 11, 4)),
        ("circleci/python:3.7-node", (3, 7)),
        ("python:3.13-slim", (3, 13)),
        ("docker.io/cimg/python:3.10.1", (3, 10, 1)),
        ("localhost:5000/python:3.9", (3, 9)),
        ("python:3.12@sha256:abcdef", (3, 12)),
        ("cimg/node:20.1", None),
        ("cimg/python:latest", None),
        ("python", None),
        ("myorg/python:3.12", None),
    ],
)
def test_requested_version(image: str, expected: tuple[int, ...] | None) -> None:
    assert requested_version(image) == expected


CANDIDATES = [
    Interpreter(Path("/usr/bin/python3.11"), (3, 11, 2)),
    Interpreter(Path("/pyenv/3.11.7/bin/python3.11"), (3, 11, 7), Path("/pyenv/3.11.7/bin")),
    Interpreter(Path("/pyenv/3.9.18/bin/python3.9"), (3, 9, 18), Path("/pyenv/3.9.18/bin")),
    Interpreter(Path("/pyenv/3.13.0/bin/python3.13"), (3, 13, 0), Path("/pyenv/3.13.0/bin")),
]


@pytest.mark.parametrize(
    ("requested", "path", "exact"),
    [
        ((3, 11, 2), "/usr/bin/python3.11", True),  # the exact patch wins
        ((3, 11), "/pyenv/3.11.7/bin/python3.11", True),  # else the newest of the minor
        ((3, 11, 5), "/pyenv/3.11.7/bin/python3.11", False),
        ((3, 12), "/pyenv/3.13.0/bin/python3.13", False),  # 3.11 and 3.13 tie: newer
        ((3, 10), "/pyenv/3.11.7/bin/python3.11", False),  # 3.9 and 3.11 tie: newer
        ((3, 5), "/pyenv/3.9.18/bin/python3.9", False),
        ((3, 99), "/pyenv/3.13.0/bin/python3.13", False),
    ],
)
def test_choose(requested: tuple[int, ...], path: str, exact: bool) -> None:
    choice = choose(requested, CANDIDATES)
    assert choice.interpreter is not None
    assert str(choice.interpreter.path) == path
    assert choice.exact is exact


def test_describe_says_what_it_uses() -> None:
    assert (
        choose((3, 12, 0), CANDIDATES).describe("cimg/python:3.12.0")
        == "cimg/python:3.12.0 → no Python 3.12 here; using /pyenv/3.13.0/bin/python3.13 (3.13.0)"
    )
    assert (
        choose((3, 11), CANDIDATES).describe("cimg/python:3.11")
        == "cimg/python:3.11 → /pyenv/3.11.7/bin/python3.11 (3.11.7)"
    )
    assert choose((3, 11), []).describe("cimg/python:3.11") == (
        "cimg/python:3.11 → no Python 3.11 here, and no other Python found"
    )


def test_find_interpreters_reports_real_versions() -> None:
    found = find_interpreters()
    assert found, "this machine has at least one Python 3"
    for interp in found:
        assert interp.path.is_file()
        assert interp.version[0] == 3
        assert f"python{interp.version[0]}.{interp.version[1]}" in interp.path.name
