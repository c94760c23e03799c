"""The stores the crash tests run on: a SQLite file, and a Redis server (a queue of its own name
per test on the session's server, so tests share the server but not their jobs)."""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

import conveyor
from tests.crash import crash_jobs

#: the module of the jobs, which every queue here allows its workers to run
ALLOW = [crash_jobs.__name__]
STORES = ["sqlite", "redis"]


@dataclass(frozen=True)
class Store:
    """Where a crash test's queue lives: ``Queue(url, name=name)``."""

    kind: str
    url: str
    name: str

    def queue(self, **kwargs: object) -> conveyor.Queue:
        """The test's queue (no workers unless asked), allowed to run the crash jobs."""
        kwargs.setdefault("workers", 0)
        return conveyor.Queue(self.url, name=self.name, allow_modules=ALLOW, **kwargs)  # type: ignore[arg-type]

    def corrupt_payload(self, job_id: str, garbage: bytes = b"\x00garbage") -> None:
        """Overwrite the stored payload of one job, as whoever can write the store could."""
        if self.kind == "sqlite":
            with closing(sqlite3.connect(self.url.removeprefix("sqlite:///"))) as db, db:
                changed = db.execute(
                    "UPDATE jobs SET payload = ? WHERE id = ?", (garbage, job_id)
                ).rowcount
            assert changed == 1
            return
        import redis

        with redis.Redis.from_url(self.url) as client:
            # the job's hash: a key of this queue (its name is in the hash tag) naming the job,
            # with a payload field
            keys = [
                key
                for key in client.scan_iter(match=f"*{self.name}*", count=1000)
                if job_id.encode() in key
                and client.type(key) == b"hash"
                and client.hexists(key, "payload")
            ]
            assert len(keys) == 1, keys
            client.hset(keys[0], "payload", garbage)

    def app_source(self) -> str:
        """A module building the same queue with ``workers=0``: the app of ``conveyor worker``."""
        return (
            "import conveyor\n"
            f"q = conveyor.Queue({self.url!r}, name={self.name!r}, workers=0,"
            f" allow_modules={ALLOW!r})\n"
        )


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Each store in turn; the Redis server starts only for the tests that run on it."""
    name = f"crash-{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        return Store("sqlite", f"sqlite:///{tmp_path}/crash.db", name)
    return Store("redis", request.getfixturevalue("redis_url"), name)
