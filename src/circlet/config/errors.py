"""Config problems: typed (error/warning), located (file:line:col) and pathed.

The compiler never stops at the first problem: every stage appends to a
:class:`Problems` collector and carries on with a best guess, so
``circlet config validate`` can show everything wrong at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from circlet.plan import Location

Severity = Literal["error", "warning"]

# A Problem message starting with this names an orb that could not be found
# (e.g. not bundled and no network): callers classify on it.
ORB_NOT_AVAILABLE = "orb not available:"


@dataclass(frozen=True)
class Problem:
    """One thing wrong (``error``) or suspicious (``warning``) in a config."""

    severity: Severity
    message: str
    location: Location | None = None
    path: str = ""  # config path such as "jobs.build.steps[2].run"

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location is not None else ""
        at = f" (at {self.path})" if self.path else ""
        return f"{where}{self.severity}: {self.message}{at}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class ConfigError(Exception):
    """A config that does not compile; ``problems`` holds every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class Problems:
    """Collector of problems, shared by every compile stage."""

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self._seen: set[tuple[str, str, str]] = set()

    def add(
        self,
        severity: Severity,
        message: str,
        location: Location | None = None,
        path: str = "",
    ) -> None:
        # The same definition can be expanded many times (a command used by
        # ten jobs): report each distinct problem once.
        key = (message, str(location), path if location is None else "")
        if key in self._seen:
            return
        self._seen.add(key)
        self.items.append(Problem(severity, message, location, path))

    def error(self, message: str, location: Location | None = None, path: str = "") -> None:
        """Record an error."""
        self.add("error", message, location, path)

    def warning(self, message: str, location: Location | None = None, path: str = "") -> None:
        """Record a warning."""
        self.add("warning", message, location, path)

    @property
    def has_errors(self) -> bool:
        return any(p.is_error for p in self.items)

    def sorted(self) -> list[Problem]:
        """Problems in file/line/column order (unlocated last), stable otherwise."""

        def key(p: Problem) -> tuple[int, str, int, int]:
            if p.location is None:
                return (1, "", 0, 0)
            return (0, p.location.file, p.location.line, p.location.col)

        return sorted(self.items, key=key)
