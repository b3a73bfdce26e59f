#!/usr/bin/env python3
"""``circleci`` and ``circleci-agent`` in a circlet job: ``tests glob|split|run``, ``step halt``.

This one file is copied into job environments as two executables, so it imports
nothing but the standard library and never ``circlet``. The host side
(``circlet tests …`` and :mod:`circlet.testing.split`) imports the same functions
from here, so the splitting logic exists once.

Compatibility notes (CircleCI's behaviour, as documented):

- ``tests glob`` understands ``*``, ``**``, ``?``, ``[abc]`` and ``{a,b}``.
- ``tests split`` reads names from files or stdin, splits by name (default),
  ``filesize`` or ``timings``; node index/total default to ``CIRCLE_NODE_INDEX``
  and ``CIRCLE_NODE_TOTAL``.
- Timings come from the JSON file named by ``CIRCLET_TIMINGS_FILE``
  (``{"filename": {...}, "classname": {...}, "testname": {...}}``, seconds).
- ``tests run --command CMD`` splits stdin the same way, then runs ``CMD`` in a
  shell with the selected names on its stdin, one per line. In a "rerun failed
  tests" job, ``CIRCLET_RERUN_TESTS_FILE`` lists the failed tests' files and
  classnames: only stdin items naming one of them are split and run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

HALT_FILE_ENV = "CIRCLET_HALT_FILE"
TIMINGS_FILE_ENV = "CIRCLET_TIMINGS_FILE"
RERUN_TESTS_FILE_ENV = "CIRCLET_RERUN_TESTS_FILE"
SPLIT_BY = ("name", "filesize", "timings")
TIMING_TYPES = ("filename", "classname", "testname")
# CircleCI gives tests without timing data "a random small value"; we want determinism.
MISSING_TIME = 0.1
AUTODETECT_FAILED = "Error autodetecting timing type, falling back to weighting by name."
NO_TIMINGS = (
    "Requested weighting by historical based timing, but they are not present. "
    "Falling back to weighting by name."
)
NO_TESTS_FOUND = "There were no tests found"
NO_FAILED_TESTS = (
    "Rerunning failed tests: none of the {count} tests given failed in the previous run, "
    "so there is nothing to run."
)

Timings = dict[str, dict[str, float]]
Warn = Callable[[str], object]


class AgentError(Exception):
    """An expected failure: one line for the user, exit code 2."""


# ------------------------------------------------------------------ glob


def expand_braces(pattern: str) -> list[str]:
    """``a{b,c{d,e}}f`` → ``[abf, acdf, acef]``; unbalanced braces stay literal."""
    depth = 0
    start = -1
    for i, ch in enumerate(pattern):
        if ch == "\\":
            continue
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                inner = pattern[start + 1 : i]
                options = _split_top_level(inner)
                if len(options) < 2:  # "{x}" is literal in Go globbing too: keep as is
                    rest = expand_braces(pattern[i + 1 :])
                    return [pattern[: i + 1] + r for r in rest]
                head, tail = pattern[:start], pattern[i + 1 :]
                result: list[str] = []
                for option in options:
                    for expanded in expand_braces(head + option + tail):
                        if expanded not in result:
                            result.append(expanded)
                return result
    return [pattern]


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        current += ch
    parts.append(current)
    return parts


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Translate one brace-free glob to a regex over ``/``-separated paths."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    out.append("(?:.*/)?")  # "**/" also matches no directory at all
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[^/{body}]" if negate else f"[{body}]")
                i = end
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


_MAGIC = re.compile(r"[*?\[]")


def glob(patterns: Iterable[str], root: str | os.PathLike[str] = ".") -> list[str]:
    """Files matching any of ``patterns`` (relative to ``root``), unique and sorted.

    Paths are printed as the pattern spells them: ``tests/**/*.py`` gives
    ``tests/a/test_x.py``. Directories are not listed, only what they contain.
    """
    found: set[str] = set()
    for raw in patterns:
        for pattern in expand_braces(raw):
            found.update(_glob_one(pattern, Path(root)))
    return sorted(found)


def _glob_one(pattern: str, root: Path) -> list[str]:
    parts = pattern.split("/")
    n = 0  # leading components without wildcards: where the walk starts
    while n < len(parts) - 1 and not _MAGIC.search(parts[n]):
        n += 1
    rest = "/".join(parts[n:])
    if not _MAGIC.search(rest):  # no wildcards at all: the file itself, if it exists
        return [pattern] if (root / pattern).is_file() else []
    prefix = "/".join(parts[:n]) + "/" if n else ""  # "" | "tests/" | "/" | "/abs/"
    start = str(root / prefix) if prefix else str(root)
    regex = glob_to_regex(rest)
    # Without "**" a match can't be deeper than the pattern has components.
    max_depth = None if "**" in rest else rest.count("/")
    matches: list[str] = []
    for dirpath, dirnames, filenames in os.walk(start):
        rel_dir = os.path.relpath(dirpath, start)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        if max_depth is not None and rel_dir.count("/") >= max_depth:
            dirnames[:] = []
        for name in filenames:
            rel = rel_dir + name
            if regex.match(rel):
                matches.append(prefix + rel)
    return matches


# ------------------------------------------------------------------ split


def parse_items(text: str) -> list[str]:
    """Test names from whitespace-separated text, first occurrence kept."""
    seen: dict[str, None] = {}
    for item in text.split():
        seen.setdefault(item, None)
    return list(seen)


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """A Go duration (``10s``, ``1m30s``, ``250ms``) or plain seconds → seconds."""
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(value) or not value:
        raise AgentError(f"invalid duration {text!r} (examples: 10s, 1m30s, 500ms)")
    return total


def normalize_path(path: str) -> str:
    """Compare paths without a leading ``./`` and with ``/`` separators."""
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def load_timings(path: str | os.PathLike[str] | None) -> Timings | None:
    """Read a timings file; None if ``path`` is empty or the file is missing.

    A file that is not the expected JSON raises :class:`AgentError`.
    """
    if not path:
        return None
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AgentError(f"{path}: cannot read timings: {exc.strerror}") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AgentError(
            f"{path}:{exc.lineno}:{exc.colno}: invalid timings JSON: {exc.msg}"
        ) from exc
    if not isinstance(data, dict):
        raise AgentError(f"{path}: timings must be a JSON object of filename/classname/testname")
    result: Timings = {}
    for kind in TIMING_TYPES:
        table = data.get(kind, {})
        if not isinstance(table, dict):
            raise AgentError(f"{path}: timings[{kind!r}] must be an object of name → seconds")
        clean: dict[str, float] = {}
        for name, seconds in table.items():
            if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
                key = normalize_path(str(name)) if kind == "filename" else str(name)
                clean[key] = clean.get(key, 0.0) + float(seconds)
        result[kind] = clean
    return result


class _FileIndex:
    """Looks up file timings by exact path, then by a matching path suffix
    (JUnit files often hold absolute container paths, glob output is relative)."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.by_base: dict[str, list[str]] = {}
        for key in table:
            self.by_base.setdefault(key.rsplit("/", 1)[-1], []).append(key)

    def get(self, item: str) -> float | None:
        norm = normalize_path(item)
        if norm in self.table:
            return self.table[norm]
        candidates = self.by_base.get(norm.rsplit("/", 1)[-1], [])
        best: str | None = None
        for key in sorted(candidates):
            related = key.endswith("/" + norm) or norm.endswith("/" + key)
            if related and (best is None or len(key) < len(best)):
                best = key
        return None if best is None else self.table[best]


