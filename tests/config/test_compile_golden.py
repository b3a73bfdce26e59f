"""Golden tests: one small config per feature → the exact Plan JSON.

Each folder of ``golden/`` holds ``config.yml``, optionally ``values.json``
(``{"values": {pipeline values}, "params": {pipeline parameters}}``) and
``warnings.txt`` (the expected warnings, one per line), and ``expected.json``.
Regenerate with ``UPDATE_GOLDEN=1 pytest tests/config/test_compile_golden.py``
and review every changed file by eye.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from circlet import plan
from circlet.config import compile_with_problems, pipeline_values

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "config.yml").is_file())
FIXED_ID = "00000000-0000-4000-8000-000000000000"


def compile_case(case: Path) -> tuple[plan.Pipeline | None, list[str]]:
    extra = (
        json.loads((case / "values.json").read_text()) if (case / "values.json").exists() else {}
    )
    values = pipeline_values(pipeline_id=FIXED_ID)
    values.update(extra.get("values", {}))
    pipeline, problems = compile_with_problems(
        (case / "config.yml").read_text(),
        filename="config.yml",
        values=values,
        params=extra.get("params"),
    )
    return pipeline, [str(p) for p in problems]


def test_there_is_a_case_per_feature() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    case = GOLDEN / name
    pipeline, problems = compile_case(case)
    warnings_file = case / "warnings.txt"
    expected_warnings = warnings_file.read_text().splitlines() if warnings_file.exists() else []
    assert pipeline is not None, "\n".join(problems)
    actual = plan.to_json(pipeline) + "\n"
    expected_file = case / "expected.json"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_file.write_text(actual)
    assert problems == expected_warnings
    assert actual == expected_file.read_text()
    # The Plan survives a JSON round trip unchanged.
    assert plan.from_json(actual) == pipeline
