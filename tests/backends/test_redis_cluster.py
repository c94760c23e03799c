"""Queues on a real Redis Cluster: three masters on loopback ports (``tests/servers.py``).

``Queue("redis+cluster://host:port")`` talks to the cluster through redis-py's cluster client.
All keys of one queue share one hash tag, so a queue lives in one slot of one node, and
queues spread over the nodes: the test reads where each queue's keys are (CLUSTER KEYSLOT on
the node that holds them) and sees its queues on three different nodes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

import conveyor
from tests import jobs
from tests.servers import RedisCluster, free_port, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]
ALLOW = [jobs.__name__]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    started = start_cluster(3)
    try:
        yield started
    finally:
        started.close()


def _node_of_slot(cluster: RedisCluster) -> dict[int, int]:
    """First slot of each master's range -> its port (to place a slot on its node)."""
    with cluster.client() as client:
        nodes = client.cluster_nodes()
    return {
        int(low): int(address.rsplit(":", 1)[1])
        for address, node in nodes.items()
        for low, _high in node["slots"]
    }


def _port_of(slot: int, starts: dict[int, int]) -> int:
    return starts[max(low for low in starts if low <= slot)]


def _one_name_per_node(cluster: RedisCluster) -> dict[int, str]:
    """A queue name for each node, chosen so that its hash tag ``{conveyor:NAME}`` (the key
    schema of the Redis backend) falls in a slot of that node."""
    starts = _node_of_slot(cluster)
    names: dict[int, str] = {}
    prefix = uuid.uuid4().hex[:8]
    n = 0
    while len(names) < len(cluster.nodes):
        name = f"cq-{prefix}-{n}"
        names.setdefault(_port_of(key_slot(f"{{conveyor:{name}}}".encode()), starts), name)
        n += 1
    return names


def test_queues_on_a_cluster_run_their_jobs_each_in_one_slot_on_its_own_node(
    cluster: RedisCluster,
) -> None:
    names = _one_name_per_node(cluster)
    queues = [
        conveyor.Queue(cluster.url, name=name, workers=2, allow_modules=ALLOW)
        for name in names.values()
    ]
    try:
        for q in queues:
            first = q.put(jobs.add, args=(1, 1))
            chained = q.put(jobs.double, args=(21,), after=[first.id])
            many = q.map(jobs.double, range(50))
            assert first.result(timeout=60) == 2
            assert chained.result(timeout=60) == 42
            assert many == [n * 2 for n in range(50)]
            assert q.size("finished") == 2  # map's jobs go once it has their results
    finally:
        for q in queues:
            q.close()

    # where each queue's keys are, asking every node for its own keys
    where: dict[str, set[tuple[int, int]]] = {name: set() for name in names.values()}
    for node in cluster.nodes:
        with node.client() as client:
            for key in client.scan_iter(count=1000):
                owners = [name for name in where if name.encode() in key]
                assert len(owners) == 1, key  # every key belongs to one of the test's queues
                slot = client.cluster("KEYSLOT", key)
                where[owners[0]].add((node.port, int(slot)))
    for name, places in where.items():
        assert len(places) == 1, (name, places)  # all of a queue's keys: one slot, one node
    assert {port for places in where.values() for port, _slot in places} == {
        node.port for node in cluster.nodes
    }  # three queues, three nodes
    assert {next(iter(where[name]))[0]: name for name in where} == names


def test_a_cluster_url_without_a_reachable_node_says_which() -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    with pytest.raises(conveyor.StorageError, match=re.escape(url.split("//", 1)[1])):
        conveyor.Queue(url, workers=0)


def test_a_worker_process_runs_a_cluster_queue(cluster: RedisCluster, tmp_path: Path) -> None:
    name = f"cq-{uuid.uuid4().hex[:8]}-worker"
    (tmp_path / "cluster_app.py").write_text(
        "import conveyor\n"
        f"q = conveyor.Queue({cluster.url!r}, name={name!r}, workers=0, allow_modules={ALLOW!r})\n",
        encoding="utf-8",
    )
    q = conveyor.Queue(cluster.url, name=name, workers=0, allow_modules=ALLOW)
    try:
        ids = [q.put(jobs.double, args=(n,)).id for n in range(20)]
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", "worker", "cluster_app:q", "--burst"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert [q.result(job_id, timeout=0) for job_id in ids] == [n * 2 for n in range(20)]
    finally:
        q.close()
