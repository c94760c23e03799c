"""The OpenAPI spec fuzzed with schemathesis (ASGI, in this process): whatever it sends, with
the token and without, the API answers without a server error. The event stream (endless) is
left out; tests/web/test_api.py reads it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

import conveyor
from conveyor.web import create_app

pytestmark = pytest.mark.slow

TOKEN = "fuzz-token"


def add(a: int, b: int) -> int:
    return a + b


QUEUE = conveyor.Queue("memory://", workers=2)
QUEUE.task(name="add")(add)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(QUEUE, token=TOKEN)).exclude(
    path="/api/events"
)


@pytest.fixture(scope="module", autouse=True)
def queue() -> Iterator[conveyor.Queue]:
    QUEUE.put(add, (1, 2), id="known").result(timeout=30)
    yield QUEUE
    QUEUE.close(wait=False)


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error]
    )
    case.call_and_validate(checks=[not_a_server_error])