def _lookup(kind: str, table: dict[str, float]) -> Callable[[str], float | None]:
    if kind == "filename":
        return _FileIndex(table).get
    return table.get


def detect_timing_type(items: Sequence[str], timings: Timings) -> str | None:
    """The timing type that knows the most of ``items`` (filename first on ties)."""
    best, best_hits = None, 0
    for kind in TIMING_TYPES:
        look = _lookup(kind, timings.get(kind, {}))
        hits = sum(1 for item in items if look(item) is not None)
        if hits > best_hits:
            best, best_hits = kind, hits
    return best


def split_items(items: Sequence[str], weights: Sequence[float], total: int) -> list[list[str]]:
    """Greedy bin packing: heaviest first (ties by name) into the lightest bin
    (ties: lowest index). Equal weights give a round-robin over sorted names."""
    order = sorted(range(len(items)), key=lambda i: (-weights[i], items[i]))
    loads = [0.0] * total
    counts = [0] * total
    bins: list[list[str]] = [[] for _ in range(total)]
    for i in order:
        target = min(range(total), key=lambda b: (loads[b], counts[b], b))
        loads[target] += weights[i]
        counts[target] += 1
        bins[target].append(items[i])
    return [sorted(b) for b in bins]


def compute_weights(
    items: Sequence[str],
    *,
    split_by: str = "name",
    timings_type: str = "autodetect",
    timings: Timings | None = None,
    time_default: float | None = None,
    warn: Warn = lambda _msg: None,
) -> list[float]:
    """The weight of each item under a split method; warns (like CircleCI) on fallbacks."""
    if split_by == "name":
        return [1.0] * len(items)
    if split_by == "filesize":
        sizes = []
        for item in items:
            try:
                sizes.append(float(os.path.getsize(item)))
            except OSError:
                warn(f'No file size found for "{item}"')
                sizes.append(0.0)
        return sizes
    if split_by != "timings":
        raise AgentError(f"unknown --split-by {split_by!r} (choose: {', '.join(SPLIT_BY)})")
    if timings_type not in (*TIMING_TYPES, "autodetect"):
        raise AgentError(
            f"unknown --timings-type {timings_type!r} "
            f"(choose: {', '.join(TIMING_TYPES)}, autodetect)"
        )
    if not timings or not any(timings.get(k) for k in TIMING_TYPES):
        warn(NO_TIMINGS)
        return [1.0] * len(items)
    kind = detect_timing_type(items, timings) if timings_type == "autodetect" else timings_type
    if kind is None:
        warn(AUTODETECT_FAILED)
        return [1.0] * len(items)
    look = _lookup(kind, timings.get(kind, {}))
    found = [look(item) for item in items]
    if all(f is None for f in found):
        warn(f"No timing found for any of the {len(items)} tests by {kind}; weighting by name.")
        return [1.0] * len(items)
    default = MISSING_TIME if time_default is None else time_default
    weights = []
    for item, seconds in zip(items, found, strict=True):
        if seconds is None:
            warn(f'No timing found for "{item}"')
            weights.append(default)
        else:
            weights.append(seconds)
    return weights


