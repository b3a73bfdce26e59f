"""JUnit XML test results: parse safely (defusedxml), summarize, print failures.

``store_test_results`` points at a file or a folder of XML files written by
pytest, jest-junit, rspec_junit_formatter, Maven Surefire, gotestsum, … Their
dialects differ in where the file name lives (``file`` on ``<testcase>`` or
``<testsuite>``, or only implied by ``classname``) and in how a skip is said.
Each becomes a :class:`TestCase`; a file that is not XML is a :class:`JUnitError`
naming it, an XML file that is not JUnit is left out.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import defusedxml
import defusedxml.ElementTree as SafeET

Result = Literal["success", "failure", "skipped", "error"]
RESULTS: tuple[Result, ...] = ("success", "failure", "skipped", "error")
MAX_MESSAGE = 16_000  # a failure message beyond this is cut: it goes into the records
# Extensions tried when a file is derived from a dotted classname under a root.
SOURCE_EXTENSIONS = (".py", ".rb", ".java", ".kt", ".scala", ".js", ".ts", ".go", ".php", ".cs")


class JUnitError(Exception):
    """A results file could not be used; the message names the file (and line:col)."""


@dataclass(frozen=True)
class TestCase:
    """One test's outcome, as CircleCI's test metadata has it."""

    __test__ = False  # not a pytest test class, despite the name

    classname: str
    name: str
    file: str
    result: Result
    time: float
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the form events and records carry)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestCase:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        result = str(data.get("result", "success"))
        return cls(
            classname=str(data.get("classname", "")),
            name=str(data.get("name", "")),
            file=str(data.get("file", "") or ""),
            result=result if result in RESULTS else "success",
            time=float(data.get("time", 0.0) or 0.0),
            message=str(data.get("message", "") or ""),
        )


@dataclass(frozen=True)
class Summary:
    total: int
    passed: int
    failures: int
    errors: int
    skipped: int
    time: float
    slowest: tuple[TestCase, ...]

    @property
    def ok(self) -> bool:
        """No failure and no error."""
        return self.failures == 0 and self.errors == 0


# ------------------------------------------------------------------ parsing


def parse_path(path: Path, *, root: Path | None = None) -> list[TestCase]:
    """All test cases in ``path``: one XML file, or every ``*.xml`` below a folder.

    ``root`` (the project checkout) lets a missing ``file`` be derived from a
    dotted classname by looking for the source file under it.
    """
    if path.is_dir():
        cases: list[TestCase] = []
        for file in xml_files(path):
            cases.extend(parse_file(file, root=root))
        return cases
    if not path.exists():
        raise JUnitError(f"{path}: no such file or folder")
    return parse_file(path, root=root)


def xml_files(folder: Path) -> list[Path]:
    """``*.xml`` files below ``folder``, in a stable order."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found.extend(Path(dirpath) / n for n in sorted(filenames) if n.lower().endswith(".xml"))
    return found


def parse_file(path: Path, *, root: Path | None = None) -> list[TestCase]:
    """Test cases of one XML file; :class:`JUnitError` if it is unreadable or not XML."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise JUnitError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_bytes(data, source=str(path), root=root)


def parse_bytes(
    data: bytes | str, *, source: str = "<junit>", root: Path | None = None
) -> list[TestCase]:
    """Test cases of one XML document (``source`` names it in errors)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not data.strip():
        return []
    try:
        element = SafeET.fromstring(data, forbid_dtd=False)
    except defusedxml.DTDForbidden as exc:
        raise JUnitError(f"{source}: refused: XML with a DTD is not allowed ({exc})") from exc
    except defusedxml.EntitiesForbidden as exc:
        raise JUnitError(
            f"{source}: refused: XML entity declarations are not allowed (entity {exc.name!r})"
        ) from exc
    except defusedxml.ExternalReferenceForbidden as exc:
        raise JUnitError(f"{source}: refused: XML external references are not allowed") from exc
    except defusedxml.DefusedXmlException as exc:
        raise JUnitError(f"{source}: refused: unsafe XML ({exc})") from exc
    except ET.ParseError as exc:
        line, col = exc.position
        raise JUnitError(f"{source}:{line}:{col + 1}: malformed XML: {_reason(exc)}") from exc
    if _local(element.tag) not in ("testsuites", "testsuite", "testcase"):
        return []  # some other XML file in the results folder: not ours to judge
    return list(_cases(element, root))


