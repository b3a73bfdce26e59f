"""Find a Python on this machine for an image such as ``cimg/python:3.12.0``.

The host executor cannot run the image, so it does the next best thing: the
interpreter the image would have given (same major.minor, ideally the same
patch), else the nearest one, and it says which.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from circlet.executors.base import ExecutorError
from circlet.executors.process import check_output

# Images whose tag starts with the Python version they carry.
PYTHON_IMAGES = ("cimg/python", "circleci/python", "python", "library/python")
_TAG_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:$|[-_.])")
_VERSION_DIR = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")  # pyenv: plain CPython builds only


@dataclass(frozen=True)
class Interpreter:
    """A CPython found here. ``bin_dir`` is a pyenv version's own bin (pip, tools)."""

    path: Path
    version: tuple[int, int, int]
    bin_dir: Path | None = None

    @property
    def version_text(self) -> str:
        """``3.11.2``."""
        return ".".join(map(str, self.version))


@dataclass(frozen=True)
class Choice:
    """What the host executor uses for a requested version, and how good a match it is."""

    requested: tuple[int, ...]
    interpreter: Interpreter | None
    exact: bool  # same major.minor (and patch, when the tag names one)

    def describe(self, image: str) -> str:
        """One line for *Spin up environment*."""
        wanted = ".".join(map(str, self.requested[:2]))
        if self.interpreter is None:
            return f"{image} → no Python {wanted} here, and no other Python found"
        found = f"{self.interpreter.path} ({self.interpreter.version_text})"
        if self.interpreter.version[:2] == self.requested[:2]:
            return f"{image} → {found}"
        return f"{image} → no Python {wanted} here; using {found}"


def requested_version(image: str) -> tuple[int, ...] | None:
    """``cimg/python:3.12.0-browsers`` → (3, 12, 0); None for a non-Python image."""
    repo, _, tag = image.split("@", 1)[0].rpartition(":")
    if not repo or "/" in tag:
        return None
    parts = repo.split("/")
    # A registry host (docker.io/…, localhost:5000/…) is not part of the name we match.
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    repo = "/".join(parts)
    if repo not in PYTHON_IMAGES:
        return None
    match = _TAG_VERSION.match(tag)
    if match is None:
        return None
    return tuple(int(g) for g in match.groups() if g is not None)


def choose(requested: tuple[int, ...], candidates: list[Interpreter]) -> Choice:
    """The best candidate: exact version, else same minor (newest patch), else nearest minor."""
    if not candidates:
        return Choice(requested, None, exact=False)
    same_minor = [c for c in candidates if c.version[:2] == requested[:2]]
    if same_minor:
        if len(requested) == 3:
            for cand in same_minor:
                if cand.version == requested:
                    return Choice(requested, cand, exact=True)
        best = max(same_minor, key=lambda c: (c.version, c.bin_dir is not None))
        return Choice(requested, best, exact=len(requested) == 2)
    minor = requested[1] if len(requested) > 1 else 0
    # Nearest minor of the same major; on a tie the newer one (more likely to run the code).
    best = min(
        candidates,
        key=lambda c: (
            c.version[0] != requested[0],
            abs(c.version[1] - minor),
            -c.version[1],
            -c.version[2],
        ),
    )
    return Choice(requested, best, exact=False)


@functools.cache
def find_interpreters() -> tuple[Interpreter, ...]:
    """Every CPython 3 here: pyenv versions first, then ``python3.X`` on PATH (cached)."""
    found: dict[Path, Interpreter] = {}
    for interp in _pyenv_interpreters():
        found.setdefault(interp.path.resolve(), interp)
    for path in _path_interpreters():
        real = path.resolve()
        if real in found:
            continue
        version = _probe_version(path)
        if version is not None:
            found[real] = Interpreter(path, version)
    return tuple(found.values())


def pyenv_root() -> Path | None:
    """This machine's pyenv root, if there is one."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    return root if (root / "versions").is_dir() else None


def _pyenv_interpreters() -> list[Interpreter]:
    root = pyenv_root()
    if root is None:
        return []
    result = []
    for entry in sorted((root / "versions").iterdir()):
        match = _VERSION_DIR.match(entry.name)
        if match is None or int(match.group(1)) != 3:
            continue
        major, minor, patch = (int(g) for g in match.groups())
        exe = entry / "bin" / f"python{major}.{minor}"
        if exe.is_file() and os.access(exe, os.X_OK):
            result.append(Interpreter(exe, (major, minor, patch), entry / "bin"))
    return result


def _path_interpreters() -> list[Path]:
    result = []
    pattern = re.compile(r"^python3\.\d+$")
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        # pyenv shims pick a version from $HOME and cwd at run time: not a fixed Python.
        if not directory or directory.rstrip("/").endswith(("pyenv/shims", ".pyenv/shims")):
            continue
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = Path(directory) / name
            if pattern.match(name) and os.access(path, os.X_OK):
                result.append(path)
    return result


def _probe_version(path: Path) -> tuple[int, int, int] | None:
    try:
        out = check_output(
            [str(path), "-c", "import sys; print(*sys.version_info[:3])"], what=str(path)
        )
    except ExecutorError:
        return None
    parts = out.split()
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return (int(parts[0]), int(parts[1]), int(parts[2]))
