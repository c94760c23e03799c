"""Payload encoding for durable backends, signed with HMAC-SHA256 when a secret is set.

The SQLite and Redis backends store a job's arguments and its result as the bytes made here.
Every payload opens with a five-byte header saying how to read the rest::

    unsigned:  b"cv1" | format | b"."  | body
    signed:    b"cv1" | format | b"s"  | mac (32 bytes) | body

    format:    b"j" json, b"p" pickle, b"m" msgpack
    mac:       HMAC-SHA256(secret, header + body)

The MAC covers the header too, so a signed payload cannot be relabelled as another format or as
unsigned. ``loads`` refuses (``PayloadRefused``) anything it does not expect, before decoding:

- a payload whose header names another format than this serializer's: a json queue never
  unpickles, whatever the stored bytes claim;
- with a secret: an unsigned payload, and a signed one whose MAC does not match (forged,
  truncated, or signed with another secret), checked with ``hmac.compare_digest``;
- without a secret: a signed payload, since its signature cannot be checked;
- a body the format cannot decode (the decoder's error is chained as the cause).

What each format carries:

- ``json`` (default): ``None``, ``bool``, ``int``, ``float`` (finite), ``str``, lists, tuples
  and dicts with ``str`` keys. Tuples come back as lists, and subclasses come back as their
  base type (an ``IntEnum`` member as an ``int``, an ``OrderedDict`` as a ``dict``). Anything
  else — a set, bytes, a datetime, an object, NaN, a non-``str`` key — is refused at ``dumps``,
  never converted.
- ``msgpack`` (``pip install 'conveyor[msgpack]'``): as json, plus ``bytes`` (``bytearray``
  comes back as ``bytes``), NaN and infinity, and ``int``, ``float``, ``bool``, ``bytes`` or
  ``None`` dict keys; integers must fit in 64 bits.
- ``pickle``: any object the standard ``pickle`` module can pickle (highest protocol). Reading
  a pickle runs code, so give untrusted writers of the store no way in: set a secret. Without
  one, listings show :data:`NOT_DECODED` in place of a pickle's content (:meth:`Serializer.
  trusts_reads`).

With a secret, a durable backend also signs each job's envelope (:meth:`Serializer.sign_job`):
the id, function reference, task name, mode, arguments payload and timeout, so that no field
of a stored job, nor a payload copied from another job, passes unnoticed. A worker checks it
before it imports or decodes anything (:meth:`Serializer.verify_job`).
"""

from __future__ import annotations

import functools
import hmac
import importlib
import json
import math
import pickle
from collections.abc import Callable, Sequence
from hashlib import sha256
from types import ModuleType
from typing import Any

from conveyor.errors import MissingExtra, NotSerializable, PayloadRefused

#: format name -> the byte naming it in the header
_FORMATS = {"json": b"j", "pickle": b"p", "msgpack": b"m"}

_MAGIC = b"cv1"
_UNSIGNED = b"."
_SIGNED = b"s"
_HEADER_SIZE = len(_MAGIC) + 2
_MAC_SIZE = sha256().digest_size

#: opens every signed job envelope (see ``sign_job``): never the start of a payload's header
_JOB_DOMAIN = b"cv1-job\x00"

_WAY_OUT = 'pass serializer="pickle" to send any picklable Python object'

#: what json and msgpack carry as leaves and as dict keys (subclasses included)
_JSON_LEAVES = (str, int, float, type(None))  # bool is an int
_MSGPACK_LEAVES = (str, int, float, bytes, bytearray, type(None))
#: leaves every format carries as they are, whatever their value (exact types: no subclasses)
_PLAIN = frozenset((str, bool, type(None)))
_JSON_PLAIN = _PLAIN | {int}  # an int too long for JSON fails in json.dumps, which says so
_MSGPACK_KEYS = (str, int, float, bytes, type(None))
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


