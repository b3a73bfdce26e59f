"""Property tests: whatever the input, the compiler returns a Pipeline or
reports located problems (ConfigError); it never raises anything else."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circlet import plan
from circlet.config import ConfigError, compile_text, compile_with_problems

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [
    "version", "jobs", "workflows", "commands", "executors", "parameters", "orbs", "setup",
    "docker", "machine", "macos", "executor", "steps", "run", "command", "name", "when",
    "unless", "condition", "and", "or", "not", "equal", "matches", "pattern", "value",
    "requires", "matrix", "alias", "exclude", "filters", "branches", "tags", "only", "ignore",
    "type", "default", "enum", "image", "environment", "parallelism", "pre-steps",
    "post-steps", "context", "triggers", "schedule", "cron", "checkout", "save_cache",
    "restore_cache", "key", "keys", "paths", "a", "b", "build", "test", "<<",
]  # fmt: skip
MARKERS = [
    "<< parameters.a >>", "<< parameters.b >>", "<< pipeline.git.branch >>",
    "<< pipeline.parameters.a >>", "<< matrix.a >>", "\\<< parameters.a >>", "<<",
    ">>", "<< pipeline.number == 1 and 2 or 3 >>", "<< ( >>", "<<EOF", "2.1", "/re/",
    "string", "boolean", "integer", "steps", "executor", "enum", "env_var_name",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.floats(allow_nan=True, allow_infinity=False, width=32),
    st.sampled_from(MARKERS + KEYS),
    st.text(max_size=12),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    ),
    max_leaves=40,
)


def _compile_never_crashes(text: str) -> None:
    pipeline, problems = compile_with_problems(text, filename="fuzz.yml")
    assert all(p.severity in ("error", "warning") for p in problems)
    if pipeline is None:
        assert any(p.is_error for p in problems)
        with pytest.raises(ConfigError) as info:
            compile_text(text, filename="fuzz.yml")
        assert info.value.problems
        assert all(p.is_error for p in info.value.problems)
    else:
        assert not any(p.is_error for p in problems)
        plan.from_json(plan.to_json(pipeline))  # the Plan is always serializable


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    _compile_never_crashes(text)


@FUZZ
@given(trees)
def test_arbitrary_structures(tree: Any) -> None:
    _compile_never_crashes(yaml.safe_dump(tree, allow_unicode=True))


@FUZZ
@given(
    st.dictionaries(st.sampled_from(KEYS), trees, max_size=4),
    st.lists(st.sampled_from([*MARKERS, " ", "x", "\n", "\\"]), max_size=12).map("".join),
)
def test_config_shaped_with_substitutions(extra: dict[str, Any], command: str) -> None:
    """A valid skeleton whose parameter values and command are fuzzed."""
    config = {
        "version": 2.1,
        "parameters": {"a": {"type": "string", "default": "x"}},
        "commands": {
            "c": {
                "parameters": {
                    "a": {"type": "string", "default": "y"},
                    "b": {"type": "steps", "default": []},
                },
                "steps": [{"run": command}, "<< parameters.b >>"],
            }
        },
        "jobs": {
            "build": {
                "parameters": {"a": {"type": "string", "default": "z"}},
                "docker": [{"image": "cimg/base:current"}],
                "steps": [{"c": extra}, {"run": command}],
            }
        },
        "workflows": {
            "main": {"jobs": [{"build": {"matrix": {"parameters": {"a": ["1", command]}}}}]}
        },
    }
    _compile_never_crashes(yaml.safe_dump(config, allow_unicode=True))


def test_anchors_and_redefinitions_fuzz_seed() -> None:
    """A hand-written worst case: recursive alias, re-defined anchors, bad merges."""
    text = "a: &x [1, *x]\nb: &y {k: 1}\nb2: &y {k: 2}\nc: {<<: [*y, 3]}\nversion: 2.1\n"
    _compile_never_crashes(text)
