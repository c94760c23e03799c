"""The floor: what a round trip costs with no queue at all, for comparison (never a peer).

redis-py alone: the producer LPUSHes the argument and BLPOPs a reply key; one worker process
BLPOPs the argument and LPUSHes it back to that key. Two processes, two pushes, two blocking
pops: what any queue on Redis with a separate worker process does at least, with no job
record, no rules and no encoding. Only the latency section runs it.
"""

from __future__ import annotations

import sys
from typing import Any

import redis
from bench_common import Peer, python, url

JOBS = b"floor:jobs"
STOP = b"stop"


def reply_key(i: bytes) -> bytes:
    return b"floor:reply:" + i


def serve() -> None:
    """The worker: answer every argument pushed until it is killed."""
    client = redis.Redis.from_url(url())
    while True:
        _, value = client.blpop([JOBS])  # type: ignore[misc]
        client.lpush(reply_key(value), value)


class Contender(Peer):
    name = "floor"
    package = "redis"
    one_label = "LPUSH"
    bulk_label = None
    worker_label = "1 process: BLPOP, LPUSH"
    wait_label = "BLPOP on a reply key"
    sections = ("latency",)
    #: a reference line, not a peer: left out of the ratios
    reference = True

    def workers(self) -> list[list[str]]:
        return [python("-c", "import floor_app; floor_app.serve()")]

    def round_trip(self, i: int, timeout: float) -> Any:
        value = str(i).encode()
        self.redis.lpush(JOBS, value)
        found = self.redis.blpop([reply_key(value)], timeout=timeout)
        if found is None:
            raise TimeoutError(f"no reply to {i} within {timeout} s")
        return int(found[1])


if __name__ == "__main__":
    sys.exit(serve())
