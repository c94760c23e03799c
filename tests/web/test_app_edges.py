"""Edges of the HTTP API (a uvicorn server in a thread of the test): a full queue answers 503
at once and keeps what it held; a record whose values JSON cannot hold is still served."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

import conveyor
from tests.web.harness import served

AUTH = {"Authorization": "Bearer t"}


def add(a: int, b: int) -> int:
    return a + b


@pytest.fixture
def queue() -> Iterator[conveyor.Queue]:
    q = conveyor.Queue("memory://", workers=0, max_size=1)  # producer only: jobs stay waiting
    q.task(name="add")(add)
    yield q
    q.close(wait=False)


def test_a_full_queue_answers_503_and_does_not_wait(queue: conveyor.Queue) -> None:
    with served(queue, token="t") as server, httpx.Client(base_url=server.base) as client:
        first = client.post("/api/jobs", json={"task": "add", "args": [1, 2]}, headers=AUTH)
        assert first.status_code == 201 and first.json()["status"] == "waiting"
        full = client.post("/api/jobs", json={"task": "add", "args": [3, 4]}, headers=AUTH)
        assert full.status_code == 503 and "max_size" in full.json()["detail"]
        assert client.get("/api/jobs").json()["total"] == 1


def test_values_json_cannot_hold_are_served_as_their_repr(queue: conveyor.Queue) -> None:
    queue.put(add, (float("nan"), {1, 2}), id="odd", meta={"note": "x"})
    with served(queue, token=None) as server, httpx.Client(base_url=server.base) as client:
        record = client.get("/api/jobs/odd").json()
        assert record["args"] == ["nan", "{1, 2}"] and record["meta"] == {"note": "x"}
        assert client.get("/api/jobs", params={"task": "add"}).json()["jobs"][0]["id"] == "odd"


def test_the_spec_names_every_route_and_serves_no_cdn_page(queue: conveyor.Queue) -> None:
    with served(queue, token=None) as server, httpx.Client(base_url=server.base) as client:
        paths = set(client.get("/openapi.json").json()["paths"])
        assert paths == {
            "/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/result",
            "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/retry", "/api/purge",
            "/api/counts", "/api/workers", "/api/events", "/metrics",
        }  # fmt: skip
        assert client.get("/docs").status_code == 404
