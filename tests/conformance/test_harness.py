"""The harness itself: each variant runs jobs where it says, and they reach the test's board."""

from __future__ import annotations

import os

from tests.conformance import jobs


def test_jobs_run_where_the_variant_says_and_report_to_the_board(queue_factory, board, variant):
    q = queue_factory(workers=2, mode="thread")
    handles = [q.put(jobs.pid, args=(board.key, f"j{i}")) for i in range(3)]

    pids = {handle.result(timeout=5) for handle in handles}

    if variant.worker_processes:
        assert os.getpid() not in pids
        assert len(pids) == 1  # the one `conveyor worker` process of this queue
        (worker_pid,) = pids
        assert all(f":{worker_pid}:" in (h.record().worker or "") for h in handles)
    else:
        assert pids == {os.getpid()}
    assert sorted(board.starts()) == ["j0", "j1", "j2"]
    assert board.call_count("j0") == 1