class NotDecoded:
    """What a listing shows in place of arguments or a result it did not decode: an unsigned
    pickle, since reading one runs whatever code its writer put in it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return (
            "<not decoded: an unsigned pickle payload (set a secret to list it; "
            "result() still reads results)>"
        )


#: the placeholder for each value a listing did not decode
NOT_DECODED = NotDecoded()


class Serializer:
    """Encodes payloads for durable backends; signs them when a secret is set.

    Args:
        name: ``"json"`` (default), ``"pickle"`` or ``"msgpack"``.
        secret: HMAC key (a ``str`` is encoded as UTF-8). With one, every payload is signed and
            only payloads signed with the same secret are read; without one, only unsigned
            payloads are read.

    Raises:
        ValueError: an unknown name, or an empty secret.
        TypeError: a secret that is neither ``str`` nor ``bytes``.
        MissingExtra: ``"msgpack"`` without the msgpack package installed.
    """

    name: str

    def __init__(self, name: str = "json", secret: str | bytes | None = None) -> None:
        if name not in _FORMATS:
            raise ValueError(
                f"unknown serializer {name!r}; choose one of {', '.join(map(repr, _FORMATS))}"
            )
        self.name = name
        self._key = _key(secret)
        self._header = _MAGIC + _FORMATS[name] + (_UNSIGNED if self._key is None else _SIGNED)
        self._encode, self._decode = _codec(name)

    def __repr__(self) -> str:
        return f"Serializer({self.name!r}, signed={self._key is not None})"

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` into a framed payload, signed if a secret is set.

        Raises:
            NotSerializable: the format cannot carry ``value``; the message says what and where.
        """
        body = self._encode(value)
        if self._key is None:
            return self._header + body
        return self._header + _sign(self._key, self._header, body) + body

    @property
    def signed(self) -> bool:
        """Whether a secret is set: payloads and job envelopes are signed and checked."""
        return self._key is not None

    @property
    def trusts_reads(self) -> bool:
        """Whether reading a stored payload is harmless whoever wrote it: False for pickle
        without a secret (unpickling runs code), True otherwise."""
        return self.name != "pickle" or self._key is not None

    def sign_job(self, fields: Sequence[bytes]) -> bytes | None:
        """The MAC of a job's envelope (the fields a worker obeys, in a fixed order); None
        without a secret."""
        if self._key is None:
            return None
        return hmac.new(self._key, _envelope(fields), sha256).digest()

    def verify_job(self, mac: bytes | None, fields: Sequence[bytes]) -> None:
        """Refuse (``PayloadRefused``) a job whose envelope MAC is missing or does not match,
        with ``hmac.compare_digest``; nothing to check without a secret."""
        if self._key is None:
            return
        expected = hmac.new(self._key, _envelope(fields), sha256).digest()
        if not isinstance(mac, bytes) or not hmac.compare_digest(mac, expected):
            raise PayloadRefused(
                "job refused: its signature is missing or does not match (an unsigned job, a "
                "changed field, a payload copied from another job, or another secret); "
                "nothing was imported or decoded"
            )

    def loads(self, data: bytes) -> Any:
        """Decode a payload made by ``dumps`` of a serializer with the same name and secret.

        Raises:
            PayloadRefused: the payload is not of this format, is unsigned while a secret is set
                (or signed while none is), fails its signature check, or cannot be decoded.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise PayloadRefused(f"payload must be bytes, not {type(data).__name__}")
        data = bytes(data)
        header, body = data[:_HEADER_SIZE], data[_HEADER_SIZE:]
        self._check_header(header)
        if self._key is not None:
            body = _verified(self._key, header, body)
        try:
            return self._decode(body)
        except Exception as exc:
            raise PayloadRefused(f"corrupt {self.name} payload: {exc}") from exc

    def _check_header(self, header: bytes) -> None:
        """Refuse a header naming another format, or the wrong signing for this serializer."""
        if len(header) < _HEADER_SIZE or not header.startswith(_MAGIC):
            raise PayloadRefused(f"not a conveyor payload (starts with {header!r})")
        code, mode = header[3:4], header[4:5]
        stored = next((name for name, c in _FORMATS.items() if c == code), None)
        if stored is None or mode not in (_SIGNED, _UNSIGNED):
            raise PayloadRefused(f"unknown payload header {header!r}")
        if stored != self.name:
            raise PayloadRefused(
                f"payload is {stored} but this queue's serializer is {self.name}; "
                f'use serializer="{stored}" to read it'
            )
        if mode == _UNSIGNED and self._key is not None:
            raise PayloadRefused("unsigned payload refused: a secret is set")
        if mode == _SIGNED and self._key is None:
            raise PayloadRefused("signed payload but no secret configured")


def _envelope(fields: Sequence[bytes]) -> bytes:
    """The signed bytes of a job: each field length-prefixed, so no two differ only in where
    one field ends."""
    return _JOB_DOMAIN + b"".join(len(f).to_bytes(8, "big") + f for f in fields)


def _sign(key: bytes, header: bytes, body: bytes) -> bytes:
    return hmac.new(key, header + body, sha256).digest()


def _verified(key: bytes, header: bytes, rest: bytes) -> bytes:
    """Return the body after the MAC if the MAC matches, else refuse."""
    mac, body = rest[:_MAC_SIZE], rest[_MAC_SIZE:]
    if len(mac) < _MAC_SIZE or not hmac.compare_digest(mac, _sign(key, header, body)):
        raise PayloadRefused(
            "payload signature does not match: forged, corrupt, or signed with another secret"
        )
    return body


def _key(secret: str | bytes | None) -> bytes | None:
    """The HMAC key for ``secret``; None when unsigned."""
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes):
        raise TypeError(
            f"secret must be str or bytes, not {type(secret).__name__} "
            "(unwrap a SecretStr with .get_secret_value())"
        )
    if not secret:
        raise ValueError("secret must not be empty; pass None to leave payloads unsigned")
    return secret


def _codec(name: str) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    """The (encode, decode) pair of a format; imports msgpack only when asked for."""
    if name == "json":
        return _json_dumps, _json_loads
    if name == "pickle":
        return _pickle_dumps, pickle.loads
    try:
        # import_module, not `import msgpack`: the package ships no type information
        module = importlib.import_module("msgpack")
    except ImportError as exc:
        raise MissingExtra("msgpack", "msgpack", 'serializer="msgpack"') from exc
    return functools.partial(_msgpack_dumps, module), functools.partial(_msgpack_loads, module)


# -- json -------------------------------------------------------------------------------------


def _json_dumps(value: Any) -> bytes:
    _check_plain(value, "json", _JSON_LEAVES, (str,))
    try:
        # ensure_ascii keeps lone surrogates intact; allow_nan=False is a second guard
        text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:  # an int past sys.get_int_max_str_digits()
        raise NotSerializable(f"json cannot encode the payload: {exc}; {_WAY_OUT}") from exc
    return text.encode("ascii")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _json_loads(body: bytes) -> Any:
    return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)


# -- msgpack ----------------------------------------------------------------------------------


def _msgpack_dumps(module: ModuleType, value: Any) -> bytes:
    _check_plain(value, "msgpack", _MSGPACK_LEAVES, _MSGPACK_KEYS)
    try:
        body: bytes = module.packb(value, use_bin_type=True)
    except Exception as exc:  # a lone surrogate in a str, for one
        raise NotSerializable(f"msgpack cannot encode the payload: {exc}; {_WAY_OUT}") from exc
    return body


def _msgpack_loads(module: ModuleType, body: bytes) -> Any:
    # int keys are allowed at dumps, so they must be readable here
    return module.unpackb(body, raw=False, strict_map_key=False)


# -- pickle -----------------------------------------------------------------------------------


def _pickle_dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # PicklingError, TypeError, AttributeError, RecursionError...
        raise NotSerializable(f"pickle cannot encode the payload: {exc}") from exc


# -- checking plain data ----------------------------------------------------------------------


class _Unfit(Exception):
    """Raised inside ``_walk``; each container on the way up prepends its index or key."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.trail: list[str] = []


