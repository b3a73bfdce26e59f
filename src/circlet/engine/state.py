"""The one state machine for job and step statuses.

Every status change in the engine goes through :class:`JobState` or
:class:`StepState`, so an impossible sequence (a finished job starting again,
a skipped step failing) is a loud :class:`IllegalTransitionError` instead of a
quietly wrong record. Status words are CircleCI's API words (see
``engine.events``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Final, Generic, Literal, TypeVar, cast

from circlet.engine.events import JobStatus, StepStatus

S = TypeVar("S", bound=str)

# A step that has not started yet is "pending": not a status the world sees.
StepState_ = Literal["pending"] | StepStatus

JOB_TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "queued": frozenset(
        {"running", "blocked", "on_hold", "not_run", "canceled", "infrastructure_fail"}
    ),
    # waiting on upstream jobs: released (queued), or never (not_run / canceled)
    "blocked": frozenset({"queued", "running", "on_hold", "not_run", "canceled"}),
    # an approval job: approved (success), or the workflow ends/cancels while waiting
    "on_hold": frozenset({"success", "canceled", "not_run"}),
    "running": frozenset({"success", "failed", "canceled", "infrastructure_fail"}),
    "success": frozenset(),
    "failed": frozenset(),
    "canceled": frozenset(),
    "not_run": frozenset(),
    "infrastructure_fail": frozenset(),
}

STEP_TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "pending": frozenset({"running", "skipped", "canceled"}),
    "running": frozenset({"success", "failed", "canceled", "timedout"}),
    "success": frozenset(),
    "failed": frozenset(),
    "canceled": frozenset(),
    "timedout": frozenset(),
    "skipped": frozenset(),
}

JOB_TERMINAL: Final = frozenset(k for k, v in JOB_TRANSITIONS.items() if not v)
STEP_TERMINAL: Final = frozenset(k for k, v in STEP_TRANSITIONS.items() if not v)


class IllegalTransitionError(RuntimeError):
    """A status change the state machine does not allow (a bug in the engine)."""


class _Machine(Generic[S]):
    """A status plus its allowed moves; thread-safe (jobs finish on pool threads)."""

    kind: str = ""
    table: Mapping[str, frozenset[str]] = {}

    def __init__(self, initial: S, *, what: str = "") -> None:
        if initial not in self.table:
            raise IllegalTransitionError(f"{self.kind} {what!r}: unknown status {initial!r}")
        self._status: S = initial
        self._what = what
        self._lock = threading.Lock()

    @property
    def status(self) -> S:
        return self._status

    @property
    def terminal(self) -> bool:
        return not self.table[self._status]

    def can(self, new: S) -> bool:
        """Whether moving to ``new`` is allowed now."""
        return new in self.table[self._status]

    def to(self, new: S) -> S:
        """Move to ``new``; IllegalTransitionError if not allowed. Returns the old status."""
        with self._lock:
            old = self._status
            if new not in self.table[old]:
                raise IllegalTransitionError(
                    f"{self.kind} {self._what!r}: {old} → {new} is not allowed"
                )
            self._status = new
            return old

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._what!r} {self._status}>"


class JobState(_Machine[JobStatus]):
    """A job's status: queued → (blocked) → running → success/failed/…"""

    kind = "job"
    table = JOB_TRANSITIONS

    def __init__(self, initial: JobStatus = "queued", *, what: str = "") -> None:
        super().__init__(initial, what=what)


class StepState(_Machine[StepState_]):
    """A step's status: pending → running → success/failed/timedout/canceled, or skipped."""

    kind = "step"
    table = STEP_TRANSITIONS

    def __init__(self, *, what: str = "") -> None:
        super().__init__("pending", what=what)

    def finished(self) -> StepStatus:
        """The terminal status (IllegalTransitionError while still pending/running)."""
        if not self.terminal:
            raise IllegalTransitionError(f"step {self._what!r} has not finished ({self._status})")
        return cast(StepStatus, self._status)


def is_terminal_job(status: str) -> bool:
    """Whether ``status`` is a final job status."""
    return status in JOB_TERMINAL
