"""``tests glob`` / ``tests split`` / ``tests run`` logic (the functions the agent runs)."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from circlet.testing.split import (
    AUTODETECT_FAILED,
    NO_TESTS_FOUND,
    NO_TIMINGS,
    AgentError,
    SplitOptions,
    cmd_run,
    cmd_split,
    compute_weights,
    detect_timing_type,
    expand_braces,
    glob,
    node_from_env,
    parse_duration,
    parse_items,
    split,
    split_items,
)


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for rel in (
        "tests/test_a.py",
        "tests/unit/test_b.py",
        "tests/unit/deep/test_c.py",
        "tests/unit/deep/helper.py",
        "tests/conftest.py",
        "spec/x_spec.rb",
        "spec/y_spec.rb",
        "node_modules/pkg/test_z.py",
        ".hidden/test_h.py",
    ):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x" * (len(rel) * 10))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_expand_braces() -> None:
    assert expand_braces("a{b,c}d") == ["abd", "acd"]
    assert expand_braces("{x,y{1,2}}.py") == ["x.py", "y1.py", "y2.py"]
    assert expand_braces("{a,b}/{c,d}") == ["a/c", "a/d", "b/c", "b/d"]
    assert expand_braces("no{brace") == ["no{brace"]
    assert expand_braces("{single}") == ["{single}"]


def test_glob_double_star_matches_any_depth_including_none(tree: Path) -> None:
    assert glob(["tests/**/test_*.py"]) == [
        "tests/test_a.py",
        "tests/unit/deep/test_c.py",
        "tests/unit/test_b.py",
    ]


def test_glob_star_does_not_cross_directories(tree: Path) -> None:
    assert glob(["tests/*.py"]) == ["tests/conftest.py", "tests/test_a.py"]
    assert glob(["tests/*/test_?.py"]) == ["tests/unit/test_b.py"]


def test_glob_braces_classes_and_several_patterns(tree: Path) -> None:
    assert glob(["{spec,tests}/[xt]*_{spec.rb,a.py}", "tests/unit/**/helper.py"]) == [
        "spec/x_spec.rb",
        "tests/test_a.py",
        "tests/unit/deep/helper.py",
    ]
    assert glob(["spec/[!x]*.rb"]) == ["spec/y_spec.rb"]


def test_glob_everything_below_and_hidden_files(tree: Path) -> None:
    everything = glob(["**/*.py"])
    assert "node_modules/pkg/test_z.py" in everything
    assert ".hidden/test_h.py" in everything
    assert len(everything) == 7


def test_glob_literal_absolute_and_missing(tree: Path) -> None:
    assert glob(["tests/test_a.py", "tests/nope.py"]) == ["tests/test_a.py"]
    absolute = str(tree / "spec") + "/*.rb"
    assert glob([absolute]) == [f"{tree}/spec/x_spec.rb", f"{tree}/spec/y_spec.rb"]
    assert glob(["nothing/**/*.py"]) == []


def test_parse_items_and_durations() -> None:
    assert parse_items("b a\n b\n\tc  \n") == ["b", "a", "c"]
    assert parse_duration("10s") == 10
    assert parse_duration("1m30s") == 90
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration("2.5") == 2.5
    assert parse_duration("1h") == 3600
    with pytest.raises(AgentError, match="invalid duration"):
        parse_duration("10 parsecs")
    with pytest.raises(AgentError):
        parse_duration("")


def test_name_split_is_a_round_robin_over_sorted_names() -> None:
    items = [f"t{i:02d}" for i in range(10)]
    random.Random(1).shuffle(items)
    nodes = [split(items, index=i, total=3) for i in range(3)]
    assert nodes == [
        ["t00", "t03", "t06", "t09"],
        ["t01", "t04", "t07"],
        ["t02", "t05", "t08"],
    ]


def test_every_item_lands_on_exactly_one_node_and_order_does_not_matter() -> None:
    rng = random.Random(7)
    items = [f"tests/test_{i}.py" for i in range(57)]
    timings = {"filename": {item: rng.uniform(0.1, 30) for item in items}}
    shuffled = list(items)
    rng.shuffle(shuffled)
    for split_by in ("name", "timings"):
        a = [split(items, index=i, total=5, split_by=split_by, timings=timings) for i in range(5)]
        b = [
            split(shuffled, index=i, total=5, split_by=split_by, timings=timings) for i in range(5)
        ]
        assert a == b
        flat = [x for node in a for x in node]
        assert sorted(flat) == sorted(items)
        assert len(flat) == len(set(flat))


def _loads(nodes: list[list[str]], times: dict[str, float]) -> list[float]:
    return [sum(times[i] for i in node) for node in nodes]


def test_timing_split_balances_better_than_names() -> None:
    rng = random.Random(42)
    items = [f"spec/s{i:03d}_spec.rb" for i in range(200)]
    # A few very slow files among many fast ones: the case name splitting gets wrong.
    times = {item: rng.choice([0.5, 1, 2, 3, 60, 120]) for item in items}
    timings = {"filename": times}
    by_time = split_items(items, compute_weights(items, split_by="timings", timings=timings), 4)
    by_name = split_items(items, compute_weights(items), 4)
    loads = _loads(by_time, times)
    # Greedy's guarantee: the fullest node exceeds the emptiest by at most one test.
    assert max(loads) - min(loads) <= max(times.values())
    assert max(loads) <= sum(times.values()) / 4 + max(times.values())
    assert max(loads) < max(_loads(by_name, times))


def test_autodetect_picks_the_type_that_knows_the_items() -> None:
    timings = {
        "filename": {"tests/test_a.py": 1.0},
        "classname": {"tests.test_a.TestX": 3.0, "tests.test_a.TestY": 1.0},
        "testname": {},
    }
    assert detect_timing_type(["tests/test_a.py"], timings) == "filename"
    assert detect_timing_type(["tests.test_a.TestX", "tests.test_a.TestY"], timings) == "classname"
    assert detect_timing_type(["nope"], timings) is None


def test_file_timings_match_paths_spelled_differently() -> None:
    timings = {"filename": {"/home/circleci/project/tests/test_a.py": 9.0, "tests/b.py": 2.0}}
    weights = compute_weights(
        ["./tests/test_a.py", "tests/b.py"], split_by="timings", timings=timings
    )
    assert weights == [9.0, 2.0]


def test_missing_timings_fall_back_to_names_with_circleci_notices() -> None:
    notes: list[str] = []
    items = ["b", "a", "c"]
    assert compute_weights(items, split_by="timings", timings=None, warn=notes.append) == [1.0] * 3
    assert notes == [NO_TIMINGS]
    notes.clear()
    weights = compute_weights(
        items, split_by="timings", timings={"filename": {"zzz": 1.0}}, warn=notes.append
    )
    assert weights == [1.0] * 3
    assert notes == [AUTODETECT_FAILED]
    assert (
        AUTODETECT_FAILED == "Error autodetecting timing type, falling back to weighting by name."
    )


def test_partial_timings_use_time_default_for_the_rest() -> None:
    notes: list[str] = []
    weights = compute_weights(
        ["a.py", "new.py"],
        split_by="timings",
        timings={"filename": {"a.py": 5.0}},
        time_default=parse_duration("40s"),
        warn=notes.append,
    )
    assert weights == [5.0, 40.0]
    assert notes == ['No timing found for "new.py"']


def test_explicit_timing_type_and_filesize(tree: Path) -> None:
    timings = {"filename": {"x": 100.0}, "classname": {"x": 1.0, "y": 3.0}}
    assert compute_weights(
        ["x", "y"], split_by="timings", timings_type="classname", timings=timings
    ) == [
        1.0,
        3.0,
    ]
    sizes = compute_weights(["spec/x_spec.rb", "tests/test_a.py", "gone.rb"], split_by="filesize")
    assert sizes == [140.0, 150.0, 0.0]


def test_node_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCLE_NODE_INDEX", "2")
    monkeypatch.setenv("CIRCLE_NODE_TOTAL", "4")
    assert node_from_env(None, None) == (2, 4)
    assert node_from_env(0, None) == (0, 4)
    monkeypatch.delenv("CIRCLE_NODE_INDEX")
    monkeypatch.delenv("CIRCLE_NODE_TOTAL")
    assert node_from_env(None, None) == (0, 1)
    with pytest.raises(AgentError, match="between 0 and 2"):
        node_from_env(3, 3)
    with pytest.raises(AgentError, match="at least 1"):
        node_from_env(0, 0)
    monkeypatch.setenv("CIRCLE_NODE_TOTAL", "two")
    with pytest.raises(AgentError, match="must be integers"):
        node_from_env(None, None)


def test_cmd_split_reads_files_and_the_timings_file(tmp_path: Path) -> None:
    listing = tmp_path / "tests.txt"
    listing.write_text("slow.py\nfast1.py\nfast2.py\nfast3.py\n")
    timings = tmp_path / "timings.json"
    timings.write_text(json.dumps({"filename": {"slow.py": 30, "fast1.py": 1, "fast2.py": 1}}))
    outputs = []
    for index in (0, 1):
        out, err = io.StringIO(), io.StringIO()
        options = SplitOptions(split_by="timings", index=index, total=2, timings_file=str(timings))
        code = cmd_split(
            [str(listing)], options, show_counts=True, stdin=io.StringIO(), out=out, err=err
        )
        assert code == 0
        outputs.append(out.getvalue().split())
        assert 'No timing found for "fast3.py"' in err.getvalue()
        assert f"{len(outputs[-1])} of 4 tests on this node" in err.getvalue()
    assert outputs == [["slow.py"], ["fast1.py", "fast2.py", "fast3.py"]]


def test_cmd_split_bad_timings_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "t.json"
    bad.write_text('{"filename": {"a": 1},\n oops}')
    options = SplitOptions(split_by="timings", timings_file=str(bad), index=0, total=1)
    with pytest.raises(AgentError, match=r"t\.json:2:2: invalid timings JSON"):
        cmd_split([], options, stdin=io.StringIO("a"), out=io.StringIO(), err=io.StringIO())
    with pytest.raises(AgentError, match="cannot read the test list"):
        cmd_split(
            [str(tmp_path / "none.txt")],
            SplitOptions(),
            stdin=io.StringIO(),
            out=io.StringIO(),
            err=io.StringIO(),
        )


def test_cmd_run_feeds_the_command_its_share_on_stdin(tmp_path: Path) -> None:
    got = tmp_path / "got.txt"
    err = io.StringIO()
    code = cmd_run(
        f"cat > {got}; exit 3",
        SplitOptions(index=1, total=2),
        verbose=True,
        stdin=io.StringIO("d c b a"),
        out=io.StringIO(),
        err=err,
    )
    assert code == 3  # the command's own exit code
    assert got.read_text() == "b\nd\n"
    assert "Running 2 of 4 tests" in err.getvalue()


def test_cmd_run_without_tests_for_this_node_does_not_run_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    out = io.StringIO()
    code = cmd_run(
        f"touch {marker}",
        SplitOptions(index=2, total=3),
        stdin=io.StringIO("only-one another"),
        out=out,
        err=io.StringIO(),
    )
    assert code == 0
    assert out.getvalue() == NO_TESTS_FOUND + "\n"
    assert not marker.exists()
