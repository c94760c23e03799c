"""The dashboard page as the server sends it (no browser): the page and its files, their
security headers, what the server fills in, and the browser tests' skip rule."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest

import conveyor
from conveyor.web.dashboard import POLICY, STATIC
from tests.web import test_browser
from tests.web.harness import served
from tests.web.served import REPO


class Links(HTMLParser):
    """The page's script and stylesheet addresses, and its body's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.body: dict[str, str | None] = {}
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            if found.get("src"):
                self.urls.append(str(found["src"]))
            else:
                self.inline_scripts += 1
        if tag == "link" and found.get("rel") == "stylesheet":
            self.urls.append(str(found["href"]))
        if tag == "body":
            self.body = found


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A client of a real server of a queue with a name and a task name made of markup."""
    queue = conveyor.Queue("memory://", name="<b>shop</b>", workers=0)

    @queue.task(name="send <mail>")
    def send(to: str) -> str:
        return to

    try:
        with served(queue, token="t") as server, httpx.Client(base_url=server.base) as made:
            yield made
    finally:
        queue.close(wait=False)


def test_the_page_and_its_files_come_from_the_server_with_a_strict_policy(client: httpx.Client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == POLICY
    assert "default-src 'none'" in POLICY and "connect-src 'self'" in POLICY
    links = Links()
    links.feed(page.text)
    assert links.inline_scripts == 0
    assert links.urls == ["/static/dashboard.css", "/static/js/main.js"]
    modules = sorted(p.name for p in (STATIC / "js").glob("*.js"))
    for url in [*links.urls, *(f"/static/js/{name}" for name in modules)]:
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert answer.headers["content-security-policy"] == POLICY
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/js/main.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/missing.js").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is no API route


def test_no_file_of_the_page_names_another_host():
    for path in STATIC.rglob("*"):
        if path.is_file():
            # the SVG namespace is a name, never fetched
            text = path.read_text(encoding="utf-8").replace("http://www.w3.org/2000/svg", "")
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path
            assert "innerHTML" not in text and "insertAdjacentHTML" not in text, path


def test_the_queue_name_and_task_names_are_escaped_into_the_page(client: httpx.Client):
    text = client.get("/").text
    assert "<b>shop</b>" not in text
    assert "&lt;b&gt;shop&lt;/b&gt; \u00b7 memory" in text
    links = Links()
    links.feed(text)
    assert json.loads(str(links.body["data-tasks"])) == ["send <mail>"]
    assert "{{" not in text


def test_the_label_names_the_backend_without_its_url():
    with conveyor.Queue("memory://", workers=0) as queue, served(queue) as server:
        text = httpx.get(server.base + "/").text
    assert "default \u00b7 memory" in text


def test_browser_tests_skip_without_chromium_and_fail_where_ci_requires_them(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv("CONVEYOR_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        test_browser.unavailable("no chromium binary on the PATH")
    monkeypatch.setenv("CONVEYOR_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="CONVEYOR_REQUIRE_BROWSER=1 but no chromium"):
        test_browser.unavailable("no chromium binary on the PATH")
    monkeypatch.setenv("CONVEYOR_CHROMIUM", "/opt/other/chromium")
    assert test_browser.chromium_path() == "/opt/other/chromium"


def test_every_file_of_the_page_is_package_data():
    # given the globs pyproject.toml ships with the conveyor package
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["conveyor"]
    package = REPO / "conveyor"
    files = [p.relative_to(package).as_posix() for p in STATIC.rglob("*") if p.is_file()]
    # then each file of the page matches one (a wheel holds it)
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), files
