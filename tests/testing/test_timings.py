"""Timing tables: built from test cases, written atomically, read back by the agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circlet.testing.junit import TestCase, parse_path
from circlet.testing.split import split
from circlet.testing.timings import (
    empty_timings,
    load_timings,
    timings_from_cases,
    write_timings_file,
)

RESULTS = Path(__file__).parent / "data" / "results"


def test_timings_from_cases_sum_per_file_class_and_name() -> None:
    cases = [
        TestCase("tests.test_a.TestX", "test_1", "./tests/test_a.py", "success", 1.5),
        TestCase("tests.test_a.TestX", "test_2", "tests/test_a.py", "failure", 2.0),
        TestCase("tests.test_b", "test_1", "tests/test_b.py", "skipped", 0.25),
        TestCase("", "orphan", "", "success", 9.0),
    ]
    table = timings_from_cases(cases)
    assert table == {
        "filename": {"tests/test_a.py": 3.5, "tests/test_b.py": 0.25},
        "classname": {"tests.test_a.TestX": 3.5, "tests.test_b": 0.25},
        "testname": {"test_1": 1.75, "test_2": 2.0, "orphan": 9.0},
    }


def test_write_then_load_round_trip(tmp_path: Path) -> None:
    table = timings_from_cases(parse_path(RESULTS))
    target = write_timings_file(tmp_path / "deep" / "timings.json", table)
    assert json.loads(target.read_text())["filename"]["spec/models/user_spec.rb"] == pytest.approx(
        0.42
    )
    assert load_timings(target) == table
    assert [p.name for p in target.parent.iterdir()] == ["timings.json"]  # no temp file left


def test_load_missing_or_unset_is_none(tmp_path: Path) -> None:
    assert load_timings(tmp_path / "nope.json") is None
    assert load_timings(None) is None
    assert load_timings("") is None
    assert empty_timings() == {"filename": {}, "classname": {}, "testname": {}}


def test_recorded_rspec_timings_split_spec_files(tmp_path: Path) -> None:
    table = timings_from_cases(parse_path(RESULTS / "rspec.xml"))
    items = ["spec/models/user_spec.rb", "spec/lib/parser_spec.rb", "spec/new_spec.rb"]
    first = split(items, index=0, total=2, split_by="timings", timings=table)
    second = split(items, index=1, total=2, split_by="timings", timings=table)
    assert first == ["spec/models/user_spec.rb"]
    assert second == ["spec/lib/parser_spec.rb", "spec/new_spec.rb"]