def _reason(exc: ET.ParseError) -> str:
    # "not well-formed (invalid token): line 3, column 4" → "not well-formed (invalid token)"
    return str(exc).split(": line ")[0]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _cases(element: ET.Element, root: Path | None) -> Iterator[TestCase]:
    """Walk suites depth-first, carrying the nearest suite's file and name down."""

    def walk(node: ET.Element, suite_file: str, suite_name: str) -> Iterator[TestCase]:
        tag = _local(node.tag)
        if tag == "testcase":
            yield _case(node, suite_file, suite_name, root)
            return
        if tag in ("testsuite", "testsuites"):
            suite_file = node.get("file") or node.get("filepath") or suite_file
            suite_name = node.get("name") or suite_name
        for child in node:
            yield from walk(child, suite_file, suite_name)

    yield from walk(element, "", "")


def _case(node: ET.Element, suite_file: str, suite_name: str, root: Path | None) -> TestCase:
    classname = node.get("classname") or node.get("class") or ""
    name = node.get("name") or ""
    result: Result = "success"
    message = ""
    for child in node:
        tag = _local(child.tag)
        if tag in ("failure", "error"):
            result = "failure" if tag == "failure" else "error"
            message = _message(child)
            break
        if tag in ("skipped", "ignored", "disabled"):
            result = "skipped"
            message = _message(child)
    status = (node.get("status") or node.get("result") or "").lower()
    if result == "success" and status in ("skipped", "ignored", "disabled", "notrun"):
        result = "skipped"
    file = node.get("file") or node.get("filepath") or suite_file
    if not file:
        file = derive_file(classname, root=root, pytest=suite_name == "pytest")
    return TestCase(
        classname=classname,
        name=name,
        file=file,
        result=result,
        time=_seconds(node.get("time")),
        message=message[:MAX_MESSAGE],
    )


def _message(element: ET.Element) -> str:
    head = element.get("message") or ""
    body = (element.text or "").strip()
    if head and body and head not in body:
        return f"{head}\n{body}"
    return body or head


def _seconds(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        value = float(text.replace(",", ""))  # "1,234.5" from some Java reporters
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value >= 0 else 0.0


def derive_file(classname: str, *, root: Path | None = None, pytest: bool = False) -> str:
    """A test file guessed from a dotted classname, or ``""``.

    With ``root``: the longest ``a/b/c.<ext>`` that exists there. Without it only
    pytest's classnames (``pkg.test_mod.TestClass``) are mapped, because pytest
    names modules by their path: leading lower-case parts become ``pkg/test_mod.py``.
    """
    parts = [p for p in classname.split(".") if p]
    if not parts:
        return ""
    if root is not None:
        for end in range(len(parts), 0, -1):
            stem = "/".join(parts[:end])
            for ext in SOURCE_EXTENSIONS:
                if (root / (stem + ext)).is_file():
                    return stem + ext
    if pytest:
        module = list(parts)
        while len(module) > 1 and module[-1][:1].isupper():  # drop Test classes
            module.pop()
        if all(p.isidentifier() for p in module):
            return "/".join(module) + ".py"
    return ""


# ------------------------------------------------------------------ reports


def summarize(cases: Sequence[TestCase], slowest: int = 5) -> Summary:
    """Counts by result, total time and the ``slowest`` longest tests."""
    counts = dict.fromkeys(RESULTS, 0)
    for case in cases:
        counts[case.result] += 1
    ranked = sorted(cases, key=lambda c: (-c.time, c.classname, c.name))
    return Summary(
        total=len(cases),
        passed=counts["success"],
        failures=counts["failure"],
        errors=counts["error"],
        skipped=counts["skipped"],
        time=sum(c.time for c in cases),
        slowest=tuple(ranked[:slowest]),
    )


def describe(summary: Summary) -> str:
    """One line: ``12 tests, 10 passed, 1 failed, 1 skipped in 3.20s``."""
    parts = [f"{summary.total} tests", f"{summary.passed} passed"]
    if summary.failures:
        parts.append(f"{summary.failures} failed")
    if summary.errors:
        parts.append(f"{summary.errors} errors")
    if summary.skipped:
        parts.append(f"{summary.skipped} skipped")
    return ", ".join(parts) + f" in {summary.time:.2f}s"


def case_id(case: TestCase) -> str:
    """``file::classname::name`` without the empty parts."""
    return "::".join(p for p in (case.file, case.classname, case.name) if p)


def format_failures(cases: Iterable[TestCase], *, max_lines: int = 20) -> str:
    """Failed and errored tests with the head of their messages, for a terminal."""
    blocks = []
    for case in cases:
        if case.result not in ("failure", "error"):
            continue
        label = "FAILED" if case.result == "failure" else "ERROR"
        lines = case.message.splitlines()
        shown = lines[:max_lines]
        if len(lines) > max_lines:
            shown.append(f"… {len(lines) - max_lines} more lines")
        body = "".join(f"\n    {line}" for line in shown)
        blocks.append(f"{label} {case_id(case)} ({case.time:.2f}s){body}")
    return "\n".join(blocks)
