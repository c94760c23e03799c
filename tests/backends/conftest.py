"""Fixtures of the Redis backend's tests: a database of the test server of their own (the module's
``DB``), emptied before each test, and a client of it. (test_sqlite.py has its own ``url``.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis


@pytest.fixture
def url(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    url = f"{redis_url}/{request.module.DB}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    yield url


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(url) as c:
        yield c