def _check_plain(value: Any, fmt: str, leaves: tuple[type, ...], keys: tuple[type, ...]) -> None:
    """Refuse, with the path to it, the first thing in ``value`` that ``fmt`` cannot carry."""
    try:
        _walk(value, fmt, leaves, keys, set())
    except _Unfit as unfit:
        path = "payload" + "".join(reversed(unfit.trail))
        raise NotSerializable(f"{fmt} cannot encode {unfit.what} at {path}; {_WAY_OUT}") from None
    except RecursionError as exc:
        raise NotSerializable(f"{fmt} cannot encode the payload: nested too deeply") from exc


def _walk(
    value: Any, fmt: str, leaves: tuple[type, ...], keys: tuple[type, ...], seen: set[int]
) -> None:
    # paths are only built on the way out of a failure, so a good payload costs one pass
    if isinstance(value, leaves):
        if fmt == "json" and isinstance(value, float) and not math.isfinite(value):
            raise _Unfit(f"float {value!r} (JSON has no NaN or infinity)")
        if fmt == "msgpack" and isinstance(value, int) and not _INT64_MIN <= value <= _UINT64_MAX:
            raise _Unfit(f"int {_short(value)} (msgpack integers have 64 bits)")
        return
    if not isinstance(value, list | tuple | dict):
        raise _Unfit(f"{type(value).__qualname__} {_short(value)}")
    if id(value) in seen:
        raise _Unfit("a circular reference")
    plain = _JSON_PLAIN if fmt == "json" else _PLAIN
    if not isinstance(value, dict) and all(type(item) in plain for item in value):
        return  # the common flat list of str, int, bool and None: nothing inside to refuse
    seen.add(id(value))
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(value, dict) and not isinstance(key, keys):
            names = " or ".join(k.__name__ for k in keys)
            raise _Unfit(f"{type(key).__qualname__} key {_short(key)} (keys must be {names})")
        try:
            _walk(item, fmt, leaves, keys, seen)
        except _Unfit as unfit:
            unfit.trail.append(f"[{key!r}]")
            raise
    seen.discard(id(value))


def _short(value: Any) -> str:
    """A repr cut to a readable length (reprs can be huge, or raise)."""
    try:
        text = repr(value)
    except Exception:
        return "(repr failed)"
    return text if len(text) <= 60 else text[:57] + "..."
