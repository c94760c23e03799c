"""conveyor: a ``Queue(url)`` producer and ``conveyor worker conveyor_app:q`` processes.

Default settings: the workers' queue ``q`` sets nothing but the module its workers may import
(``allow_modules``: conveyor runs only functions it trusts); ``conveyor worker`` gets no ``-w``,
so each process has the default slots (the CPU count).
"""

from __future__ import annotations

from typing import Any

from bench_common import Peer, python, url

import conveyor

#: the modules whose functions conveyor's workers here may run: this one's (``noop``)
ALLOW_MODULES = [__name__]


def noop(x: Any) -> Any:
    """The job: return the argument."""
    return x


_worker_queue: conveyor.Queue | None = None


def __getattr__(name: str) -> Any:
    """``q``: the queue ``conveyor worker conveyor_app:q`` runs, built on first access (the
    benchmark itself imports this module without building it)."""
    global _worker_queue
    if name != "q":
        raise AttributeError(name)
    if _worker_queue is None:
        _worker_queue = conveyor.Queue(url(), allow_modules=ALLOW_MODULES)
    return _worker_queue


class Contender(Peer):
    name = "conveyor"
    package = "conveyor"
    one_label = "q.put(noop, args=(i,))"
    bulk_label = "q.put_many(noop, range(n))"
    worker_label = "2 x conveyor worker conveyor_app:q (default slots)"
    wait_label = "q.put(...).result()"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.q = conveyor.Queue(url, workers=0, allow_modules=ALLOW_MODULES)
        self.expected = 0

    def submit(self, n: int, bulk: bool) -> None:
        if bulk:
            put_many = getattr(self.q, "put_many", None)
            if put_many is None:
                raise NotImplementedError("conveyor has no Queue.put_many yet")
            put_many(noop, range(n))
        else:
            for i in range(n):
                self.q.put(noop, args=(i,))

    def workers(self) -> list[list[str]]:
        return [python("-m", "conveyor", "worker", "conveyor_app:q")] * 2

    def done(self) -> int:
        return self.q.size(conveyor.Status.FINISHED)

    def round_trip(self, i: int, timeout: float) -> Any:
        return self.q.put(noop, args=(i,)).result(timeout=timeout)

    def close(self) -> None:
        try:
            self.q.close(wait=False)
        finally:
            super().close()