def node_from_env(index: int | None, total: int | None) -> tuple[int, int]:
    """``--index``/``--total``, else CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL, else 0/1; validated."""
    try:
        if index is None:
            index = int(os.environ.get("CIRCLE_NODE_INDEX") or 0)
        if total is None:
            total = int(os.environ.get("CIRCLE_NODE_TOTAL") or 1)
    except ValueError as exc:
        raise AgentError(f"CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL must be integers ({exc})") from exc
    if total < 1:
        raise AgentError(f"--total must be at least 1 (got {total})")
    if not 0 <= index < total:
        raise AgentError(f"--index must be between 0 and {total - 1} (got {index})")
    return index, total


def split(
    items: Sequence[str],
    *,
    index: int,
    total: int,
    split_by: str = "name",
    timings_type: str = "autodetect",
    timings: Timings | None = None,
    time_default: float | None = None,
    warn: Warn = lambda _msg: None,
) -> list[str]:
    """The items node ``index`` of ``total`` runs, sorted by name."""
    weights = compute_weights(
        items,
        split_by=split_by,
        timings_type=timings_type,
        timings=timings,
        time_default=time_default,
        warn=warn,
    )
    return split_items(items, weights, total)[index]


# ------------------------------------------------------------------ commands


@dataclass(frozen=True)
class SplitOptions:
    """The options ``tests split`` and ``tests run`` share (None: from the environment)."""

    split_by: str = "name"
    timings_type: str = "autodetect"
    index: int | None = None
    total: int | None = None
    time_default: str | None = None
    timings_file: str | None = None

    def select(self, items: Sequence[str], err: IO[str]) -> list[str]:
        """This node's share of ``items``; fallback notices go to ``err``."""
        node, nodes = node_from_env(self.index, self.total)
        default = parse_duration(self.time_default) if self.time_default else None
        timings = None
        if self.split_by == "timings":
            timings = load_timings(self.timings_file or os.environ.get(TIMINGS_FILE_ENV))
        return split(
            items,
            index=node,
            total=nodes,
            split_by=self.split_by,
            timings_type=self.timings_type,
            timings=timings,
            time_default=default,
            warn=lambda msg: err.write(msg + "\n"),
        )


