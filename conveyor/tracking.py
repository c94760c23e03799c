"""``conveyor.progress()``: a running job says how far it got.

The job calls :func:`progress`; the slot that runs it (an executor, through its worker) set a
:class:`Tracker` for the attempt in a context variable, so the call knows which job and
attempt it is about. Data flows one way: job -> tracker -> worker -> ``Backend.progress``,
which records the value only while that attempt still holds the job, and emits ``progress``.

Throttling: a loop may call :func:`progress` for every item. The first call of an attempt is
sent at once; later ones at most every :data:`INTERVAL` seconds, and a call that comes sooner
only replaces the value held back. The value held back is sent once the interval has passed
(by one thread per process, :class:`_Flusher`, so a job that goes quiet after a burst of calls
still shows its latest value), and always when the job returns or raises, before its report:
the record ends with the last value the job gave. In process mode the tracker lives in the
worker process, so only the values sent cross the pipe to the worker.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple

log = logging.getLogger("conveyor.tracking")

#: seconds between two values of one attempt sent to the backend (the first goes at once)
INTERVAL = 0.1
#: the longest progress message, in characters
MAX_MESSAGE = 1000

Send = Callable[[float, "str | None"], object]

_current: ContextVar[Tracker | None] = ContextVar("conveyor_progress", default=None)


class Note(NamedTuple):
    """A progress value on its way from a worker process to its worker (process mode)."""

    fraction: float
    message: str | None


def check(fraction: Any, message: Any = None) -> tuple[float, str | None]:
    """``(fraction, message)`` if they can be recorded: a number from 0 to 1 (not a bool, not
    NaN) and None or a str of at most MAX_MESSAGE characters that UTF-8 can encode. Raises
    TypeError or ValueError otherwise."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(f"progress fraction must be a number from 0 to 1, got {fraction!r}")
    value = float(fraction)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"progress fraction must be from 0 to 1, got {fraction!r}")
    if message is None:
        return value, None
    if not isinstance(message, str):
        raise TypeError(f"progress message must be a str or None, got {type(message).__name__}")
    if len(message) > MAX_MESSAGE:
        raise ValueError(
            f"progress message must be at most {MAX_MESSAGE} characters, got {len(message)}"
        )
    try:
        if not message.isascii():  # ASCII always encodes: most messages skip the copy
            message.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"progress message must be valid text (a lone surrogate at index {exc.start})"
        ) from None
    if "\x00" in message:
        raise ValueError("progress message must not contain NUL characters")
    return value, message


def progress(fraction: float, message: str | None = None) -> None:
    """Say how far the running job got: ``fraction`` from 0 to 1, and an optional ``message``.

    The job's record shows them (``progress``, ``progress_message``) and ``q.on("progress")``
    callbacks receive it. Cheap enough to call for every item: values are sent at most every
    INTERVAL seconds, the last one always (see the module docstring).

    Raises:
        TypeError, ValueError: a fraction that is not a number from 0 to 1, a message that is
            not a str of at most MAX_MESSAGE characters (nothing is recorded).
        LookupError: outside a running job (or in a thread the job started without copying
            its context).
    """
    value, text = check(fraction, message)
    tracker = _current.get()
    if tracker is None:
        raise LookupError("conveyor.progress() is only available inside a running job")
    tracker.update(value, text)


class Tracker:
    """The progress of one running attempt: the latest value, sent through ``send`` at most
    every ``interval`` seconds; :meth:`close` sends the value held back and ends it."""

    __slots__ = ("_closed", "_interval", "_lock", "_next", "_pending", "_scheduled", "_send")

    def __init__(self, send: Send, interval: float = INTERVAL) -> None:
        self._send = send
        self._interval = interval
        self._next = 0.0  # (monotonic) nothing is sent before
        self._pending: tuple[float, str | None] | None = None
        self._scheduled = False  # the flusher will look at the value held back
        self._closed = False
        # a job may call from several threads: sends keep the order of the calls
        self._lock = threading.Lock()

    def update(self, fraction: float, message: str | None) -> None:
        """A new value: sent now if the interval passed since the last send, else held back
        (the flusher sends it once the interval has passed, unless a newer one replaced it)."""
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return  # a thread of the job that outlived it: the attempt was reported
            if now < self._next:
                self._pending = (fraction, message)
                if not self._scheduled:
                    self._scheduled = True
                    _flusher.schedule(self._next, self)
                return
            self._pending = None
            self._next = now + self._interval
            self._send(fraction, message)

    def send_due(self) -> None:
        """(The flusher) send the value held back if its interval has passed (else look again
        when it has)."""
        now = time.monotonic()
        with self._lock:
            self._scheduled = False
            pending = self._pending
            if self._closed or pending is None:
                return
            if now < self._next:
                self._scheduled = True
                _flusher.schedule(self._next, self)
                return
            self._pending = None
            self._next = now + self._interval
            self._send(*pending)

    def close(self) -> None:
        """The job returned or raised: send the value held back, if any; ignore later ones."""
        with self._lock:
            pending, self._pending = self._pending, None
            self._closed = True
            if pending is not None:
                self._send(*pending)


class _Flusher:
    """One daemon thread per process that sends the values trackers held back, once their
    interval has passed (started at the first value held back)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Tracker]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, when: float, tracker: Tracker) -> None:
        """Have ``tracker.send_due()`` called at ``when`` (monotonic seconds)."""
        with self._cond:
            heapq.heappush(self._due, (when, next(self._seq), tracker))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, daemon=True, name="conveyor-progress"
                )
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        due = self._due
        while True:
            with self._cond:
                while not due or due[0][0] > time.monotonic():
                    self._cond.wait(None if not due else due[0][0] - time.monotonic())
                tracker = heapq.heappop(due)[2]
            try:
                tracker.send_due()
            except Exception:  # the worker's send logs its own errors: this is a bug
                log.exception("sending a progress value failed")


_flusher = _Flusher()


def _after_fork() -> None:
    global _flusher
    _flusher = _Flusher()  # the parent's thread does not exist here, nor its schedule


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


@contextmanager
def tracking(send: Send, interval: float = INTERVAL) -> Iterator[Tracker]:
    """Let the code run inside call :func:`progress`, its values going to ``send``; on the
    way out (returned or raised), the value held back is sent."""
    tracker = Tracker(send, interval)
    token = _current.set(tracker)
    try:
        yield tracker
    finally:
        _current.reset(token)
        tracker.close()
