"""``<< … >>`` substitution, expressions and logic statements."""

from __future__ import annotations

from typing import Any

import pytest

from circlet.config.errors import Problems
from circlet.config.expr import evaluate, truthy
from circlet.config.load import YList, YMap, load_text
from circlet.config.logic import LogicEvaluator
from circlet.config.subst import Bindings, Substituter
from circlet.config.values import pipeline_values

BINDINGS = Bindings(
    pipeline={**pipeline_values(branch="main", number=7), "pipeline.git.tag": ""},
    pipeline_params={"flag": True, "n": 3},
    params={"name": "web", "on": False, "count": 2, "steps": YList(), "ratio": 1.5},
    matrix={"v": "3.10"},
)


def sub(value: Any, b: Bindings = BINDINGS) -> tuple[Any, list[str]]:
    problems = Problems()
    result = Substituter(problems).value(value, b, None, "x")
    return result, [p.message for p in problems.items]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<< parameters.name >>", "web"),
        ("<< parameters.on >>", False),  # a lone marker keeps its type
        ("<<parameters.count>>", 2),
        ("<< pipeline.parameters.flag >>", True),
        ("<< pipeline.number >>", 7),
        ("<< matrix.v >>", "3.10"),
        ("app-<< parameters.name >>-<< matrix.v >>", "app-web-3.10"),
        (
            "on=<< parameters.on >> n=<< pipeline.parameters.n >> r=<< parameters.ratio >>",
            "on=false n=3 r=1.5",
        ),
        ("tag=[<< pipeline.git.tag >>]", "tag=[]"),
        ("\\<< parameters.name >> stays", "<< parameters.name >> stays"),
        ("cat <<EOF >> out", "cat <<EOF >> out"),
        ("a << b >> c", "a << b >> c"),
        ('<< pipeline.git.branch == "main" and 10 or 1 >>', 10),
        ('on << pipeline.git.tag or "no tag" >>', "on no tag"),
        ("no markers at all", "no markers at all"),
    ],
)
def test_substitution(text: str, expected: Any) -> None:
    result, problems = sub(text)
    assert problems == []
    assert result == expected
    assert type(result) is type(expected)


def test_containers_are_copied_only_when_changed() -> None:
    data = load_text("a: [x, << parameters.name >>]\nb: {c: plain}\n", "t.yml", Problems())
    assert isinstance(data, YMap)
    result, problems = sub(data)
    assert problems == []
    assert result == {"a": ["x", "web"], "b": {"c": "plain"}}
    assert result is not data
    assert result["b"] is data["b"]  # untouched subtree shared
    assert data["a"][1] == "<< parameters.name >>"  # the loaded data is never mutated
    assert str(result["a"].item_loc(1)) == "t.yml:1:8"  # positions carried over


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<< parameters.nope >>", "unknown parameter 'nope' in << parameters.nope >>"),
        ("x << pipeline.nope >>", "unknown pipeline value << pipeline.nope >>"),
        ("<< matrix.w >>", "<< matrix.w >> is not a matrix parameter here"),
        (
            "x << parameters.steps >>",
            "<< parameters.steps >> is a list and cannot be part of a string",
        ),
        ('<< pipeline.number > "a" >>', 'in << pipeline.number > "a" >>: > takes two numbers'),
    ],
)
def test_substitution_problems(text: str, message: str) -> None:
    result, problems = sub(text)
    assert problems == [message]
    assert result == text  # left as written


def test_no_parameters_scope_and_version_2() -> None:
    outside = Bindings(pipeline=BINDINGS.pipeline, pipeline_params={})
    assert sub("<< parameters.x >>", outside)[1] == [
        "<< parameters.x >> is used where there are no parameters"
    ]
    v20 = Bindings(pipeline=BINDINGS.pipeline, pipeline_params={}, enabled=False)
    assert sub("<< parameters.x >>", v20) == ("<< parameters.x >>", [])


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), (False, False), (0, False), (0.0, False), (float("nan"), False), ("", False),
     (True, True), (1, True), ("false", True), ("0", True), (YList([1]), True)],
)  # fmt: skip
def test_truthiness(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


def test_expression_precedence_and_types() -> None:
    def look(ref: str) -> Any:
        return {"pipeline.a": True, "pipeline.b": False, "pipeline.n": 5}[ref]

    assert evaluate("not pipeline.a and pipeline.b", look) is False
    assert evaluate("not (pipeline.a and pipeline.b)", look) is True
    assert evaluate("pipeline.n >= 5 and pipeline.n < 6", look) is True
    assert evaluate('pipeline.n == "5"', look) is False  # different types are never equal
    assert evaluate('pipeline.n != "5"', look) is True
    assert evaluate("'release/x' starts-with 'release/'", look) is True


def logic(text: str) -> tuple[bool, list[str]]:
    problems = Problems()
    data = load_text(text, "w.yml", problems)
    truth = LogicEvaluator(problems, BINDINGS).truth(data, None, "when")
    return truth, [str(p) for p in problems.items]


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("true", True),
        ("''", False),
        ("{and: [true, 1, x]}", True),
        ("{and: [true, 0]}", False),
        ("{or: [false, null, 0, x]}", True),
        ("{not: {equal: [1, 2]}}", True),
        ("{equal: [main, main, main]}", True),
        ("{equal: [true, 1]}", False),
        ("{matches: {pattern: '^ma', value: main}}", False),  # must match whole
        ("{matches: {pattern: '^ma.*$', value: main}}", True),
        ("pipeline.number == 7", True),
        ("branch == main", True),  # no reference: a plain (truthy) string
        ('pipeline.git.branch == "main"', True),
    ],
)
def test_logic_statements(statement: str, expected: bool) -> None:
    assert logic(statement) == (expected, [])


def test_logic_problems_are_located() -> None:
    truth, problems = logic("or: []\n")
    assert truth is False
    assert problems == ["w.yml:1:1: error: 'or' takes a non-empty list of statements (at when.or)"]
