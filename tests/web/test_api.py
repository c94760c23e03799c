"""The HTTP API over a real uvicorn server, with an HTTP client, on every backend: memory://
(the jobs run by the server process's own workers), a SQLite file and Redis (the jobs run by a
real ``conveyor worker`` process). One scenario per backend: submit, results, failures and
retry, cancel of a running job, auth, paging, counts, workers, metrics, purge, the event
stream."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.web.harness import App, Stream, served
from tests.worker.real_workers import wait_until

pytestmark = pytest.mark.slow

TOKEN = "secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["memory", "sqlite", "redis"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    if request.param == "memory":
        made = App(tmp_path, "memory://", workers=2)
    elif request.param == "sqlite":
        made = App(tmp_path, f"sqlite:///{tmp_path / 'queue.db'}", workers=0)
    else:
        redis_url = request.getfixturevalue("redis_url")
        made = App(tmp_path, f"{redis_url}/0", workers=0)
    try:
        if made.queue.durable:
            made.worker(slots=2)
        yield made
    finally:
        made.close()


@pytest.fixture
def client(app: App) -> Iterator[httpx.Client]:
    with (
        served(app.queue, token=TOKEN) as server,
        httpx.Client(base_url=server.base, timeout=30) as c,
    ):
        yield c


def submit(client: httpx.Client, task: str, *args: object, **options: object) -> str:
    response = client.post(
        "/api/jobs", json={"task": task, "args": list(args), **options}, headers=AUTH
    )
    assert response.status_code == 201, response.text
    body = response.json()
    # a fast worker may have run it (and a failing task failed it) before the status is read
    assert body["status"] in {"waiting", "scheduled", "running", "finished", "failed"}
    return str(body["id"])


def counts(client: httpx.Client) -> dict[str, int]:
    response = client.get("/api/counts")
    assert response.status_code == 200
    return dict(response.json())


def test_the_api_end_to_end(app: App, client: httpx.Client, tmp_path: Path) -> None:
    assert counts(client) == dict.fromkeys(
        ["waiting", "scheduled", "running", "finished", "failed", "cancelled"], 0
    )
    stream = Stream(str(client.base_url))
    try:
        # ---------------------------------------------------------- submit, result
        assert submit(client, "add", 2, 3, id="sum") == "sum"
        assert stream.until("sum", "finished") == ["queued", "started", "finished"]
        result = client.get("/api/jobs/sum/result")
        assert result.status_code == 200
        assert result.json()["status"] == "finished" and result.json()["result"] == 5
        record = client.get("/api/jobs/sum").json()
        assert record["id"] == "sum" and record["task"] == "add" and record["args"] == [2, 3]
        assert record["status"] == "finished" and record["attempts"] == 1
        assert record["submitted"] <= record["started"] <= record["ended"]  # ISO 8601, UTC
        assert record["worker"]

        # ---------------------------------------------------------- fail, retry
        flag = tmp_path / "present"
        submit(client, "unless_missing", str(flag), id="flaky")
        assert stream.until("flaky", "failed") == ["queued", "started", "failed"]
        failed = client.get("/api/jobs/flaky/result").json()
        assert failed["status"] == "failed" and failed["result"] is None
        assert failed["error"].startswith("FileNotFoundError")
        assert "Traceback" in failed["traceback"]
        flag.touch()
        retried = client.post("/api/jobs/flaky/retry", headers=AUTH)
        assert retried.status_code == 200 and retried.json()["id"] == "flaky"
        stream.until("flaky", "finished")
        assert stream.names("flaky")[3:] == ["queued", "started", "finished"]
        again = client.get("/api/jobs/flaky").json()
        assert again["result"] == "found" and len(again["history"]) == 1
        assert again["history"][0]["status"] == "failed"
        refused = client.post("/api/jobs/flaky/retry", headers=AUTH)  # finished: not retried
        assert refused.status_code == 422 and "flaky" in refused.text

        # ---------------------------------------------------------- cancel a running job
        release = tmp_path / "release"
        submit(client, "hold", str(release), id="held")
        stream.until("held", "started")
        assert client.get("/api/jobs/held/result").status_code == 409  # not ended yet
        cancelled = client.post("/api/jobs/held/cancel", headers=AUTH)
        assert cancelled.status_code == 200 and cancelled.json() == {"cancelled": True}
        assert stream.until("held", "cancelled") == ["queued", "started", "cancelled"]
        assert client.get("/api/jobs/held/result").json()["status"] == "cancelled"
        assert client.post("/api/jobs/held/cancel", headers=AUTH).json() == {"cancelled": False}
        release.touch()

        # ---------------------------------------------------------- auth
        before = counts(client)
        body = {"task": "add", "args": [1, 1], "id": "intruder"}
        assert client.post("/api/jobs", json=body).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert client.post("/api/jobs", json=body, headers=wrong).status_code == 403
        assert client.post("/api/jobs/sum/cancel", headers=wrong).status_code == 403
        assert client.post("/api/purge", json={}, headers=wrong).status_code == 403
        assert client.post("/api/jobs/flaky/retry").status_code == 401
        assert client.get("/api/jobs/intruder").status_code == 404
        assert counts(client) == before

        # ---------------------------------------------------------- bad input changes nothing
        unknown = client.post("/api/jobs", json={"task": "nope"}, headers=AUTH)
        assert unknown.status_code == 404 and "no task named 'nope'" in unknown.json()["detail"]
        # a module the queue does not allow is not even imported, on any backend
        imported = client.post("/api/jobs", json={"task": "antigravity:fly"}, headers=AUTH)
        assert imported.status_code == 404 and "is not allowed" in imported.json()["detail"]
        assert "antigravity" not in sys.modules
        for bad in (
            {"task": "add", "args": [1, 2], "retries": -1},
            {"task": "add", "args": [1, 2], "priority": "high"},
            {"task": "add", "args": [1, 2], "delay": 1e300},
            {"task": "add", "args": [1, 2], "after": ["no-such-job"]},
            {"task": "add", "args": [1, 2], "colour": "red"},
            {"task": "add", "args": [1, 2], "id": "sum"},
        ):
            response = client.post("/api/jobs", json=bad, headers=AUTH)
            assert response.status_code == 422, (bad, response.text)
        assert counts(client) == before

        # ---------------------------------------------------------- paging
        ids = [submit(client, "add", n, n, id=f"page-{n}") for n in range(5)]
        for job_id in ids:
            stream.until(job_id, "finished")
        page = client.get("/api/jobs", params={"limit": 2, "offset": 1}).json()
        assert page["total"] == 8 and page["limit"] == 2 and page["offset"] == 1
        assert [j["id"] for j in page["jobs"]] == ["page-3", "page-2"]  # newest first
        finished = client.get("/api/jobs", params={"status": "finished", "task": "add"}).json()
        assert [j["id"] for j in finished["jobs"]] == [*reversed(ids), "sum"]
        assert client.get("/api/jobs", params={"status": "lost"}).status_code == 422
        assert client.get("/api/jobs", params={"limit": -1}).status_code == 422
        assert client.get("/api/jobs/no-such-job").status_code == 404

        # ---------------------------------------------------------- counts, workers, metrics
        now = counts(client)
        assert now == {
            "waiting": 0, "scheduled": 0, "running": 0,
            "finished": 7, "failed": 0, "cancelled": 1,
        }  # fmt: skip
        workers = client.get("/api/workers").json()
        assert workers and all(w["state"] == "alive" and w["slots"] >= 1 for w in workers)
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
        jobs = {s.labels["status"]: s.value for s in families["conveyor_jobs"].samples}
        assert jobs == now
        assert families["conveyor_queue_depth"].samples[0].value == 0
        states = {s.labels["state"]: s.value for s in families["conveyor_workers"].samples}
        assert states["alive"] == len(workers)
        runs = {
            (s.name, s.labels["task"]): s.value
            for name in ("conveyor_job_run_seconds", "conveyor_job_wait_seconds")
            for s in families[name].samples
            if "le" not in s.labels
        }
        assert runs[("conveyor_job_run_seconds_count", "add")] == 6
        assert runs[("conveyor_job_run_seconds_count", "unless_missing")] == 1
        assert runs[("conveyor_job_wait_seconds_count", "hold")] == 1

        # ---------------------------------------------------------- purge
        running = client.post("/api/purge", json={"statuses": ["running"]}, headers=AUTH)
        assert running.status_code == 422 and counts(client) == now
        purged = client.post("/api/purge", json={"statuses": ["finished"]}, headers=AUTH)
        assert purged.status_code == 200 and purged.json() == {"purged": 7}
        assert counts(client)["finished"] == 0 and counts(client)["cancelled"] == 1
        assert client.get("/api/jobs/sum").status_code == 404
    finally:
        stream.close()


def test_a_client_that_leaves_frees_its_stream(app: App) -> None:
    with served(app.queue, token=TOKEN) as server:
        feed = server.app.state.feed
        streams = [Stream(server.base) for _ in range(2)]
        assert feed.listeners == 2
        streams[0].close()
        wait_until(lambda: feed.listeners == 1, what="the first stream to be freed")
        with httpx.Client(base_url=server.base, timeout=30) as client:
            submit(client, "add", 1, 2, id="after")
            assert streams[1].until("after", "finished") == ["queued", "started", "finished"]
        # an idle stream gets heartbeat comments (every 0.5 s here), which keep proxies open
        wait_until(
            lambda: any(c.startswith("ping") for c in streams[1].comments), what="a heartbeat"
        )
        streams[1].close()
        wait_until(lambda: feed.listeners == 0, what="the second stream to be freed")
        wait_until(lambda: feed.watching is False, what="the watcher to stop")
