"""Make docs/dashboard.png: a queue at work, served by the dashboard, in headless Chromium.

    .venv/bin/python scripts/dashboard_screenshot.py [PATH]

A memory:// queue with three workers runs a mix of jobs (some fail, one is cancelled) for
about fifteen seconds while the page watches; then a finished job is opened and the page is
saved as a PNG. Needs the test extra (playwright) and the system's chromium (never a
downloaded browser).
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

import conveyor
from conveyor.web import create_app

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
TOKEN = "screenshot"
OUT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"

q = conveyor.Queue("memory://", name="shop", workers=3)
rng = random.Random(7)


@q.task(name="resize")
def resize(path: str, width: int = 640) -> dict[str, object]:
    time.sleep(rng.uniform(0.6, 2.5))
    return {"path": path, "width": width}


@q.task(name="fetch")
def fetch(url: str) -> int:
    time.sleep(rng.uniform(0.3, 1.5))
    if "missing" in url:
        raise LookupError(f"{url}: 404 Not Found")
    return len(url)


@q.task(name="report")
def report(day: str) -> str:
    time.sleep(4)
    return f"report-{day}.pdf"


def serve() -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(
        uvicorn.Config(create_app(q, token=TOKEN), host="127.0.0.1", port=0, log_level="error")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def work(base: str) -> None:
    """Put jobs through the API in waves, as clients would."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, headers=auth) as client:

        def put(task: str, *args: object) -> str:
            job_id: str = client.post("/api/jobs", json={"task": task, "args": list(args)}).json()[
                "id"
            ]
            return job_id

        for wave in range(6):
            for i in range(3):
                put("resize", f"photos/{wave}-{i}.jpg", 320)
            put("fetch", f"https://example.org/item/{wave}" + ("/missing" if wave % 2 else ""))
            if wave in (1, 4):
                doomed = put("report", f"2026-11-{wave + 20}")
                if wave == 4:
                    time.sleep(1.5)
                    client.post(f"/api/jobs/{doomed}/cancel")
            time.sleep(1.6)


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    chromium = os.environ.get("CONVEYOR_CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        sys.exit("no chromium on the PATH (apt-get install chromium)")
    server, base = serve()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1440, "height": 1200})
            page.goto(f"{base}/?token={TOKEN}")
            expect(page.locator("#live")).to_have_attribute("data-state", "live")
            page.select_option("#page-size", "25")
            work(base)
            time.sleep(2.5)
            # a finished job's detail (a traceback would show this machine's paths)
            rows = page.locator('#jobs tbody tr[data-status="finished"]')
            rows.filter(has_text="report").first.click()
            expect(page.locator("#detail")).to_have_attribute("data-status", "finished")
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        q.close(wait=False)
    print(out)


if __name__ == "__main__":
    main()