def _module_of(item: str) -> str:
    """``tests/test_a.py`` → ``tests.test_a`` (pytest's classname for that file)."""
    path = normalize_path(item)
    for suffix in (".py", ".rb", ".js", ".ts"):
        path = path.removesuffix(suffix)
    return path.replace("/", ".")


def filter_failed(items: Sequence[str], failed: Iterable[str]) -> list[str]:
    """The ``items`` naming a failed test, as CircleCI matches them: by the JUnit
    ``file`` attribute or by ``classname`` (a test file also matches the classnames of
    the module it holds, ``tests/test_a.py`` ↔ ``tests.test_a[.TestX]``)."""
    names = {normalize_path(f) for f in failed if f.strip()}
    kept = []
    for item in items:
        module = _module_of(item)
        if (
            normalize_path(item) in names
            or module in names
            or any(n.startswith(module + ".") for n in names)
        ):
            kept.append(item)
    return kept


def failed_tests_from_env() -> list[str] | None:
    """The failed tests' files/classnames of a "rerun failed tests" job; None otherwise."""
    target = os.environ.get(RERUN_TESTS_FILE_ENV)
    if not target:
        return None
    try:
        return Path(target).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AgentError(f"{target}: cannot read the failed tests: {exc.strerror}") from exc


def cmd_glob(patterns: Sequence[str], out: IO[str]) -> int:
    """``tests glob``: print matching files, one a line."""
    if not patterns:
        raise AgentError("tests glob needs at least one pattern")
    for path in glob(patterns):
        out.write(path + "\n")
    return 0


def _read_items(files: Sequence[str], stdin: IO[str]) -> list[str]:
    if not files:
        return parse_items(stdin.read())
    text = []
    for name in files:
        try:
            text.append(Path(name).read_text(encoding="utf-8"))
        except OSError as exc:
            raise AgentError(f"{name}: cannot read the test list: {exc.strerror}") from exc
    return parse_items("\n".join(text))


def cmd_split(
    files: Sequence[str],
    options: SplitOptions,
    *,
    show_counts: bool = False,
    stdin: IO[str],
    out: IO[str],
    err: IO[str],
) -> int:
    """``tests split``: print this node's share of the names from ``files`` or stdin."""
    items = _read_items(files, stdin)
    chosen = options.select(items, err)
    if show_counts:
        err.write(f"{len(chosen)} of {len(items)} tests on this node\n")
    for item in chosen:
        out.write(item + "\n")
    return 0


