"""Branch and tag filters of workflow jobs, with CircleCI's rules.

- A pipeline is either for a branch or for a tag.
- Branch pipeline: only ``branches`` counts. No filter → runs. ``only`` (if
  given) must match, ``ignore`` must not.
- Tag pipeline: only ``tags`` counts, and a job *without* a tag filter does
  not run for tags ("CircleCI does not run workflows for tags unless you
  explicitly specify tag filters"); a tag filter with neither ``only`` nor
  ``ignore`` skips every tag.
- A value ``/re/`` is a regular expression that must match the *whole* name;
  any other value is compared literally.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from circlet.plan import BranchTagFilter, Filters


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def pattern_matches(pattern: str, name: str) -> bool:
    """Whether one filter value matches ``name`` (``/re/`` full match, else equality)."""
    if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
        return _compile(pattern[1:-1]).fullmatch(name) is not None
    return pattern == name


def any_matches(patterns: Iterable[str], name: str) -> bool:
    """Whether any of ``patterns`` matches ``name``."""
    return any(pattern_matches(p, name) for p in patterns)


def _passes(flt: BranchTagFilter, name: str) -> bool:
    if flt.only and not any_matches(flt.only, name):
        return False
    return not any_matches(flt.ignore, name)


def job_runs(filters: Filters, *, branch: str | None, tag: str | None) -> bool:
    """Whether a job with ``filters`` runs for this pipeline (``tag`` set → tag pipeline)."""
    if tag is not None:
        tags = filters.tags
        if tags is None or (not tags.only and not tags.ignore):
            return False
        return _passes(tags, tag)
    if filters.branches is None:
        return True
    return _passes(filters.branches, branch or "")


def filter_error(filters: Filters) -> str | None:
    """A one-line problem if a ``/re/`` value is not a valid regular expression."""
    for flt in (filters.branches, filters.tags):
        if flt is None:
            continue
        for pattern in (*flt.only, *flt.ignore):
            if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
                try:
                    _compile(pattern[1:-1])
                except re.error as exc:
                    return f"invalid filter regex {pattern}: {exc}"
    return None
