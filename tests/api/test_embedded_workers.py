"""A queue's own workers (``Queue(workers=N)``) start at the first call that needs them: a
put, or a wait for jobs; building a queue, or looking at its jobs, starts none."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor import Status
from tests import jobs

WAIT = 10  # seconds a test waits for something that should happen soon
ALLOW = [jobs.__name__]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "jobs.db")


@pytest.fixture
def waiting(url: str) -> Iterator[str]:
    """The id of a job (``double(21)``) waiting in the file, put by a producer-only queue."""
    with conveyor.Queue(url, workers=0, allow_modules=ALLOW) as producer:
        yield producer.put(jobs.double, (21,), id="j").id


async def awaited(job: conveyor.Job) -> Any:
    return await job


#: the calls that wait for jobs, each given the queue and the waiting job's id
WAITS: dict[str, Callable[[conveyor.Queue, str], object]] = {
    "wait": lambda q, job_id: q.wait(timeout=WAIT) == 0,
    "result": lambda q, job_id: q.result(job_id, timeout=WAIT) == 42,
    "get": lambda q, job_id: getattr(q.get(wait=True, timeout=WAIT), "id", None) == job_id,
    "job.result": lambda q, job_id: conveyor.Job(q, job_id).result(timeout=WAIT) == 42,
    "job.wait": lambda q, job_id: conveyor.Job(q, job_id).wait(timeout=WAIT),
    "await job": lambda q, job_id: (
        asyncio.run(asyncio.wait_for(awaited(conveyor.Job(q, job_id)), WAIT)) == 42
    ),
}


def test_building_a_queue_starts_no_workers_and_a_put_starts_them() -> None:
    # given a queue with 2 slots of its own
    with conveyor.Queue(workers=2) as q:
        # then building it started no worker
        assert (q.runs_workers, q.embedded.modes, q.backend.workers()) == (True, (), [])
        # when a job is put
        assert q.submit(abs, -3).result(timeout=WAIT) == 3
        # then the worker of its mode runs, with the queue's slots
        assert q.embedded.modes == ("thread",)
        assert [(w.mode, w.slots) for w in q.backend.workers()] == [("thread", 2)]


def test_a_producer_only_queue_never_runs_workers() -> None:
    with conveyor.Queue(workers=0) as q:
        assert not q.runs_workers
        assert q.embedded.start() is None
        q.submit(abs, -3)
        assert (q.embedded.modes, q.size(Status.WAITING)) == ((), 1)


@pytest.mark.parametrize("way", list(WAITS))
def test_a_wait_for_jobs_starts_the_workers(url: str, waiting: str, way: str) -> None:
    # given a job waiting in the file, and a queue with workers built on it
    with conveyor.Queue(url, workers=1, allow_modules=ALLOW) as q:
        assert q.embedded.modes == ()
        # when the queue is asked to wait for jobs in one of the ways
        ended = WAITS[way](q, waiting)
        # then its worker started and ran the job
        assert ended
        assert q.embedded.modes == ("thread",)
        assert way == "get" or q.status(waiting) is Status.FINISHED  # get pops it


def test_looking_at_the_jobs_starts_no_workers(url: str, waiting: str) -> None:
    # given a job waiting in the file, and a queue with workers built on it
    q = conveyor.Queue(url, workers=1, allow_modules=ALLOW)
    try:
        # when it is looked at, its jobs popped (none ended) and counted
        assert q.status(waiting) is Status.WAITING
        assert q.job(waiting).args == (21,)
        assert [r.id for r in q.jobs()] == [waiting]
        assert (q.size(), q.get(), q.collect()) == (1, None, [])
        # then no worker started, so the job still waits
        assert q.embedded.modes == ()
        assert q.backend.workers() == []
    finally:
        # and closing it waits for nothing: no worker of its own would run the job
        q.close()
    with conveyor.Queue(url, workers=0) as producer:
        assert producer.status(waiting) is Status.WAITING


def test_a_process_queue_built_at_the_top_level_of_a_guarded_script_runs(
    tmp_path: Path,
) -> None:
    # given a script that builds a process-mode queue at its top level and puts under the
    # __main__ guard: each worker process imports the script again, building the queue there
    # too, which now starts nothing
    script = tmp_path / "top_level.py"
    script.write_text(
        textwrap.dedent(
            """
            import conveyor

            q = conveyor.Queue(workers=2, mode="process")

            if __name__ == "__main__":
                print(q.map(abs, [-1, -2, -3]))
                q.close()
            """
        ),
        encoding="utf-8",
    )
    # when it runs
    done = subprocess.run(
        [sys.executable, script.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # then its jobs ran in the worker processes
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 2, 3]"
