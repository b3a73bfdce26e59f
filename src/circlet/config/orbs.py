"""Orb resolution: turn ``circleci/python@2.1.1`` into the orb's packed YAML text.

Inline orbs are the compiler's business; it calls :func:`resolve_orb` for every
orb given by reference. Places are tried in this order, first hit wins:

1. each local orb folder in ``orb_dirs`` (``--orb-dir``, ``~/.circlet/orbs``);
   inside one folder an exact version beats an unversioned orb:
   ``NS/NAME@VERSION.yml``, ``NS/NAME@VERSION/orb.yml``, ``NS/NAME@VERSION/src/``,
   then ``NS/NAME/orb.yml``, ``NS/NAME/src/`` (orb-tools source layouts are
   packed on the fly, as ``circleci orb pack`` does);
2. circlet's bundled orbs, which answer for every version of their name;
3. the registry cache ``CACHE_DIR/NS/NAME@VERSION.yml``;
4. CircleCI's orb registry, only when the network is allowed (the answer is
   written to the registry cache).

The text is returned unparsed: the compiler's loader parses it so that its
problems carry file:line:col.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

REGISTRY_URL = "https://circleci.com/graphql-unauthenticated"
REGISTRY_TIMEOUT_SECONDS = 10.0

# Bundled orbs: name → the upstream version whose interface ours follows.
BUNDLED_ORBS: dict[str, str] = {
    "circleci/python": "2.1.1",
    "circleci/node": "5.1.0",
    "circleci/docker": "2.3.0",
}

# The folders of an orb-tools src/ tree that `circleci orb pack` turns into keys;
# anything else there (scripts/, tests/) is only reachable through <<include()>>.
PACKED_FOLDERS = ("commands", "executors", "jobs", "examples")

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_VERSION = re.compile(r"\d+(?:\.\d+){0,2}|volatile|dev:[^\s/@]+")
# The same pattern as the CircleCI CLI's: optional blanks, a path of word
# characters, dashes, dots and slashes.
_INCLUDE = re.compile(r"<<\s*include\(([-\w/.]+)\)\s*>>")

_QUERY = "query($orbVersionRef: String!) { orbVersion(orbVersionRef: $orbVersionRef) { source } }"


@dataclass(frozen=True)
class OrbSource:
    """An orb found by :func:`resolve_orb`."""

    ref: str  # as written, e.g. "circleci/python@2.1.1"
    text: str  # the packed orb YAML
    origin: str  # a file path, "bundled:NS/NAME", or the registry-cache file
    bundled: bool
    emulates: str | None  # bundled orbs: the upstream version we follow


class OrbError(Exception):
    """Base of the orb errors; ``str()`` is one line."""


class OrbNotFound(OrbError):  # noqa: N818 - the name is the compiler's contract
    """No place had the orb; the message names every place looked, in order."""

    def __init__(self, ref: str, places: Sequence[str]) -> None:
        self.ref = ref
        self.places = tuple(places)
        super().__init__(f"orb {ref} not found; looked in: {', '.join(self.places)}")


class OrbSourceError(OrbError):
    """A local orb exists but cannot be read or packed."""


def parse_orb_ref(ref: str) -> tuple[str, str, str]:
    """Split ``NAMESPACE/NAME@VERSION``; raise ValueError saying what is wrong.

    Versions may be ``X.Y.Z``, ``X.Y``, ``X``, ``volatile`` or ``dev:LABEL``.
    """
    expected = "expected NAMESPACE/NAME@VERSION, e.g. circleci/python@2.1.1"
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"orb reference {ref!r} is empty or not a string; {expected}")
    path, at, version = ref.partition("@")
    if not at:
        raise ValueError(f"orb reference {ref!r} has no version; {expected}")
    namespace, slash, name = path.partition("/")
    if not slash:
        raise ValueError(f"orb reference {ref!r} has no namespace; {expected}")
    for what, value in (("namespace", namespace), ("name", name)):
        if not _SEGMENT.fullmatch(value):
            raise ValueError(
                f"orb reference {ref!r} has an invalid {what} {value!r} "
                f"(letters, digits, '-' and '_'); {expected}"
            )
    if not _VERSION.fullmatch(version):
        raise ValueError(
            f"orb reference {ref!r} has an invalid version {version!r}; "
            "expected X.Y.Z, X.Y, X, volatile or dev:LABEL"
        )
    return namespace, name, version


def resolve_orb(
    ref: str,
    *,
    orb_dirs: Sequence[Path] = (),
    cache_dir: Path | None = None,
    allow_network: bool = False,
    registry_url: str = REGISTRY_URL,
) -> OrbSource:
    """Find the packed YAML of an orb reference (see the module docstring).

    Raises ValueError for a malformed reference, OrbSourceError for a local orb
    that cannot be read or packed, and OrbNotFound when no place has it.
    """
    namespace, name, version = parse_orb_ref(ref)
    looked: list[str] = []

    for orb_dir in orb_dirs:
        found = _from_orb_dir(ref, Path(orb_dir).expanduser(), (namespace, name, version), looked)
        if found is not None:
            return found

    full_name = f"{namespace}/{name}"
    if full_name in BUNDLED_ORBS:
        return OrbSource(
            ref=ref,
            text=bundled_orb_text(full_name),
            origin=f"bundled:{full_name}",
            bundled=True,
            emulates=BUNDLED_ORBS[full_name],
        )
    looked.append(f"circlet's bundled orbs ({', '.join(sorted(BUNDLED_ORBS))})")

    cache_file = None
    if cache_dir is None:
        looked.append("registry cache (none configured)")
    else:
        cache_file = Path(cache_dir).expanduser() / namespace / f"{name}@{version}.yml"
        looked.append(f"registry cache {cache_file}")
        if cache_file.is_file():
            return OrbSource(ref, _read(cache_file), str(cache_file), False, None)

    if not allow_network:
        looked.append("CircleCI orb registry (skipped: network not allowed)")
        raise OrbNotFound(ref, looked)
    try:
        text = _fetch_from_registry(f"{full_name}@{version}", registry_url)
    except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors
        looked.append(f"CircleCI orb registry {registry_url} (failed: {_reason(exc)})")
        raise OrbNotFound(ref, looked) from None
    if text is None:
        looked.append(f"CircleCI orb registry {registry_url} (no such orb version)")
        raise OrbNotFound(ref, looked)
    if cache_file is None:
        return OrbSource(ref, text, registry_url, False, None)
    _write_atomically(cache_file, text)
    return OrbSource(ref, text, str(cache_file), False, None)


def bundled_orb_text(full_name: str) -> str:
    """The packed YAML of a bundled orb, e.g. ``bundled_orb_text("circleci/python")``."""
    if full_name not in BUNDLED_ORBS:
        raise KeyError(f"{full_name} is not a bundled orb ({', '.join(sorted(BUNDLED_ORBS))})")
    return _bundled_text(full_name)


@cache
def _bundled_text(full_name: str) -> str:
    namespace, name = full_name.split("/")
    package = resources.files("circlet.config")
    return package.joinpath("bundled_orbs", namespace, f"{name}.yml").read_text(encoding="utf-8")


def _from_orb_dir(
    ref: str, orb_dir: Path, parts: tuple[str, str, str], looked: list[str]
) -> OrbSource | None:
    namespace, name, version = parts
    base = orb_dir / namespace
    candidates = (
        (f"{name}@{version}.yml", False),
        (f"{name}@{version}/orb.yml", False),
        (f"{name}@{version}/src/", True),
        (f"{name}/orb.yml", False),
        (f"{name}/src/", True),
    )
    looked.append(f"orb dir {orb_dir} ({', '.join(f'{namespace}/{rel}' for rel, _ in candidates)})")
    for rel, is_source_tree in candidates:
        path = base / rel
        if is_source_tree and path.is_dir():
            return OrbSource(ref, pack_orb_source(path), str(path), False, None)
        if not is_source_tree and path.is_file():
            return OrbSource(ref, _read(path), str(path), False, None)
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OrbSourceError(f"{path}: cannot read orb: {_reason(exc)}") from None


# --- packing an orb-tools source tree ------------------------------------------------


def pack_orb_source(src_dir: Path) -> str:
    """Pack an orb-tools ``src/`` tree into one orb YAML text, as ``circleci orb pack``.

    ``@orb.yml`` and the other YAML files at the top are merged into the top
    mapping; ``commands/x.yml`` becomes ``commands: {x: …}`` (likewise jobs,
    executors, examples; an ``@*.yml`` there merges into that folder's mapping).
    A string value that is exactly ``<<include(scripts/x.sh)>>`` is replaced by
    the file's text, with ``<<`` escaped as ``\\<<`` so that the script is not
    read as parameters. Raises OrbSourceError with the file at fault.
    """
    root = Path(src_dir)
    if not (root / "@orb.yml").is_file():
        raise OrbSourceError(f"{root}: @orb.yml not found; is this an orb's src/ folder?")
    tree: dict[str, Any] = {}
    for path in _yaml_files(root):
        tree.update(_load_part(path, root))
    for folder in PACKED_FOLDERS:
        if not (root / folder).is_dir():
            continue
        section: dict[str, Any] = {}
        for path in _yaml_files(root / folder):
            part = _load_part(path, root)
            if path.name.startswith("@"):
                section.update(part)
            else:
                section[path.name.rsplit(".", 1)[0]] = part
        tree[folder] = section
    return yaml.dump(tree, Dumper=_PackDumper, sort_keys=False, allow_unicode=True, width=1000)


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix in (".yml", ".yaml")
    )


def _load_part(path: Path, root: Path) -> dict[str, Any]:
    text = _read(path)
    try:
        content = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise OrbSourceError(f"{where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise OrbSourceError(f"{path}: invalid YAML: {exc}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise OrbSourceError(f"{path}: expected a mapping, got a {type(content).__name__}")
    result: dict[str, Any] = _inline_includes(content, root, path)
    return result


def _inline_includes(value: Any, root: Path, path: Path) -> Any:
    if isinstance(value, dict):
        return {k: _inline_includes(v, root, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline_includes(v, root, path) for v in value]
    if isinstance(value, str):
        return _maybe_include(value, root, path)
    return value


def _maybe_include(value: str, root: Path, path: Path) -> str:
    matches = list(_INCLUDE.finditer(value))
    if not matches:
        return value
    if len(matches) > 1:
        raise OrbSourceError(f"{path}: multiple include statements: {value!r}")
    if matches[0].group(0) != value:
        raise OrbSourceError(f"{path}: entire string must be include statement: {value!r}")
    target = (root / matches[0].group(1)).resolve()
    if not target.is_relative_to(root.resolve()):
        raise OrbSourceError(f"{path}: include path {matches[0].group(1)} escapes {root}")
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise OrbSourceError(f"{path}: could not open {target} for inclusion") from None
    return text.replace("<<", "\\<<")


class _PackDumper(yaml.SafeDumper):
    """Dumps multi-line strings (included scripts) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_PackDumper.add_representer(str, _represent_str)


# --- the registry -------------------------------------------------------------------


def _fetch_from_registry(orb_version_ref: str, url: str) -> str | None:
    """POST the orbVersion query; the orb source, or None when the registry has none."""
    body = json.dumps({"query": _QUERY, "variables": {"orbVersionRef": orb_version_ref}})
    request = urllib.request.Request(
        url,
        data=body.encode(),
        headers={"Content-Type": "application/json", "User-Agent": "circlet"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=REGISTRY_TIMEOUT_SECONDS) as response:
        payload = json.loads(response.read().decode("utf-8"))
    orb_version = (
        (payload.get("data") or {}).get("orbVersion") if isinstance(payload, dict) else None
    )
    source = orb_version.get("source") if isinstance(orb_version, dict) else None
    return source if isinstance(source, str) and source.strip() else None


def _write_atomically(path: Path, text: str) -> None:
    # Concurrent compiles may fetch the same orb: write aside, then rename.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
