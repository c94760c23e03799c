"""The worker process's side of the process executor: its loop (receive a payload, run it,
send back its progress values, :class:`~conveyor.tracking.Note`, then the outcome), dying with
the worker that started it, and taking that worker's environment; plus how a payload for it is
encoded (:func:`encode_payload`)."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from conveyor.context import set_context
from conveyor.job import ErrorInfo
from conveyor.tracking import Note, tracking

log = logging.getLogger("conveyor.executors.process")


def encode_function(fn: Callable[..., Any]) -> bytes:
    """Pickle ``fn`` by reference if it is importable, else by value (lambdas, closures)."""
    data: bytes = cloudpickle.dumps(fn)
    return data


def encode_payload(fn_bytes: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """One message for the child: the encoded function and the pickled arguments."""
    return pickle.dumps((fn_bytes, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)


#: seconds between a worker process's checks that the worker that started it still lives
PARENT_CHECK = 0.2

#: the exit code of a worker process that ended because its worker was gone
EXIT_ORPHANED = 70

#: Linux prctl option: the signal the kernel sends a process when its parent thread ends
PR_SET_PDEATHSIG = 1


def child_main(
    conn: Connection,
    context: bytes | None,
    max_jobs: int | None,
    parent: int | None = None,
    environ: dict[str, str] | None = None,
    cwd: str | None = None,
) -> None:
    """The loop of a worker process: receive a payload, run it, send back the outcome.

    Before anything else it dies with ``parent`` (the worker's pid), takes ``environ`` as its
    environment and ``cwd`` as its working directory: the worker's, as of when its executor
    started (a forkserver's children would otherwise keep the forkserver's)."""
    if parent is not None:
        die_with(parent)
    adopt(environ, cwd)
    functions: dict[bytes, Callable[..., Any]] = {}
    if context is not None:
        set_context(cloudpickle.loads(context)())
    done = 0
    while max_jobs is None or done < max_jobs:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            fn_bytes, args, kwargs = pickle.loads(payload)
            fn = functions.get(fn_bytes)
            if fn is None:
                fn = functions[fn_bytes] = cloudpickle.loads(fn_bytes)
            with tracking(functools.partial(_send_progress, conn)):
                answer = (True, fn(*args, **kwargs))
        except BaseException as exc:
            answer = (False, ErrorInfo.of(exc))
        try:
            message = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            message = pickle.dumps(
                (
                    False,
                    ErrorInfo(
                        "NotSerializable", f"the job's result cannot be pickled: {exc}", None
                    ),
                )
            )
        conn.send_bytes(message)
        done += 1


def _send_progress(conn: Connection, fraction: float, message: str | None) -> None:
    """Send a progress value to the worker, ahead of the job's answer (see
    :mod:`conveyor.tracking`: the values are thinned out here, in the worker process)."""
    conn.send_bytes(pickle.dumps(Note(fraction, message), protocol=pickle.HIGHEST_PROTOCOL))


def adopt(environ: dict[str, str] | None, cwd: str | None) -> None:
    """Take ``environ`` as this process's environment and ``cwd`` as its directory."""
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    if cwd is not None:
        try:
            os.chdir(cwd)
        except OSError as exc:
            log.warning("worker process %d stays in %s: %s", os.getpid(), os.getcwd(), exc)


def die_with(parent: int) -> None:
    """End this process (``os._exit``) soon after the process ``parent`` ends, even while a
    job runs: the kernel's parent-death signal where there is one (Linux: it fires when this
    process's own parent ends, a forkserver that ends with the worker), and a daemon thread
    that checks every PARENT_CHECK seconds that ``parent`` lives and is still this process's
    parent or the forkserver's."""
    _set_parent_death_signal()
    born = _started(parent)
    ppid = os.getppid()
    if not _alive(parent, born):
        os._exit(EXIT_ORPHANED)
    threading.Thread(
        target=_watch_parent, args=(parent, born, ppid), daemon=True, name="conveyor-parent-watch"
    ).start()


def _watch_parent(parent: int, born: int | None, ppid: int) -> None:
    while True:
        time.sleep(PARENT_CHECK)
        if os.getppid() != ppid or not _alive(parent, born):
            os._exit(EXIT_ORPHANED)


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError):  # no libc to load, or no prctl in it
        log.debug("no prctl: the worker process relies on watching its parent")


def _started(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), to tell it from a later process given
    the same pid; None where /proc does not say (or ``pid`` is gone)."""
    try:
        stat = _stat(pid)
    except (OSError, IndexError, ValueError):
        return None
    return None if stat is None else stat[1]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of ``pid`` from /proc; None if there is no such process. Raises
    if /proc cannot tell (no /proc, no file descriptor left, an unexpected format)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data.rsplit(b")", 1)[1].split()
    return fields[0].decode(), int(fields[19])


def _alive(pid: int, born: int | None) -> bool:
    """False once ``pid`` has ended: gone, a zombie, or a new process under its pid. When it
    cannot tell (a job used up the file descriptors, say), True: a job is never cut short on
    a doubt."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # it exists but is another user's: the start time tells whether it is ours
    if born is None:
        return True
    try:
        stat = _stat(pid)
    except (OSError, IndexError, ValueError):
        return True
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == born
