"""Orb resolution: local orb folders, bundled orbs, the registry cache and registry."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from circlet.config.orbs import (
    BUNDLED_ORBS,
    OrbNotFound,
    OrbSourceError,
    bundled_orb_text,
    pack_orb_source,
    parse_orb_ref,
    resolve_orb,
)

REVISION = "dev:<<pipeline.git.revision>>"
PACKED = "version: 2.1\ndescription: {}\ncommands:\n  hello:\n    steps: [{{run: echo {}}}]\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- references ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("circleci/python@2.1.1", ("circleci", "python", "2.1.1")),
        ("circleci/node@5", ("circleci", "node", "5")),
        ("circleci/node@5.1", ("circleci", "node", "5.1")),
        ("my_org/aws-cli@volatile", ("my_org", "aws-cli", "volatile")),
        ("circleci/python@dev:alpha", ("circleci", "python", "dev:alpha")),
        ("circleci/python@dev:<<pipeline.git.revision>>", ("circleci", "python", REVISION)),
    ],
)
def test_parse_orb_ref_accepts_circleci_versions(ref: str, expected: tuple[str, str, str]) -> None:
    assert parse_orb_ref(ref) == expected


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("circleci/python", "has no version"),
        ("python@2.1.1", "has no namespace"),
        ("circleci/python@2.x", "invalid version '2.x'"),
        ("circleci/python@1.2.3.4", "invalid version"),
        ("circleci/python@", "invalid version ''"),
        ("circle ci/python@1.0.0", "invalid namespace 'circle ci'"),
        ("circleci/../x@1.0.0", "invalid name '../x'"),
        ("circleci/python@dev:", "invalid version 'dev:'"),
        ("", "empty"),
    ],
)
def test_parse_orb_ref_rejects_bad_refs_with_the_reason(ref: str, says: str) -> None:
    with pytest.raises(ValueError, match=r"orb reference") as info:
        parse_orb_ref(ref)
    assert says in str(info.value)
    assert "\n" not in str(info.value)


def test_resolve_orb_rejects_a_bad_ref_before_looking_anywhere(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no version"):
        resolve_orb("circleci/python", orb_dirs=[tmp_path])


# --- local orb folders --------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    ["acme/greet@1.2.3.yml", "acme/greet@1.2.3/orb.yml", "acme/greet/orb.yml"],
)
def test_each_packed_layout_of_an_orb_dir_resolves(tmp_path: Path, layout: str) -> None:
    path = write(tmp_path / layout, PACKED.format(layout, "hi"))
    found = resolve_orb("acme/greet@1.2.3", orb_dirs=[tmp_path])
    assert found.text == path.read_text()
    assert found.origin == str(path)
    assert (found.ref, found.bundled, found.emulates) == ("acme/greet@1.2.3", False, None)


def test_exact_version_beats_unversioned_in_one_dir(tmp_path: Path) -> None:
    write(tmp_path / "acme/greet/orb.yml", PACKED.format("any", "any"))
    exact = write(tmp_path / "acme/greet@2.0.0/orb.yml", PACKED.format("exact", "two"))
    assert resolve_orb("acme/greet@2.0.0", orb_dirs=[tmp_path]).origin == str(exact)
    # another version falls back to the unversioned orb
    other = resolve_orb("acme/greet@3.0.0", orb_dirs=[tmp_path])
    assert other.origin == str(tmp_path / "acme/greet/orb.yml")


def test_exact_file_beats_exact_folder(tmp_path: Path) -> None:
    write(tmp_path / "acme/greet@1.0.0/orb.yml", PACKED.format("folder", "x"))
    file = write(tmp_path / "acme/greet@1.0.0.yml", PACKED.format("file", "x"))
    assert resolve_orb("acme/greet@1.0.0", orb_dirs=[tmp_path]).origin == str(file)


def test_orb_dirs_are_tried_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write(second / "acme/greet@1.0.0.yml", PACKED.format("second", "x"))
    assert resolve_orb("acme/greet@1.0.0", orb_dirs=[first, second]).origin.startswith(str(second))
    write(first / "acme/greet/orb.yml", PACKED.format("first", "x"))
    # the first folder that has the orb wins, even with an unversioned one
    assert resolve_orb("acme/greet@1.0.0", orb_dirs=[first, second]).origin.startswith(str(first))


def test_orb_dir_beats_bundled_orb(tmp_path: Path) -> None:
    local = write(tmp_path / "circleci/python@2.1.1.yml", PACKED.format("mine", "mine"))
    found = resolve_orb("circleci/python@2.1.1", orb_dirs=[tmp_path])
    assert (found.origin, found.bundled, found.emulates) == (str(local), False, None)
    assert "mine" in found.text


def test_orb_dir_tilde_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path / "orbs/acme/greet/orb.yml", PACKED.format("home", "x"))
    found = resolve_orb("acme/greet@1.0.0", orb_dirs=[Path("~/orbs")])
    assert found.origin == str(tmp_path / "orbs/acme/greet/orb.yml")


# --- orb-tools source layouts -------------------------------------------------------


def make_source_tree(src: Path) -> None:
    write(src / "@orb.yml", "version: 2.1\ndescription: Greets.\ndisplay:\n  home_url: https://x\n")
    write(
        src / "commands/greet.yml",
        "description: Say hello.\nparameters:\n  to: {type: string, default: world}\n"
        "steps:\n  - run:\n      name: Greet\n      environment:\n        TO: << parameters.to >>\n"
        "      command: <<include(scripts/greet.sh)>>\n",
    )
    write(src / "jobs/hello.yml", "executor: default\nsteps:\n  - greet\n")
    write(
        src / "executors/default.yml",
        "parameters:\n  tag: {type: string, default: '3.11'}\n"
        "docker:\n  - image: cimg/python:<< parameters.tag >>\n",
    )
    write(src / "examples/use.yml", "description: Use it.\nusage:\n  version: 2.1\n")
    write(src / "scripts/greet.sh", 'cat <<EOF\nhello "$TO"\nEOF\n')
    write(src / "scripts/not-a-key.yml", "ignored: true\n")
    write(src / "commands/.hidden.yml", "ignored: true\n")
    write(src / "commands/README.md", "# not yaml\n")


def test_pack_orb_source_builds_the_packed_orb_and_inlines_scripts(tmp_path: Path) -> None:
    make_source_tree(tmp_path / "src")
    packed = yaml.safe_load(pack_orb_source(tmp_path / "src"))
    assert packed["version"] == 2.1
    assert packed["display"] == {"home_url": "https://x"}
    assert list(packed) == [
        *("version", "description", "display"),
        *("commands", "executors", "jobs", "examples"),
    ]
    assert list(packed["commands"]) == ["greet"]
    run = packed["commands"]["greet"]["steps"][0]["run"]
    # the script's own `<<` is escaped so that it is not read as a parameter
    assert run["command"] == 'cat \\<<EOF\nhello "$TO"\nEOF\n'
    assert run["environment"] == {"TO": "<< parameters.to >>"}
    image = "cimg/python:<< parameters.tag >>"
    assert packed["executors"]["default"]["docker"] == [{"image": image}]
    assert packed["jobs"]["hello"]["steps"] == ["greet"]
    assert packed["examples"]["use"]["description"] == "Use it."


def test_pack_orb_source_accepts_blanks_inside_the_include(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "@orb.yml", "version: 2.1\n")
    write(src / "commands/a.yml", "steps:\n  - run: << include(scripts/a.sh) >>\n")
    write(src / "scripts/a.sh", "echo a\n")
    assert yaml.safe_load(pack_orb_source(src))["commands"]["a"]["steps"] == [{"run": "echo a\n"}]


def test_source_layout_in_orb_dir_is_packed_on_resolve(tmp_path: Path) -> None:
    make_source_tree(tmp_path / "acme/greet/src")
    found = resolve_orb("acme/greet@0.1.0", orb_dirs=[tmp_path])
    assert found.origin == str(tmp_path / "acme/greet/src")
    assert found.text == pack_orb_source(tmp_path / "acme/greet/src")
    assert "hello" in yaml.safe_load(found.text)["jobs"]


def test_versioned_source_layout_beats_unversioned_packed_orb(tmp_path: Path) -> None:
    write(tmp_path / "acme/greet/orb.yml", PACKED.format("any", "x"))
    make_source_tree(tmp_path / "acme/greet@1.0.0/src")
    assert resolve_orb("acme/greet@1.0.0", orb_dirs=[tmp_path]).origin == str(
        tmp_path / "acme/greet@1.0.0/src"
    )


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("echo <<include(scripts/a.sh)>>", "entire string must be include statement"),
        ("<<include(scripts/a.sh)>> <<include(scripts/a.sh)>>", "multiple include statements"),
        ("<<include(scripts/missing.sh)>>", "could not open"),
        ("<<include(../outside.sh)>>", "escapes"),
    ],
)
def test_pack_orb_source_rejects_bad_includes(tmp_path: Path, command: str, says: str) -> None:
    src = tmp_path / "src"
    write(src / "@orb.yml", "version: 2.1\n")
    write(src / "commands/a.yml", f"steps:\n  - run: '{command}'\n")
    write(src / "scripts/a.sh", "echo a\n")
    write(tmp_path / "outside.sh", "echo out\n")
    with pytest.raises(OrbSourceError, match=says) as info:
        pack_orb_source(src)
    assert str(src / "commands/a.yml") in str(info.value)


def test_pack_orb_source_locates_yaml_errors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "@orb.yml", "version: 2.1\n")
    write(src / "jobs/broken.yml", "steps:\n  - run: [unclosed\n")
    with pytest.raises(OrbSourceError, match=r"jobs/broken\.yml:3:1: invalid YAML"):
        pack_orb_source(src)


def test_pack_orb_source_needs_orb_yml(tmp_path: Path) -> None:
    write(tmp_path / "src/commands/a.yml", "steps: []\n")
    with pytest.raises(OrbSourceError, match=r"@orb\.yml not found"):
        pack_orb_source(tmp_path / "src")


def test_pack_orb_source_needs_mappings(tmp_path: Path) -> None:
    write(tmp_path / "src/@orb.yml", "version: 2.1\n")
    write(tmp_path / "src/jobs/list.yml", "- a\n- b\n")
    with pytest.raises(OrbSourceError, match="expected a mapping, got a list"):
        pack_orb_source(tmp_path / "src")


# --- bundled orbs -------------------------------------------------------------------


def test_every_bundled_orb_file_is_declared_and_parses() -> None:
    folder = resources.files("circlet.config").joinpath("bundled_orbs")
    on_disk = {
        f"{ns.name}/{f.name.removesuffix('.yml')}"
        for ns in folder.iterdir()
        if ns.is_dir()
        for f in ns.iterdir()
        if f.name.endswith(".yml")
    }
    assert on_disk == set(BUNDLED_ORBS)
    for name in BUNDLED_ORBS:
        orb = yaml.safe_load(bundled_orb_text(name))
        assert orb["version"] == 2.1
        assert orb["commands"] or orb["jobs"]


@pytest.mark.parametrize("version", ["2.1.1", "1.2", "2", "volatile", "dev:abc"])
def test_any_version_of_a_bundled_orb_resolves_to_it(version: str) -> None:
    found = resolve_orb(f"circleci/python@{version}")
    assert found.bundled
    assert found.emulates == "2.1.1"
    assert found.origin == "bundled:circleci/python"
    assert found.ref == f"circleci/python@{version}"
    assert "install-packages" in yaml.safe_load(found.text)["commands"]


def test_bundled_orb_beats_registry_cache(tmp_path: Path) -> None:
    write(tmp_path / "circleci/python@2.1.1.yml", PACKED.format("cached", "x"))
    assert resolve_orb("circleci/python@2.1.1", cache_dir=tmp_path).bundled


# --- registry cache and registry ----------------------------------------------------


def test_registry_cache_hit(tmp_path: Path) -> None:
    cached = write(tmp_path / "cache/circleci/slack@4.12.5.yml", PACKED.format("slack", "x"))
    found = resolve_orb(
        "circleci/slack@4.12.5", orb_dirs=[tmp_path / "orbs"], cache_dir=tmp_path / "cache"
    )
    assert (found.origin, found.bundled, found.text) == (str(cached), False, cached.read_text())


def test_orb_dir_beats_registry_cache(tmp_path: Path) -> None:
    write(tmp_path / "cache/circleci/slack@4.12.5.yml", PACKED.format("cached", "x"))
    local = write(tmp_path / "orbs/circleci/slack/orb.yml", PACKED.format("local", "x"))
    found = resolve_orb(
        "circleci/slack@4.12.5", orb_dirs=[tmp_path / "orbs"], cache_dir=tmp_path / "cache"
    )
    assert found.origin == str(local)


def test_not_found_names_every_place_in_order(tmp_path: Path) -> None:
    one, two, cache = tmp_path / "one", tmp_path / "two", tmp_path / "cache"
    with pytest.raises(OrbNotFound) as info:
        resolve_orb("circleci/slack@4.12.5", orb_dirs=[one, two], cache_dir=cache)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("orb circleci/slack@4.12.5 not found; looked in: ")
    expected_in_order = [
        f"orb dir {one} (circleci/slack@4.12.5.yml, circleci/slack@4.12.5/orb.yml, "
        "circleci/slack@4.12.5/src/, circleci/slack/orb.yml, circleci/slack/src/)",
        f"orb dir {two} (",
        "circlet's bundled orbs (circleci/docker, circleci/node, circleci/python)",
        f"registry cache {cache / 'circleci/slack@4.12.5.yml'}",
        "CircleCI orb registry (skipped: network not allowed)",
    ]
    positions = [message.index(part) for part in expected_in_order]
    assert positions == sorted(positions)
    assert info.value.ref == "circleci/slack@4.12.5"
    assert len(info.value.places) == 5


def test_not_found_without_cache_dir_says_so() -> None:
    with pytest.raises(OrbNotFound, match=r"registry cache \(none configured\)"):
        resolve_orb("circleci/slack@4.12.5")


class _Registry:
    """A GraphQL endpoint on localhost answering orbVersion queries from a dict."""

    def __init__(self, orbs: dict[str, str]) -> None:
        self.orbs = orbs
        self.requests: list[dict[str, Any]] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                registry.requests.append(body)
                source = registry.orbs.get(body["variables"]["orbVersionRef"])
                answer = {"data": {"orbVersion": {"source": source} if source else None}}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/graphql-unauthenticated"


@pytest.fixture
def registry() -> Iterator[_Registry]:
    reg = _Registry({"circleci/slack@4.12.5": PACKED.format("from registry", "x")})
    thread = threading.Thread(target=reg.server.serve_forever, daemon=True)
    thread.start()
    yield reg
    reg.server.shutdown()
    reg.server.server_close()
    thread.join()


def test_registry_fetch_is_written_to_the_cache(tmp_path: Path, registry: _Registry) -> None:
    cache = tmp_path / "cache"
    found = resolve_orb(
        "circleci/slack@4.12.5", cache_dir=cache, allow_network=True, registry_url=registry.url
    )
    cached = cache / "circleci/slack@4.12.5.yml"
    assert found.origin == str(cached)
    assert cached.read_text() == found.text == registry.orbs["circleci/slack@4.12.5"]
    variables = [r["variables"] for r in registry.requests]
    assert variables == [{"orbVersionRef": "circleci/slack@4.12.5"}]
    assert "orbVersion(orbVersionRef: $orbVersionRef)" in registry.requests[0]["query"]
    assert [p.name for p in cached.parent.iterdir()] == ["slack@4.12.5.yml"]  # no temp files left
    # the second resolve is served by the cache, without asking the registry
    again = resolve_orb(
        "circleci/slack@4.12.5", cache_dir=cache, allow_network=True, registry_url=registry.url
    )
    assert again.text == found.text
    assert len(registry.requests) == 1


def test_registry_without_the_version_is_not_found(tmp_path: Path, registry: _Registry) -> None:
    no_such = r"orb registry http://127\.0\.0\.1:\d+/\S+ \(no such orb version\)"
    with pytest.raises(OrbNotFound, match=no_such):
        resolve_orb(
            "circleci/slack@9.9.9",
            cache_dir=tmp_path,
            allow_network=True,
            registry_url=registry.url,
        )
    assert not (tmp_path / "circleci").exists()


def test_unreachable_registry_is_not_found_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(OrbNotFound, match=r"orb registry http://127\.0\.0\.1:9/x \(failed: "):
        resolve_orb(
            "circleci/slack@4.12.5", allow_network=True, registry_url="http://127.0.0.1:9/x"
        )
