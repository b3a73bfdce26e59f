"""Cache-key templates render as CircleCI renders them (a table), errors read like Go's."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from circlet.engine.cachekey import (
    CacheKeyError,
    ChecksumError,
    KeyValues,
    arch_string,
    checksum_text,
    goarch,
    render_key,
)

FIXTURES = (Path(__file__).parents[2] / ".." / "shared" / "fixtures").resolve()

FILES = {
    "Pipfile.lock": b'{"_meta": {}}\n',
    "/tmp/python-version": b"3.12.0\n",
    "/tmp/cci_pycache/lockfile": b'{"_meta": {}}\n',
}


def checksum(path: str) -> bytes:
    if path not in FILES:
        raise ChecksumError(f"open /home/circleci/project/{path}: no such file or directory")
    return hashlib.sha256(FILES[path]).digest()


VALUES = KeyValues(
    branch="master",
    revision="b5565da0c0ffee",
    build_num=77,
    environment={"CACHE_VERSION": "v3", "CIRCLE_SHA1": "b5565da0c0ffee", "EMPTY": ""},
    epoch=lambda: 1708861877,
    arch="arch1-linux-amd64-6_85",
)
LOCK = checksum_text(hashlib.sha256(FILES["Pipfile.lock"]).digest())
PYVER = "TuPL9BzJKZqNU+jwsDtquUrxVYO4LjhqEL1HqlHKDZU="  # from the seed's Restoring cache


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain-key", "plain-key"),
        ("v1-{{ .Branch }}", "v1-master"),
        ("v1-{{.Branch}}", "v1-master"),
        ("v1-{{   .Branch   }}", "v1-master"),
        ("{{ .Revision }}-{{ .BuildNum }}", "b5565da0c0ffee-77"),
        ("{{ .Environment.CACHE_VERSION }}-x", "v3-x"),
        ("{{ .Environment.CIRCLE_SHA1 }}", "b5565da0c0ffee"),
        ("{{ .Environment.MISSING }}", "<no value>"),
        ("[{{ .Environment.EMPTY }}]", "[]"),
        ('deps-{{ checksum "Pipfile.lock" }}', f"deps-{LOCK}"),
        ('{{checksum "Pipfile.lock"}}', LOCK),
        ("{{ checksum `Pipfile.lock` }}", LOCK),
        (
            'v1-cci_pycache-{{ .Branch }}-{{ checksum "/tmp/cci_pycache/lockfile" }}-'
            '{{ checksum "/tmp/python-version" }}-',
            f"v1-cci_pycache-master-{LOCK}-{PYVER}-",
        ),
        ("e-{{ epoch }}", "e-1708861877"),
        ("{{ arch }}-deps", "arch1-linux-amd64-6_85-deps"),
        ("a  {{- .Branch -}}  b", "amasterb"),
        ("a {{- .Branch }} b", "amaster b"),
        ('{{ "literal" }}', "literal"),
        ("{{/* a comment */}}x", "x"),
    ],
)
def test_render_table(template: str, expected: str) -> None:
    assert render_key(template, VALUES, checksum) == expected


def test_checksum_is_base64_sha256_of_the_contents_as_in_the_seed() -> None:
    # The seed's key holds checksum "/tmp/python-version" of "3.12.0\n" (python --version | cut).
    digest = hashlib.sha256(b"3.12.0\n").digest()
    assert checksum_text(digest) == PYVER
    assert base64.b64decode(PYVER) == digest


def test_checksum_never_contains_a_slash() -> None:
    # CircleCI writes base64's "/" as "_" (the seed's key has "…+ru_pMVX…").
    digest = next(
        hashlib.sha256(str(i).encode()).digest()
        for i in range(1000)
        if "/" in base64.b64encode(hashlib.sha256(str(i).encode()).digest()).decode()
    )
    text = checksum_text(digest)
    assert "/" not in text
    assert "_" in text
    assert base64.b64decode(text.replace("_", "/")) == digest


def test_oc_lettings_lockfile_checksum() -> None:
    data = (FIXTURES / "oc-lettings" / "Pipfile.lock").read_bytes()
    key = render_key(
        '{{ checksum "Pipfile.lock" }}', VALUES, lambda _: hashlib.sha256(data).digest()
    )
    assert key == base64.b64encode(hashlib.sha256(data).digest()).decode().replace("/", "_")


def test_checksum_and_arch_are_not_computed_when_unused() -> None:
    calls: list[str] = []

    def arch() -> str:
        calls.append("arch")
        return "arch1-x"

    def ck(path: str) -> bytes:
        calls.append(path)
        return b""

    values = KeyValues(branch="b", arch=arch)
    assert render_key("v1-{{ .Branch }}", values, ck) == "v1-b"
    assert calls == []
    assert render_key("{{ arch }}", values, ck) == "arch1-x"
    assert calls == ["arch"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            'x-{{ checksum "nope.txt" }}',
            'template: cacheKey:1:5: executing "cacheKey" at '
            '<checksum "nope.txt">: error calling checksum: open '
            "/home/circleci/project/nope.txt: no such file or directory",
        ),
        ("{{ foo }}", 'template: cacheKey:1: function "foo" not defined'),
        ("v1-{{ .Brnch }}", "can't evaluate field Brnch"),
        ("{{ .Branch.X }}", "can't evaluate field X in type string"),
        ("{{ checksum }}", "wrong number of args for checksum: want 1 got 0"),
        ('{{ checksum "a" "b" }}', "wrong number of args for checksum: want 1 got 2"),
        ("{{ checksum 'Pipfile.lock' }}", "malformed character constant: 'Pipfile.lock'"),
        ("{{ epoch 1 }}", "wrong number of args for epoch: want 0 got 1"),
        ("v1-{{ .Branch", "unclosed action"),
        ("{{ .Branch | printf }}", "unsupported cache key template"),
        ("{{ }}", "missing value for command"),
    ],
)
def test_errors_read_like_go_templates(template: str, message: str) -> None:
    with pytest.raises(CacheKeyError) as info:
        render_key(template, VALUES, checksum)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_error_position_counts_lines() -> None:
    with pytest.raises(CacheKeyError, match=r"cacheKey:2:5: "):
        render_key('a\nb-{{ checksum "zz" }}', VALUES, checksum)


@pytest.mark.parametrize(
    ("system", "machine", "cpuinfo", "expected"),
    [
        (
            "Linux",
            "x86_64",
            "cpu family\t: 6\nmodel\t\t: 85\nmodel name\t: Xeon",
            "arch1-linux-amd64-6_85",
        ),
        ("Linux", "x86_64", "model\t\t: 106\ncpu family\t: 6\n", "arch1-linux-amd64-6_106"),
        ("Linux", "aarch64", "processor\t: 0\nBogoMIPS\t: 50.00\n", "arch1-linux-arm64-0_0"),
        ("Darwin", "arm64", "", "arch1-darwin-arm64-0_0"),
    ],
)
def test_arch_string(system: str, machine: str, cpuinfo: str, expected: str) -> None:
    assert arch_string(system, machine, cpuinfo) == expected


def test_goarch_names() -> None:
    assert goarch("x86_64") == "amd64"
    assert goarch("i686") == "386"
    assert goarch("mips") == "mips"


def test_default_arch_is_this_machines() -> None:
    key = render_key("{{ arch }}", KeyValues(), checksum)
    assert re.fullmatch(r"arch1-[a-z]+-[a-z0-9]+-\d+_\d+", key)
