"""The Redis backend's key schema: every key of one queue under one hash tag.

All keys of the queue named ``<name>`` start with ``{conveyor:<name>}:`` (the *prefix*): Redis
Cluster hashes only the part between the braces, so a queue lives in one slot (a Lua script may
touch all of its keys) and many queues spread over a cluster. The keys after the prefix (the Lua
engine, ``lua/engine*.lua``, names them the same way):

=========================  ======  =============================================================
key                        type    what
=========================  ======  =============================================================
``j:<id>``                 hash    the job: id fields, ``payload`` and ``result`` bytes as
                                   stored, ``mac``, ``status``, ``attempts``, options, the plan
                                   (``needs``, ``holds``, ``frees``: JSON), timestamps,
                                   ``progress`` and ``progress_message`` (of the running or
                                   last attempt); fields at their default are left out
``seq``                    string  the last submission number
``s:<status>``             zset    the jobs of a status, scored by submission number
``r:<mode>``               zset    ready index: jobs nothing but keys can hold back (score 0;
                                   members ``<rank><seq><id>`` sort by priority, submission)
``p:<mode>:<park key>``    zset    jobs parked on a key (same members); ``parked``: how many
``freed:<mode>``           set     park keys released since the last claim of that mode
``held``                   hash    running jobs per counted key (``task:``, ``group:``,
                                   ``decl:``)
``caps``                   hash    park key -> ``<capacity>|<counted key>`` of needs that wait
                                   on another key or allow more than one holder
``d:<id>``                 set     jobs waiting for job ``id`` to end (``pending``: how many
                                   dependencies a job still waits for, in its hash)
``lane:<lane>``            hash    ``current``, ``previous``, ``failed`` (``<lane>``: its JSON)
``lm:<lane>``              zset    the lane's order: joined, not started (same members)
``due``, ``expiry``        zset    timers: scheduled jobs by due time; jobs not started by
                                   expiry
``leases``                 zset    running jobs by ``lease_until``
``ended``                  zset    ended jobs by end time (members ``<seq><id>``)
``unique``, ``unique_until`` hash  unique key -> the job holding it; -> until when after its end
``workers``, ``seen``      hash    worker id -> its record (JSON); -> its last heartbeat
``k:<mode>``               zset    wake-up markers: a job of the mode made ready (its id); an
                                   idle claimer blocks on it (BZPOPMIN, see ``markers.py``)
``x:<origin>:<mode>``      zset    wakes for the claimers blocked in one backend (process)
``channel:<db>``           pubsub  every change: origin, modes whose claimers all look again,
                                   events, stops, ended jobs a read waited for (JSON); a quiet
                                   change (jobs queued or started, progress) only while ``all``
                                   exists
``all``                    string  some process needs every change (its waits, its relayed
                                   events): set with a TTL, renewed while it does
``ends``                   string  some process needs every change that is not quiet (its
                                   waits for ends, its relayed events): as ``all``
``i:<mode>``               zset    slots idle in the mode, by when their registration lapses
                                   (server time, s); ``il``: slot -> its worker's lease;
                                   ``h:<slot>``: a job handed over to one (MessagePack, see
                                   ``markers.py``)
``w:<id>``                 set     the threads waiting for job ``id`` to end (tokens);
                                   ``n:<token>``: notes of ends left for one (zset, JSON)
=========================  ======  =============================================================
"""

from __future__ import annotations

#: the smallest priority: ranks are priorities shifted to be >= 0, as 16 hex digits
_SHIFT = 2**63


def prefix(name: str) -> str:
    """The prefix of every key of the queue ``name`` (one hash tag: one cluster slot)."""
    return "{conveyor:" + name + "}:"


def rank(priority: int) -> str:
    """A priority as 16 hex digits that sort as the priority does (lower first); the engine
    appends the submission number (12 hex digits), then the job id."""
    return format(priority + _SHIFT, "016x")


def job(name: str, job_id: str) -> str:
    """The hash of job ``job_id`` of queue ``name``."""
    return prefix(name) + "j:" + job_id