def cmd_run(
    command: str,
    options: SplitOptions,
    *,
    verbose: bool = False,
    stdin: IO[str],
    out: IO[str],
    err: IO[str],
) -> int:
    """``tests run``: split stdin, then run ``command`` with this node's names on its stdin."""
    if not command.strip():
        raise AgentError("tests run needs --command")
    items = parse_items(stdin.read())
    failed = failed_tests_from_env()
    if failed is not None:
        given, items = len(items), filter_failed(items, failed)
        if not items:
            out.write(NO_FAILED_TESTS.format(count=given) + "\n")
            out.flush()
            return 0
        err.write(f"Rerunning failed tests: {len(items)} of {given} tests given failed before\n")
    chosen = options.select(items, err)
    if not chosen:
        out.write(NO_TESTS_FOUND + "\n")
        out.flush()
        return 0
    if verbose:
        err.write(f"Running {len(chosen)} of {len(items)} tests: {command}\n")
        err.writelines(f"  {item}\n" for item in chosen)
    out.flush()
    err.flush()
    bash = shutil.which("bash")
    shell = [bash, "-c"] if bash else ["/bin/sh", "-c"]
    payload = "".join(item + "\n" for item in chosen)
    return subprocess.run([*shell, command], input=payload, text=True, check=False).returncode


def cmd_halt() -> int:
    """``step halt``: ask circlet to end the job successfully after this step."""
    target = os.environ.get(HALT_FILE_ENV)
    if not target:
        raise AgentError(f"step halt: {HALT_FILE_ENV} is not set (not inside a circlet job?)")
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).touch()
    return 0


# ------------------------------------------------------------------ entry point


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="circlet's stand-in for CircleCI's CLI")
    groups = parser.add_subparsers(dest="group", required=True)
    tests = groups.add_parser("tests", help="glob, split and run tests")
    tests_sub = tests.add_subparsers(dest="action", required=True)
    tests_sub.add_parser("glob", help="list files matching patterns").add_argument(
        "patterns", nargs="*"
    )
    p_split = tests_sub.add_parser("split", help="this node's share of a test list")
    p_run = tests_sub.add_parser("run", help="split stdin, run a command on this node's share")
    for sub in (p_split, p_run):
        sub.add_argument("--split-by", choices=SPLIT_BY, default="name")
        sub.add_argument(
            "--timings-type", choices=(*TIMING_TYPES, "autodetect"), default="autodetect"
        )
        sub.add_argument("--index", type=int, default=None)
        sub.add_argument("--total", type=int, default=None)
        sub.add_argument("--time-default", default=None)
        sub.add_argument("--timings-file", default=None, help="default: $" + TIMINGS_FILE_ENV)
    p_split.add_argument("--show-counts", action="store_true")
    p_split.add_argument("files", nargs="*")
    p_run.add_argument("--command", required=True)
    p_run.add_argument("--verbose", action="store_true")
    step = groups.add_parser("step", help="control the running step")
    step.add_subparsers(dest="action", required=True).add_parser(
        "halt", help="end the job successfully after this step"
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run one command line; return the exit code."""
    prog = prog or os.path.basename(sys.argv[0]) or "circleci"
    args = _parser(prog).parse_args(argv)
    try:
        if args.group == "step":
            return cmd_halt()
        if args.action == "glob":
            return cmd_glob(args.patterns, sys.stdout)
        options = SplitOptions(
            **{f.name: getattr(args, f.name) for f in dataclasses.fields(SplitOptions)}
        )
        if args.action == "split":
            return cmd_split(
                args.files,
                options,
                show_counts=args.show_counts,
                stdin=sys.stdin,
                out=sys.stdout,
                err=sys.stderr,
            )
        return cmd_run(
            args.command,
            options,
            verbose=args.verbose,
            stdin=sys.stdin,
            out=sys.stdout,
            err=sys.stderr,
        )
    except AgentError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2


def install_agent(bin_dir: Path) -> None:
    """Write this script as executable ``circleci`` and ``circleci-agent`` into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    source = Path(__file__).read_bytes()
    for name in ("circleci", "circleci-agent"):
        fd, tmp = tempfile.mkstemp(dir=bin_dir, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(source)
            os.chmod(tmp, 0o755)
            os.replace(tmp, bin_dir / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


if __name__ == "__main__":
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # "| head" closed the pipe: not worth a traceback. Point stdout at /dev/null
        # so the interpreter's own flush at exit does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 0
    sys.exit(status)
