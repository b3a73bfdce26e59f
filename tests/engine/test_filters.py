"""Branch/tag filters: CircleCI's rules, table-driven."""

from __future__ import annotations

import pytest

from circlet.engine.filters import filter_error, job_runs, pattern_matches
from circlet.plan import BranchTagFilter, Filters

B = BranchTagFilter


@pytest.mark.parametrize(
    ("filters", "branch", "tag", "runs"),
    [
        (Filters(), "main", None, True),
        (Filters(), None, "v1.0", False),  # no tag filter: never for tags
        (Filters(branches=B(only=("master",))), "master", None, True),
        (Filters(branches=B(only=("master",))), "main", None, False),
        (Filters(branches=B(ignore=("/feature-.*/",))), "feature-x", None, False),
        (Filters(branches=B(ignore=("/feature-.*/",))), "fix-feature-x", None, True),
        # only and ignore together: both must agree
        (Filters(branches=B(only=("/.*/",), ignore=("wip",))), "wip", None, False),
        (Filters(branches=B(only=("/.*/",), ignore=("wip",))), "main", None, True),
        # regexes match the whole name
        (Filters(branches=B(only=("/ma/",))), "main", None, False),
        (Filters(branches=B(only=("/ma.*/",))), "main", None, True),
        # tag pipelines look at tags only; branch filters do not matter
        (Filters(tags=B(only=("/^v.*/",))), None, "v1.2", True),
        (Filters(tags=B(only=("/^v.*/",))), None, "release", False),
        (Filters(branches=B(ignore=("/.*/",)), tags=B(only=("/v.*/",))), None, "v2", True),
        (Filters(branches=B(ignore=("/.*/",)), tags=B(only=("/v.*/",))), "main", None, False),
        (Filters(tags=B(ignore=("beta",))), None, "v1", True),
        (Filters(tags=B(ignore=("beta",))), None, "beta", False),
        (Filters(tags=B()), None, "v1", False),  # neither only nor ignore: skipped for tags
        # branch pipelines ignore tag filters
        (Filters(tags=B(only=("/v.*/",))), "main", None, True),
        (Filters(branches=B(only=("main",))), None, None, False),
    ],
)
def test_job_runs(filters: Filters, branch: str | None, tag: str | None, runs: bool) -> None:
    assert job_runs(filters, branch=branch, tag=tag) is runs


def test_literal_is_not_a_regex() -> None:
    assert pattern_matches("a.c", "a.c")
    assert not pattern_matches("a.c", "abc")
    assert pattern_matches("/a.c/", "abc")


def test_bad_regex_is_reported() -> None:
    assert filter_error(Filters(branches=B(only=("/(/",)))) is not None
    assert filter_error(Filters(branches=B(only=("/ok.*/",)))) is None
