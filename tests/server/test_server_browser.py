"""The pages in a real browser (Debian's chromium through Playwright) against a
real server: sign in, trigger, watch it go green live, read the job page.
Screenshots land in test-artifacts/server/."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import ADMIN, ADMIN_PASSWORD, Server

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "server"


@pytest.fixture
def page() -> Iterator[object]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is needed at /usr/bin/chromium (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(
            viewport={"width": 1400, "height": 900}, accept_downloads=True
        )
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def test_trigger_watch_and_read_a_job(server: Server, project: str, page) -> None:  # type: ignore[no-untyped-def]
    expect = playwright.expect
    page.set_default_timeout(30_000)
    page.goto(server.base + "/")
    assert "/login" in page.url  # nothing to see anonymously: sign in
    page.fill("input[name=login]", ADMIN)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("All Pipelines")

    page.goto(f"{server.base}/projects/{project}")
    page.fill("textarea[name=parameters]", "pause=8\ngreeting=bonjour")
    page.click("#trigger button")
    # The dashboard updates itself: running first, then green, without a reload.
    page.wait_for_url(re.compile(r".*/\?project="))
    table = page.locator("#pipelines")
    expect(table.locator(".badge.s-running").first).to_be_visible()
    page.screenshot(path=str(SHOTS / "01-running.png"), full_page=True)

    # Meanwhile, in a second tab, the running job's step output streams in.
    build_link = table.locator("ul.joblist a", has_text="build")
    expect(build_link).to_be_visible()
    live = page.context.new_page()
    live.set_default_timeout(30_000)
    live.goto(server.base + build_link.get_attribute("href"))
    step = live.locator("details.step", has_text="Build the greeting")
    expect(step).to_be_visible()
    step.locator("summary").click()
    expect(step.locator("pre.log")).to_contain_text("build line 40")
    expect(live.locator("h1 .badge.s-running")).to_be_visible()  # still running: it was live
    live.screenshot(path=str(SHOTS / "01b-job-live.png"), full_page=True)
    expect(live.locator("h1 .badge.s-success")).to_be_visible(timeout=60_000)
    live.close()
    expect(table.locator("tr.head .badge.s-success")).to_have_count(1, timeout=60_000)
    expect(table.locator("ul.joblist .dot.s-success")).to_have_count(2)
    page.screenshot(path=str(SHOTS / "02-green.png"), full_page=True)

    page.click("#pipelines a[href^='/workflows/']")
    graph = page.locator("svg.graph")
    expect(graph.locator("g.node")).to_have_count(2)
    expect(graph.locator("path.edge")).to_have_count(1)
    page.screenshot(path=str(SHOTS / "03-workflow.png"), full_page=True)

    page.click("svg.graph a:has(g[data-job=build])")
    expect(page.locator("h1")).to_contain_text("build")
    step = page.locator("details.step", has_text="Build the greeting")
    step.locator("summary").click()
    expect(step.locator("pre.log")).to_contain_text("build line 40")
    step.locator("input.logsearch").fill("line 7")
    expect(step.locator("pre.log mark")).to_have_count(1)
    page.screenshot(path=str(SHOTS / "04-job-steps.png"), full_page=True)
    with page.expect_download() as info:
        step.locator("a.dl").click()
    saved = SHOTS / "build-step-output.txt"
    info.value.save_as(saved)
    text = saved.read_text()
    assert "build line 1\n" in text
    assert "build line 40\n" in text

    page.click("nav.tabs >> text=ARTIFACTS")
    with page.expect_download() as art:
        page.click("ul.artifacts a")
    art_path = SHOTS / "greeting.txt"
    art.value.save_as(art_path)
    assert art_path.read_text() == "bonjour from circlet\n"

    page.goto(page.url.replace("/jobs/", "/jobs/"))  # stay on the job; go to its sibling
    page.click("nav.crumbs a[href^='/workflows/']")
    page.click("svg.graph a:has(g[data-job=test])")
    page.click("nav.tabs >> text=TESTS")
    summary = page.locator("p.summary")
    expect(summary).to_contain_text("3")
    expect(summary).to_contain_text("2 passed")
    expect(page.locator("table.tests tr", has_text="test_slow")).to_be_visible()
    page.screenshot(path=str(SHOTS / "05-tests.png"), full_page=True)
    page.click("nav.tabs >> text=TIMING")
    gantt = page.locator("svg.gantt")
    expect(gantt).to_contain_text("Run tests")
    expect(gantt).to_contain_text("Spin up environment")
    job_id = page.url.split("/jobs/")[1].split("?")[0]
    assert gantt.locator("rect").count() == len(server.svc.records.steps(job_id))
    page.screenshot(path=str(SHOTS / "06-timing.png"), full_page=True)


def test_a_100_mb_step_log_opens_as_a_window(server: Server, project: str, page) -> None:  # type: ignore[no-untyped-def]
    from circlet.engine import events as ev

    sink = server.svc.records.sink
    sink(ev.PipelineStarted("p-huge", 99, project, "main", None, "api"))
    sink(
        ev.WorkflowStarted(
            "p-huge", "w-huge", "main", ({"name": "huge", "requires": [], "type": "build"},)
        )
    )
    sink(ev.JobStarted("w-huge", "j-huge", "huge", 999))
    sink(ev.StepStarted("j-huge", 0, "Print a lot", "run"))
    line = "y" * 99 + "\n"
    for i in range(100):  # 100 chunks of 1 MB: 1,000,000 lines
        sink(ev.Output("j-huge", 0, (line * 10_000).replace("y" * 9, f"chunk{i:04d}", 1)))
    sink(ev.Output("j-huge", 0, "THE LAST LINE\n"))
    sink(ev.StepFinished("j-huge", 0, "failed", 1))
    sink(ev.JobFinished("j-huge", "failed"))
    expect = playwright.expect
    page.goto(server.base + "/login")
    page.fill("input[name=login]", ADMIN)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.goto(server.base + "/jobs/j-huge")
    step = page.locator("details.step").first  # failed: open at once
    log = step.locator("pre.log")
    more = step.locator("button.more")
    expect(more).to_be_visible()  # the view is the tail; earlier output on demand
    total = 100 * 1_000_000 + len("THE LAST LINE\n")
    tail_start = total - 262_144

    def shown() -> tuple[int, bool, bool]:
        return tuple(  # type: ignore[return-value]
            log.evaluate(
                "(el, args) => [el.textContent.length, el.textContent.includes(args[0]),"
                " el.textContent.includes(args[1])]",
                [f"{tail_start // 100 + 1}y", "THE LAST LINE"],
            )
        )

    length, first_line_shown, last_line_shown = shown()
    assert last_line_shown
    assert first_line_shown  # line numbers count from the start of the whole log
    assert length < 262_144 + 8 * 3_000  # a window (plus line numbers), not 100 MB
    more.click()
    earlier = f"{(tail_start - 262_144) // 100 + 1}y"
    page.wait_for_function(
        "([el, needle]) => el.textContent.includes(needle)", arg=[log.element_handle(), earlier]
    )
    page.screenshot(path=str(SHOTS / "07-huge-log.png"))


@pytest.mark.docker
@pytest.mark.slow
def test_lettings_on_docker_goes_green_live(tmp_path: Path, page) -> None:  # type: ignore[no-untyped-def]
    """examples/lettings (pipenv, pytest, flake8, a workspace) on the Docker engine."""
    from server_helpers import start_server

    lettings = Path(__file__).resolve().parents[2] / "examples" / "lettings"
    srv, uv, thread = start_server(tmp_path / "home", executor="docker")
    try:
        srv.svc.accounts.create_user(ADMIN, ADMIN_PASSWORD, is_admin=True)
        srv.svc.accounts.add_project(
            "gh/acme/lettings", str(lettings), kind="path", name="lettings"
        )
        expect = playwright.expect
        page.set_default_timeout(30_000)
        page.goto(srv.base + "/login")
        page.fill("input[name=login]", ADMIN)
        page.fill("input[name=password]", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.goto(srv.base + "/projects/gh/acme/lettings")
        page.click("#trigger button")
        table = page.locator("#pipelines")
        expect(table.locator(".badge.s-running").first).to_be_visible()
        expect(table.locator("tr.head .badge.s-success")).to_have_count(1, timeout=240_000)
        expect(table.locator("ul.joblist .dot.s-success")).to_have_count(3)
        page.screenshot(path=str(SHOTS / "lettings-01-green.png"), full_page=True)
        page.click("#pipelines a[href^='/workflows/']")
        graph = page.locator("svg.graph")
        expect(graph.locator("g.node")).to_have_count(3)
        expect(graph.locator("path.edge")).to_have_count(2)
        page.screenshot(path=str(SHOTS / "lettings-02-workflow.png"), full_page=True)
        page.click("svg.graph a:has(g[data-job=run_test])")
        step = page.locator("details.step", has_text="Run tests")
        step.locator("summary").click()
        expect(step.locator("pre.log")).to_contain_text("passed")
        page.screenshot(path=str(SHOTS / "lettings-03-job.png"), full_page=True)
        page.click("nav.tabs >> text=TESTS")
        expect(page.locator("p.summary")).to_contain_text("0 failed")
        page.screenshot(path=str(SHOTS / "lettings-04-tests.png"), full_page=True)
    finally:
        uv.should_exit = True
        thread.join(15)
