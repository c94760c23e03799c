"""The dashboard page in headless Chromium, driven by Playwright, against a real ``conveyor
dashboard`` server: memory:// (the server's own workers run the jobs), a SQLite file and Redis
(a ``conveyor worker`` process runs them).

The browser is the system's Chromium (Debian's ``chromium``; ``CONVEYOR_CHROMIUM`` names
another binary); Playwright never downloads one. Where there is none, the tests skip with a
message, unless ``CONVEYOR_REQUIRE_BROWSER=1`` (set by CI's ``.ci/run``) makes that a failure.
Each test saves a screenshot under ``artifacts/`` and prints its path.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import conveyor
from tests.web.served import REPO, WAIT, Served

pytestmark = pytest.mark.slow

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # never fetch a browser
ARTIFACTS = REPO / "artifacts"
TOKEN = "dashboard-test-token"
TIMEOUT = WAIT * 1000  # Playwright's waits, in ms: how long something that should happen may take


def chromium_path() -> str | None:
    """The system's Chromium: ``CONVEYOR_CHROMIUM``, else ``chromium`` or ``chromium-browser``
    on the PATH."""
    given = os.environ.get("CONVEYOR_CHROMIUM")
    if given:
        return given
    return shutil.which("chromium") or shutil.which("chromium-browser")


def unavailable(why: str) -> None:
    """Skip (a developer's machine with no browser) or fail (CI requires the browser tests)."""
    if os.environ.get("CONVEYOR_REQUIRE_BROWSER") == "1":
        pytest.fail(f"CONVEYOR_REQUIRE_BROWSER=1 but {why}", pytrace=False)
    pytest.skip(f"browser tests skipped: {why} (install Debian's chromium to run them)")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    path = chromium_path()
    if path is None:
        unavailable("no chromium binary on the PATH")
    elif not os.access(path, os.X_OK):
        unavailable(f"{path} is not an executable chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, browser: Any
) -> Iterator[Served]:
    """A dashboard server on each backend, shared by the tests of this module."""
    folder = tmp_path_factory.mktemp(f"dashboard-{request.param}")
    name = f"dash{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        url, durable = "memory://", False
    elif request.param == "sqlite":
        url, durable = "sqlite:///" + str(folder / "jobs.db"), True
    else:
        url, durable = request.getfixturevalue("redis_url"), True
    server = Served(folder, url, token=TOKEN, durable=durable, name=name).start()
    server.backend = request.param  # type: ignore[attr-defined]
    yield server
    server.stop()


class Page:
    """A tab on the dashboard that records what the console says and what it fetches."""

    def __init__(self, page: Any, served: Served) -> None:
        self.page = page
        self.served = served
        self.problems: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("request", lambda req: self.requests.append(req.url))
        page.set_default_timeout(TIMEOUT)

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")

    def open(self, *, token: bool = True) -> None:
        suffix = f"/?token={TOKEN}" if token else "/"
        self.page.goto(self.served.base + suffix)
        self.expect(self.page.locator("#live")).to_have_attribute("data-state", "live")
        # a mark that a reload would wipe: the page must stay this same document
        self.page.evaluate("window.__sameDocument = true")

    def row(self, job_id: str) -> Any:
        return self.page.locator(f'#jobs tbody tr[data-id="{job_id}"]')

    def expect(self, locator: Any) -> Any:
        from playwright.sync_api import expect

        return expect(locator)

    def not_reloaded(self) -> bool:
        return bool(self.page.evaluate("window.__sameDocument === true"))

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"dashboard-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path


@pytest.fixture
def tab(browser: Any, served: Served, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    made = Page(context.new_page(), served)
    yield made
    context.close()
    backend = getattr(served, "backend", "")
    others = [url for url in made.requests if not url.startswith(served.base + "/")]
    assert others == [], f"the page fetched from elsewhere: {others}"
    assert made.problems == [], f"{request.node.name} [{backend}]: {made.problems}"


def test_the_page_loads_with_counts_workers_and_no_console_error(tab: Page, served: Served):
    tab.open()
    page = tab.page
    assert page.title() == "conveyor dashboard"
    for status in ("waiting", "scheduled", "running", "finished", "failed", "cancelled"):
        tab.expect(page.locator(f'#counts [data-status="{status}"]')).to_be_visible()
    # the token came in the address once: kept for the tab, gone from the address bar
    assert "token" not in page.url
    assert page.evaluate("sessionStorage.getItem('conveyor.token')") == TOKEN
    if served.durable:  # the worker process registered; on memory:// the server's own workers
        tab.expect(page.locator("#workers li.w-alive").first).to_be_visible()
    tab.screenshot(f"loaded-{served.backend}")  # type: ignore[attr-defined]


def test_a_submitted_job_appears_and_turns_finished_without_a_reload(tab: Page, served: Served):
    tab.open()
    gate = f"live-{uuid.uuid4().hex[:6]}"
    job_id = served.submit("gated", gate)
    row = tab.row(job_id)
    # it shows up from the event stream, still active (its gate is closed)
    tab.expect(row).to_have_attribute("data-status", re.compile("^(waiting|running)$"))
    served.wait_for(lambda: served.started(gate), "the gated job's start")
    tab.expect(row).to_have_attribute("data-status", "running")
    tab.expect(tab.page.locator(f'.gantt g.job[data-id="{job_id}"]')).to_have_attribute(
        "data-status", "running"
    )
    served.go(gate)
    tab.expect(row).to_have_attribute("data-status", "finished")
    tab.expect(tab.page.locator(f'.gantt g.job[data-id="{job_id}"]')).to_have_attribute(
        "data-status", "finished"
    )
    assert tab.not_reloaded()
    # its detail shows what it ran and what it returned
    row.click()
    detail = tab.page.locator("#detail")
    tab.expect(detail).to_have_attribute("data-id", job_id)
    tab.expect(detail).to_contain_text(gate)
    assert served.record(job_id)["result"] == gate
    tab.screenshot(f"finished-{served.backend}")  # type: ignore[attr-defined]


def test_cancel_of_a_running_job_from_its_button(tab: Page, served: Served):
    tab.open()
    gate = f"cancel-{uuid.uuid4().hex[:6]}"
    job_id = served.submit("gated", gate)
    served.wait_for(lambda: served.started(gate), "the gated job's start")
    tab.row(job_id).click()
    detail = tab.page.locator("#detail")
    tab.expect(detail).to_have_attribute("data-status", "running")
    detail.locator("#cancel").click()
    tab.expect(detail).to_have_attribute("data-status", "cancelled")
    tab.expect(tab.row(job_id)).to_have_attribute("data-status", "cancelled")
    assert served.status(job_id) == "cancelled"
    assert tab.not_reloaded()
    served.go(gate)  # lets go of the thread, if it still runs


def test_retry_of_a_failed_job_from_its_button(tab: Page, served: Served):
    tab.open()
    name = f"flaky-{uuid.uuid4().hex[:6]}"
    job_id = served.submit("flaky", name)
    row = tab.row(job_id)
    tab.expect(row).to_have_attribute("data-status", "failed")
    row.click()
    detail = tab.page.locator("#detail")
    tab.expect(detail.locator("pre.error")).to_contain_text(f"RuntimeError: {name} is not ready")
    tab.expect(detail.locator("pre.traceback")).to_contain_text("Traceback")
    served.mend(name)
    detail.locator("#retry").click()
    tab.expect(detail).to_have_attribute("data-status", "finished")
    tab.expect(row).to_have_attribute("data-status", "finished")
    # the failure it had before the retry is kept in its history
    tab.expect(detail).to_contain_text("Earlier ends (1)")
    tab.expect(detail.locator("dt", has_text="retried")).to_have_count(1)
    record = served.record(job_id)
    assert (record["status"], record["result"], len(record["history"])) == ("finished", name, 1)


def test_without_the_token_cancel_is_refused_and_changes_nothing(tab: Page, served: Served):
    tab.open(token=False)
    gate = f"refused-{uuid.uuid4().hex[:6]}"
    job_id = served.submit("gated", gate)
    served.wait_for(lambda: served.started(gate), "the gated job's start")
    tab.row(job_id).click()
    tab.page.locator("#detail #cancel").click()
    toast = tab.page.locator("#toast")
    tab.expect(toast).to_contain_text("bearer token")
    tab.expect(toast).to_have_attribute("data-kind", "error")
    assert served.status(job_id) == "running"
    served.go(gate)
    tab.expect(tab.row(job_id)).to_have_attribute("data-status", "finished")
    # the refused request shows in the console as a failed load; nothing else may
    tab.problems = [p for p in tab.problems if "401" not in p]


def test_job_data_is_shown_as_text_never_as_markup(tab: Page, served: Served):
    tab.open()
    hostile = "<img src=x onerror=window.__owned=1><b id=injected>x</b>"  # no quote: JSON keeps it
    job_id = served.submit("add", hostile, "!")
    row = tab.row(job_id)
    tab.expect(row).to_have_attribute("data-status", "finished")
    row.click()
    detail = tab.page.locator("#detail")
    tab.expect(detail).to_contain_text(hostile + "!")  # the result, as the text it is
    tab.expect(row).to_contain_text("onerror")
    assert tab.page.locator("#injected").count() == 0
    assert tab.page.evaluate("window.__owned === undefined")


def test_the_table_filters_by_status_task_and_text(tab: Page, served: Served):
    tab.open()
    marker = f"find-{uuid.uuid4().hex[:6]}"
    added = served.submit("add", marker, "")
    failed = served.submit("flaky", f"never-{marker}")
    tab.expect(tab.row(added)).to_have_attribute("data-status", "finished")
    tab.expect(tab.row(failed)).to_have_attribute("data-status", "failed")
    page = tab.page
    page.select_option("#filter-status", "failed")
    tab.expect(tab.row(added)).to_have_count(0)
    tab.expect(tab.row(failed)).to_have_count(1)
    page.select_option("#filter-status", "")
    page.fill("#filter-task", "add")
    page.press("#filter-task", "Enter")
    tab.expect(tab.row(failed)).to_have_count(0)
    tab.expect(tab.row(added)).to_have_count(1)
    page.fill("#filter-task", "")
    page.press("#filter-task", "Enter")
    page.fill("#filter-text", f"never-{marker}")
    tab.expect(page.locator("#jobs tbody tr")).to_have_count(1)
    tab.expect(tab.row(failed)).to_have_count(1)


def test_the_table_pages_newest_first(tab: Page, served: Served):
    tab.open()
    page = tab.page
    page.select_option("#page-size", "25")
    ids = [served.submit("add", i, 1) for i in range(26)]
    tab.expect(tab.row(ids[-1])).to_have_attribute("data-status", "finished")
    total = served.get("/api/jobs?limit=1")["total"]
    tab.expect(page.locator("#page-info")).to_have_text(f"1\u201325 of {total}")
    tab.expect(page.locator("#jobs tbody tr").first).to_have_attribute("data-id", ids[-1])
    tab.expect(tab.row(ids[0])).to_have_count(0)  # the oldest of them is on the next page
    page.click("#next")
    tab.expect(page.locator("#page-info")).to_have_text(re.compile(f"^26\u2013.* of {total}$"))
    tab.expect(tab.row(ids[0])).to_have_count(1)
    page.click("#prev")
    tab.expect(tab.row(ids[-1])).to_have_count(1)
    assert tab.not_reloaded()


@pytest.mark.skipif(not hasattr(conveyor, "progress"), reason="conveyor.progress is not built here")
def test_a_running_job_shows_its_progress(tab: Page, served: Served):
    tab.open()
    gate = f"progress-{uuid.uuid4().hex[:6]}"
    job_id = served.submit("reporting", gate)
    served.wait_for(lambda: served.started(gate), "the reporting job's start")
    tab.row(job_id).click()
    detail = tab.page.locator("#detail")
    tab.expect(detail.locator(".progress")).to_have_attribute("data-progress", "50")
    tab.expect(detail.locator(".progress")).to_contain_text("50% \u00b7 half way")
    served.go(gate)
    tab.expect(detail).to_have_attribute("data-status", "finished")


def test_a_killed_worker_shows_as_lost(tab: Page, served: Served):
    if not served.durable:
        pytest.skip("memory:// runs its jobs in the server's own process: no worker to lose")
    tab.open()
    # a worker whose lease is short, so that it is lost a few seconds after it dies
    victim = served.worker("victim", CONVEYOR_LEASE="3")
    item = tab.page.locator(f'#workers li[data-pid="{victim.pid}"]')
    tab.expect(item).to_have_attribute("data-state", "alive")
    victim.kill()
    victim.wait(timeout=WAIT)
    tab.expect(item).to_have_attribute("data-state", "lost")
    tab.expect(item).to_contain_text("lost")
    assert tab.not_reloaded()
