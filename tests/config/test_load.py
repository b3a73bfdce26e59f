"""The located YAML loader: positions, anchors, merge keys, YAML 1.1 scalars."""

from __future__ import annotations

import pytest
import yaml

from circlet.config.errors import Problems
from circlet.config.load import YList, YMap, load_text


def load(text: str) -> tuple[object, list[str]]:
    problems = Problems()
    return load_text(text, "c.yml", problems), [str(p) for p in problems.items]


def test_positions_of_keys_items_and_containers() -> None:
    data, problems = load("a:\n  b: [x, y]\n  c:\n    - k: v\n")
    assert problems == []
    assert isinstance(data, YMap)
    inner = data["a"]
    assert isinstance(inner, YMap)
    assert str(data.key_loc("a")) == "c.yml:1:1"
    assert str(inner.key_loc("c")) == "c.yml:3:3"
    assert str(inner.loc()) == "c.yml:2:3"
    items = inner["b"]
    assert isinstance(items, YList)
    assert [str(items.item_loc(i)) for i in range(2)] == ["c.yml:2:7", "c.yml:2:10"]
    assert str(inner["c"][0].key_loc("k")) == "c.yml:4:7"


def test_redefined_anchor_later_definition_wins_from_there_on() -> None:
    text = "a: &x 1\nb: *x\nc: &x 2\nd: *x\n"
    # PyYAML itself refuses this; CircleCI (SnakeYAML) accepts it.
    with pytest.raises(yaml.YAMLError, match="duplicate anchor"):
        yaml.safe_load(text)
    data, problems = load(text)
    assert problems == []
    assert data == {"a": 1, "b": 1, "c": 2, "d": 2}


def test_merge_keys_single_and_list_explicit_keys_win() -> None:
    text = (
        "one: &one {a: 1, shared: one}\n"
        "two: &two {b: 2, shared: two}\n"
        "m:\n  <<: [*one, *two]\n  c: 3\n  a: own\n"
        "s:\n  <<: *two\n"
    )
    data, problems = load(text)
    assert problems == []
    assert isinstance(data, YMap)
    assert list(data["m"].items()) == [("a", "own"), ("shared", "one"), ("b", 2), ("c", 3)]
    assert data["s"] == {"b": 2, "shared": "two"}
    # A merged key keeps the position it was written at.
    assert str(data["s"].key_loc("b")) == "c.yml:2:12"


def test_yaml_11_scalars_and_strings() -> None:
    data, _ = load(
        "v: 2.1\nq: '2.1'\ny: yes\no: off\nn: ~\ni: 010\nd: 2024-01-02\nt: !!str 3\nk: !!int '7'\n"
    )
    assert data == {
        "v": 2.1,
        "q": "2.1",
        "y": True,
        "o": False,
        "n": None,
        "i": 8,  # YAML 1.1 octal, as SnakeYAML reads it
        "d": "2024-01-02",  # dates stay text
        "t": "3",
        "k": 7,
    }


def test_keys_are_their_source_text() -> None:
    data, _ = load("on: 1\n3.10: x\ntrue: y\n")
    assert data == {"on": 1, "3.10": "x", "true": "y"}


def test_problems_are_located_and_do_not_raise() -> None:
    cases = {
        "a: *nope\n": "c.yml:1:4: error: unknown anchor 'nope' (an alias must follow its anchor)",
        "a: &x [1, *x]\n": "c.yml:1:11: error: unknown anchor 'x' "
        "(an alias must follow its anchor)",
        "a: 1\na: 2\n": "c.yml:2:1: warning: duplicate key 'a': the later value is used",
        "a: !!int nope\n": "c.yml:1:4: error: 'nope' is not a valid !!int value",
        "a: !custom x\n": "c.yml:1:4: warning: YAML tag !custom is not supported; "
        "the value is read as a string",
        "a: 1\n---\nb: 2\n": "c.yml:2:1: error: a config holds one YAML document, "
        "but this file has more",
        "a: [1\n": "c.yml:2:1: error: invalid YAML: while parsing a flow sequence: "
        "did not find expected ',' or ']'",
        "{[a]: 1}\n": "c.yml:1:2: error: a mapping key must be a plain string",
        "<<: 3\n": "c.yml:1:5: error: a merge key '<<' takes a mapping or a list of mappings",
    }
    for text, expected in cases.items():
        _, problems = load(text)
        assert problems[:1] == [expected], text


def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    _, problems = load("[" * 2000 + "]" * 2000)
    assert len(problems) == 1
    assert "nesting deeper than" in problems[0] or "invalid YAML" in problems[0]
