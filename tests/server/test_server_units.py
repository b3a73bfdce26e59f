"""Pure parts of the server: DAG layout, cron, log windows, slugs, parameters."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from server_helpers import Server

from circlet.engine import events as ev
from circlet.server import code, svg
from circlet.server.cron import CronError, parse_cron
from circlet.server.logs import WINDOW
from circlet.server.pages.project import parse_parameters


def node(name: str, *requires: str) -> svg.GraphNode:
    return svg.GraphNode(name, tuple(requires), "success", 1.0)


def test_layers_follow_requires_and_barycenters() -> None:
    nodes = [
        node("flake8_test"),
        node("run_test"),
        node("build", "flake8_test", "run_test"),
        node("deploy", "build"),
        node("notify", "deploy"),
        node("docs"),
    ]
    columns = [[n.name for n in col] for col in svg.layers(nodes)]
    assert columns == [["flake8_test", "run_test", "docs"], ["build"], ["deploy"], ["notify"]]
    drawn = svg.workflow_graph(nodes)
    assert drawn.count('class="edge"') == 4
    assert drawn.count('<g class="node') == 6


def test_layers_survive_cycles_and_unknown_requirements() -> None:
    columns = svg.layers([node("a", "b"), node("b", "a"), node("c", "ghost")])
    assert sorted(n.name for col in columns for n in col) == ["a", "b", "c"]


def test_text_in_pictures_is_escaped() -> None:
    drawn = svg.workflow_graph([node("<script>")])
    assert "<script>" not in drawn
    assert "&lt;script&gt;" in drawn


@pytest.mark.parametrize(
    ("expr", "when", "fires"),
    [
        ("0 0 * * *", (2026, 1, 5, 0, 0), True),
        ("0 0 * * *", (2026, 1, 5, 0, 1), False),
        ("*/15 9-17 * * mon-fri", (2026, 1, 5, 9, 45), True),  # a Monday
        ("*/15 9-17 * * mon-fri", (2026, 1, 4, 9, 45), False),  # a Sunday
        ("30 4 1 * 0", (2026, 2, 1, 4, 30), True),  # the 1st (a Sunday too)
        ("30 4 1 * 0", (2026, 2, 8, 4, 30), True),  # a Sunday: dom OR dow
        ("30 4 1 * 0", (2026, 2, 9, 4, 30), False),
        ("0 12 * jan,jul *", (2026, 7, 3, 12, 0), True),
    ],
)
def test_cron_matches(expr: str, when: tuple[int, ...], fires: bool) -> None:
    stamp = time.gmtime(time.mktime((*when, 0, 0, 0, 0)) - time.timezone)
    assert parse_cron(expr).matches(stamp) is fires


@pytest.mark.parametrize("expr", ["* * * *", "61 * * * *", "*/0 * * * *", "a * * * *"])
def test_bad_cron_names_the_problem(expr: str) -> None:
    with pytest.raises(CronError):
        parse_cron(expr)


def test_slugs_and_parameters() -> None:
    assert code.default_slug("https://github.com/acme/app.git") == "gh/acme/app"
    assert code.default_slug("git@github.com:acme/app.git") == "gh/acme/app"
    assert code.default_slug("/srv/code/my app") == "circlet/local/my-app"
    assert code.is_git_url("https://gitlab.com/a/b")
    assert not code.is_git_url("/srv/code")
    assert parse_parameters("a=1\nb=true\n# note\nc=x y") == {"a": 1, "b": True, "c": "x y"}
    with pytest.raises(ValueError, match="not key=value"):
        parse_parameters("oops")


def test_a_big_log_is_served_in_windows(server: Server, tmp_path: Path) -> None:
    """20 MB of output in 1 MB chunks: pages get windows, search and download get all."""
    sink = server.svc.records.sink
    pid, wid, jid = "p-big", "w-big", "j-big"
    sink(ev.PipelineStarted(pid, 1, "circlet/acme/big", "main", None, "api"))
    sink(ev.WorkflowStarted(pid, wid, "main", ({"name": "big", "requires": [], "type": "build"},)))
    sink(ev.JobStarted(wid, jid, "big", 1))
    sink(ev.StepStarted(jid, 2, "Lots of output", "run"))
    line = "x" * 99 + "\n"  # 100 characters a line
    chunk = line * 10_000  # 1 MB
    for i in range(20):
        sink(ev.Output(jid, 2, chunk.replace("x" * 99, f"{i:02d}" + "x" * 97, 1)))
    sink(ev.StepFinished(jid, 2, "success", 0))
    sink(ev.JobFinished(jid, "success"))
    server.svc.accounts.add_project("circlet/acme/big", str(tmp_path), kind="path")
    total = 20 * len(chunk)
    c = server.client()
    from server_helpers import login

    login(c)
    tail = c.get(f"/ui-api/jobs/{jid}/steps/2/log").json()
    assert tail["total"] == total
    assert len(tail["text"]) == WINDOW
    assert tail["end"] == total
    assert tail["first_line"] == (total - WINDOW) // 100 + 1  # 100-character lines
    middle = c.get(
        f"/ui-api/jobs/{jid}/steps/2/log",
        params={"start": 5 * len(chunk), "end": 5 * len(chunk) + 300},
    ).json()
    assert middle["text"].startswith("05x")
    assert middle["first_line"] == 50_001
    hits = c.get(f"/ui-api/jobs/{jid}/steps/2/search", params={"q": "13xx"}).json()["hits"]
    assert [h["line"] for h in hits] == [130_001]
    raw = c.get(f"/jobs/{jid}/steps/2/output.txt")
    assert raw.status_code == 200
    assert len(raw.content) == total
    assert "attachment" in raw.headers["content-disposition"]
