"""``triggers: schedule`` — cron expressions (UTC, five fields) and the thread
that fires them.

Every project's config is compiled for its default branch (at most every
``REFRESH`` seconds); each workflow with a schedule trigger then runs, on each
branch its filter names (``only`` entries that are plain names; the default
branch when there is no filter), whenever its cron matches the current minute.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from circlet.plan import Pipeline

if TYPE_CHECKING:
    from circlet.server.services import Services

log = logging.getLogger(__name__)
REFRESH = 300.0

_NAMES = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "may": 5,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
    "sun": 0,
    "mon": 1,
    "tue": 2,
    "wed": 3,
    "thu": 4,
    "fri": 5,
    "sat": 6,
}
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)


class CronError(ValueError):
    """A cron expression that does not parse (names the field)."""


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month was "*"
    any_weekday: bool

    def matches(self, t: time.struct_time) -> bool:
        """Whether the minute ``t`` (UTC) is one this cron fires on."""
        if t.tm_min not in self.minutes or t.tm_hour not in self.hours:
            return False
        if t.tm_mon not in self.months:
            return False
        weekday = (t.tm_wday + 1) % 7  # struct_time: Monday = 0
        day_ok, week_ok = t.tm_mday in self.days, weekday in self.weekdays
        if self.any_day or self.any_weekday:
            return day_ok and week_ok
        return day_ok or week_ok  # both restricted: either matches (Vixie cron)


def _value(text: str, name: str) -> int:
    key = text.lower()
    if key in _NAMES:
        return _NAMES[key]
    if not text.isdigit():
        raise CronError(f"{name}: {text!r} is not a number")
    return int(text)


def _field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = _value(step_text, name) if step_text else 1
        if step < 1:
            raise CronError(f"{name}: step must be at least 1")
        if base == "*":
            start, stop = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            start, stop = _value(a, name), _value(b, name)
        else:
            start = _value(base, name)
            stop = hi if step_text else start
        if not (lo <= start <= hi and lo <= stop <= hi and start <= stop):
            raise CronError(f"{name}: {part!r} is outside {lo}-{hi}")
        values.update(range(start, stop + 1, step))
    return frozenset(values)


def parse_cron(expr: str) -> Cron:
    """Parse ``m h dom mon dow``; CronError names the bad field."""
    parts = expr.split()
    if len(parts) != 5:
        raise CronError(f"{expr!r}: a cron has 5 fields (minute hour day month weekday)")
    sets = [_field(p, name, lo, hi) for p, (name, lo, hi) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*")


@dataclass(frozen=True)
class Schedule:
    project: str
    workflow: str
    cron: Cron
    branches: tuple[str, ...]


def schedules_of(project: str, plan: Pipeline, default_branch: str) -> list[Schedule]:
    """The schedule triggers of a compiled config."""
    found = []
    for wf in plan.workflows:
        for trig in wf.triggers:
            try:
                cron = parse_cron(trig.cron)
            except CronError as exc:
                log.warning("%s: workflow %s: %s", project, wf.name, exc)
                continue
            only = trig.filters.branches.only if trig.filters.branches else ()
            names = tuple(b for b in only if not (b.startswith("/") and b.endswith("/")))
            found.append(Schedule(project, wf.name, cron, names or (default_branch,)))
    return found


class CronThread:
    """Fires schedule triggers once a minute; see the module doc."""

    def __init__(self, svc: Services) -> None:
        self._svc = svc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="circlet-cron", daemon=True)
        self._cache: dict[str, tuple[float, list[Schedule]]] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        last_minute = int(time.time() // 60)
        while not self._stop.wait(5.0):
            minute = int(time.time() // 60)
            if minute == last_minute:
                continue
            last_minute = minute
            try:
                self.fire(time.gmtime(minute * 60))
            except Exception:  # the next minute tries again
                log.exception("circlet server: schedule triggers failed")

    def schedules(self, project: str) -> list[Schedule]:
        """A project's schedules (compiled at most every REFRESH seconds)."""
        cached = self._cache.get(project)
        if cached is not None and time.time() - cached[0] < REFRESH:
            return cached[1]
        settings = self._svc.accounts.project(project)
        found: list[Schedule] = []
        if settings is not None:
            try:
                plan = self._svc.runs.plan_for(settings, settings.default_branch)
                found = schedules_of(project, plan, settings.default_branch)
            except Exception as exc:  # a broken config has no schedules until fixed
                log.info("%s: no schedules (%s)", project, exc)
        self._cache[project] = (time.time(), found)
        return found

    def fire(self, minute: time.struct_time) -> int:
        """Trigger every schedule matching ``minute``; how many pipelines started."""
        from circlet.server.runs import TriggerRequest

        started = 0
        for project in self._svc.accounts.projects():
            for sched in self.schedules(project.slug):
                if not sched.cron.matches(minute):
                    continue
                for branch in sched.branches:
                    self._svc.runs.trigger(
                        TriggerRequest(
                            project=project.slug,
                            branch=branch,
                            trigger_type="schedule",
                            actor="scheduler",
                            workflow=sched.workflow,
                            schedule_name=sched.workflow,
                        )
                    )
                    started += 1
        return started
