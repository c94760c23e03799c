"""Serializer: round trips, strict json, HMAC signing, and refusal of bad payloads."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import math
import pathlib
import pickle
import random
import sys
import threading
from collections import OrderedDict
from enum import IntEnum
from typing import Any

import pytest
from pydantic import SecretStr

from conveyor.errors import InvalidJob, MissingExtra, NotSerializable, PayloadRefused
from conveyor.serializer import Serializer

FORMATS = ["json", "pickle", "msgpack"]
SECRET = "s3cret"
MAC_SIZE = 32

#: (args, kwargs) as a queue would store them; every format carries this
PLAIN = (
    (1, "two", [3.5, None, True, False], {"nested": [{"deep": ["é✓", -0.0]}]}),
    {"n": 2**62, "empty": {}, "list": [], "text": "line\nbreak"},
)


def lists(value: Any) -> Any:
    """``value`` with tuples turned into lists, as json and msgpack return them."""
    if isinstance(value, tuple | list):
        return [lists(item) for item in value]
    if isinstance(value, dict):
        return {key: lists(item) for key, item in value.items()}
    return value


class Colour(IntEnum):
    RED = 1


class Touch:
    """A pickle that creates ``path`` when it is unpickled."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.path,))


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("secret", [None, SECRET])
def test_plain_data_round_trips_with_tuples_as_lists(name: str, secret: str | None) -> None:
    serializer = Serializer(name, secret=secret)
    loaded = serializer.loads(serializer.dumps(PLAIN))
    expected = PLAIN if name == "pickle" else lists(PLAIN)
    assert loaded == expected
    assert type(loaded) is (tuple if name == "pickle" else list)


def test_json_returns_subclasses_as_their_base_type() -> None:
    serializer = Serializer("json")
    loaded = serializer.loads(serializer.dumps([Colour.RED, OrderedDict(a=1)]))
    assert loaded == [1, {"a": 1}]
    assert type(loaded[0]) is int
    assert type(loaded[1]) is dict


def test_json_keeps_lone_surrogates() -> None:
    serializer = Serializer("json")
    assert serializer.loads(serializer.dumps("a\ud800b")) == "a\ud800b"


def test_msgpack_refuses_a_lone_surrogate() -> None:
    with pytest.raises(NotSerializable, match="msgpack cannot encode"):
        Serializer("msgpack").dumps("a\ud800b")


def test_json_carries_integers_of_any_size() -> None:
    serializer = Serializer("json")
    assert serializer.loads(serializer.dumps([2**200, -(2**70)])) == [2**200, -(2**70)]


def test_msgpack_carries_the_whole_64_bit_range() -> None:
    serializer = Serializer("msgpack")
    assert serializer.loads(serializer.dumps([-(2**63), 2**64 - 1])) == [-(2**63), 2**64 - 1]


def test_msgpack_carries_bytes_nan_and_non_str_keys() -> None:
    serializer = Serializer("msgpack")
    loaded = serializer.loads(serializer.dumps({1: b"\x00\xff", "f": math.inf, None: [math.nan]}))
    assert loaded[1] == b"\x00\xff"
    assert loaded["f"] == math.inf
    assert math.isnan(loaded[None][0])


def test_pickle_carries_python_objects() -> None:
    value = ({1, 2}, b"\x00", datetime.datetime(2024, 1, 2, 3, 4), (1, 2), Colour.RED)
    serializer = Serializer("pickle")
    loaded = serializer.loads(serializer.dumps(value))
    assert loaded == value
    assert loaded[-1] is Colour.RED


def test_str_and_bytes_secrets_are_the_same_key() -> None:
    payload = Serializer("json", secret=SECRET).dumps([1])
    assert Serializer("json", secret=SECRET.encode()).loads(payload) == [1]


# -- frame layout -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "code"), [("json", b"j"), ("pickle", b"p"), ("msgpack", b"m")])
def test_frame_is_header_then_mac_then_body(name: str, code: bytes) -> None:
    unsigned = Serializer(name).dumps(PLAIN)
    signed = Serializer(name, secret=SECRET).dumps(PLAIN)
    assert unsigned[:5] == b"cv1" + code + b"."
    assert signed[:5] == b"cv1" + code + b"s"
    assert signed[5 + MAC_SIZE :] == unsigned[5:]
    assert len(signed) == len(unsigned) + MAC_SIZE


def test_mac_is_hmac_sha256_over_header_and_body() -> None:
    signed = Serializer("json", secret=SECRET).dumps([1])
    header, mac, body = signed[:5], signed[5 : 5 + MAC_SIZE], signed[5 + MAC_SIZE :]
    assert mac == hmac.new(SECRET.encode(), header + body, hashlib.sha256).digest()


def test_json_body_is_compact_ascii_json() -> None:
    assert Serializer("json").dumps({"a": [1, "é"]}) == b'cv1j.{"a":[1,"\\u00e9"]}'


# -- construction -----------------------------------------------------------------------------


def test_unknown_name_is_a_value_error_listing_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'json', 'pickle', 'msgpack'") as info:
        Serializer("yaml")
    assert "'yaml'" in str(info.value)


def test_missing_msgpack_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)
    with pytest.raises(MissingExtra, match=r"conveyor\[msgpack\]") as info:
        Serializer("msgpack")
    assert isinstance(info.value, ImportError)
    assert 'serializer="msgpack"' in str(info.value)


def test_secret_must_be_str_or_bytes() -> None:
    with pytest.raises(TypeError, match="get_secret_value"):
        Serializer(secret=SecretStr(SECRET))  # type: ignore[arg-type]


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Serializer(secret="")


def test_repr_does_not_show_the_secret() -> None:
    text = repr(Serializer("pickle", secret=SECRET))
    assert text == "Serializer('pickle', signed=True)"


# -- values a format cannot carry -------------------------------------------------------------


class Thing:
    pass


@pytest.mark.parametrize(
    ("value", "what", "where"),
    [
        ({1, 2}, "set", "payload"),
        ([b"raw"], "bytes", "payload[0]"),
        ({"when": datetime.date(2024, 1, 1)}, "date", "payload['when']"),
        ((1, [Thing()]), "Thing", "payload[1][0]"),
        ({"x": math.nan}, "nan", "payload['x']"),
        ([math.inf], "inf", "payload[0]"),
        ([-math.inf], "-inf", "payload[0]"),
        ({1: "a"}, "int key 1", "payload"),
        ({("a", "b"): 1}, "tuple key", "payload"),
    ],
)
def test_json_refuses_what_it_cannot_carry(value: Any, what: str, where: str) -> None:
    with pytest.raises(NotSerializable) as info:
        Serializer("json").dumps(value)
    message = str(info.value)
    assert what in message
    assert f"at {where};" in message
    assert 'serializer="pickle"' in message
    assert isinstance(info.value, InvalidJob)


def test_json_refuses_a_circular_reference() -> None:
    looped: list[Any] = [1]
    looped.append({"again": looped})
    with pytest.raises(NotSerializable, match=r"circular reference at payload\[1\]\['again'\]"):
        Serializer("json").dumps(looped)


def test_json_allows_the_same_list_twice_when_it_is_not_a_cycle() -> None:
    shared = [1]
    serializer = Serializer("json")
    assert serializer.loads(serializer.dumps([shared, shared])) == [[1], [1]]


def test_json_refuses_nesting_deeper_than_the_recursion_limit() -> None:
    deep: list[Any] = []
    for _ in range(sys.getrecursionlimit() + 10):
        deep = [deep]
    with pytest.raises(NotSerializable, match="nested too deeply"):
        Serializer("json").dumps(deep)


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ({1}, "set"),
        ([2**64], r"int 18446744073709551616 \(msgpack integers have 64 bits\) at payload\[0\]"),
        ({(1, 2): 1}, "tuple key"),
        ([Thing()], "Thing"),
    ],
)
def test_msgpack_refuses_what_it_cannot_carry(value: Any, what: str) -> None:
    with pytest.raises(NotSerializable, match=what) as info:
        Serializer("msgpack").dumps(value)
    assert 'serializer="pickle"' in str(info.value)


@pytest.mark.parametrize("value", [lambda: 1, threading.Lock()])
def test_pickle_refuses_what_it_cannot_pickle(value: Any) -> None:
    with pytest.raises(NotSerializable, match="pickle cannot encode"):
        Serializer("pickle").dumps([value])


# -- signing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_a_changed_byte_anywhere_is_refused(name: str) -> None:
    serializer = Serializer(name, secret=SECRET)
    payload = serializer.dumps(PLAIN)
    for index in range(len(payload)):
        forged = bytearray(payload)
        forged[index] ^= 0x01
        with pytest.raises(PayloadRefused):
            serializer.loads(bytes(forged))


@pytest.mark.parametrize("name", FORMATS)
def test_a_truncated_signed_payload_is_refused(name: str) -> None:
    serializer = Serializer(name, secret=SECRET)
    payload = serializer.dumps(PLAIN)
    for size in range(len(payload)):
        with pytest.raises(PayloadRefused):
            serializer.loads(payload[:size])


@pytest.mark.parametrize("name", FORMATS)
def test_an_unsigned_payload_is_refused_when_a_secret_is_set(name: str) -> None:
    payload = Serializer(name).dumps(PLAIN)
    with pytest.raises(PayloadRefused, match="unsigned"):
        Serializer(name, secret=SECRET).loads(payload)


@pytest.mark.parametrize("name", FORMATS)
def test_a_payload_signed_with_another_secret_is_refused(name: str) -> None:
    payload = Serializer(name, secret="other").dumps(PLAIN)
    with pytest.raises(PayloadRefused, match="signature"):
        Serializer(name, secret=SECRET).loads(payload)


@pytest.mark.parametrize("name", FORMATS)
def test_a_signed_payload_is_refused_without_a_secret(name: str) -> None:
    payload = Serializer(name, secret=SECRET).dumps(PLAIN)
    with pytest.raises(PayloadRefused, match="no secret configured"):
        Serializer(name).loads(payload)


@pytest.mark.parametrize("secret", [None, SECRET])
def test_a_payload_of_another_format_is_refused(secret: str | None) -> None:
    payload = Serializer("pickle", secret=secret).dumps([1])
    with pytest.raises(PayloadRefused, match="payload is pickle"):
        Serializer("json", secret=secret).loads(payload)


# -- a forged pickle is never unpickled -------------------------------------------------------


def test_the_touch_pickle_does_create_its_file_when_signed(tmp_path: pathlib.Path) -> None:
    # control: proves the pickle below has a side effect, so its absence means something
    marker = tmp_path / "ran"
    serializer = Serializer("pickle", secret=SECRET)
    serializer.loads(serializer.dumps(Touch(marker)))
    assert marker.exists()


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(lambda body: b"cv1ps" + b"\x00" * MAC_SIZE + body, id="forged-mac"),
        pytest.param(lambda body: b"cv1p." + body, id="unsigned"),
        pytest.param(lambda body: body, id="no-header"),
    ],
)
def test_a_forged_pickle_is_never_unpickled(tmp_path: pathlib.Path, frame: Any) -> None:
    marker = tmp_path / "ran"
    payload = frame(pickle.dumps(Touch(marker)))
    with pytest.raises(PayloadRefused):
        Serializer("pickle", secret=SECRET).loads(payload)
    assert not marker.exists()


def test_a_pickle_resigned_with_another_secret_is_never_unpickled(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "ran"
    payload = Serializer("pickle", secret="attacker").dumps(Touch(marker))
    with pytest.raises(PayloadRefused):
        Serializer("pickle", secret=SECRET).loads(payload)
    assert not marker.exists()


def test_a_json_queue_never_unpickles_even_without_a_secret(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "ran"
    payload = b"cv1p." + pickle.dumps(Touch(marker))
    with pytest.raises(PayloadRefused):
        Serializer("json").loads(payload)
    assert not marker.exists()


# -- corrupt payloads -------------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_a_truncated_unsigned_payload_is_refused(name: str) -> None:
    # PLAIN is a container, so no strict prefix of its body is itself a valid document
    serializer = Serializer(name)
    payload = serializer.dumps(PLAIN)
    for size in range(len(payload)):
        with pytest.raises(PayloadRefused):
            serializer.loads(payload[:size])


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"cv1", b"cv2j.[]", b"cv1x.[]", b"cv1j?[]", "cv1j.[]"]
)
def test_garbage_is_refused(name: str, data: Any) -> None:
    with pytest.raises(PayloadRefused):
        Serializer(name).loads(data)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("json", b"[1,"),
        ("json", b"NaN"),
        ("json", b"[1] [2]"),
        ("json", b'"\xff"'),
        ("msgpack", b"\xc1"),
        ("msgpack", b"\x91\x01\x02"),
        ("pickle", b"\x80\x05garbage."),
        ("pickle", b"\x80\x05\x95"),
        ("pickle", b"cnosuchmodule\nthing\n."),
    ],
)
def test_an_undecodable_body_is_refused_with_its_cause(name: str, body: bytes) -> None:
    # given a well-framed payload whose body its format cannot decode
    code = {"json": b"j", "pickle": b"p", "msgpack": b"m"}[name]
    serializer = Serializer(name)
    with pytest.raises(PayloadRefused, match=f"corrupt {name} payload") as info:
        serializer.loads(b"cv1" + code + b"." + body)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_random_bodies_raise_nothing_but_payload_refused(name: str) -> None:
    code = {"json": b"j", "msgpack": b"m"}[name]
    serializer = Serializer(name)
    rng = random.Random(1234)
    for _ in range(2000):
        body = rng.randbytes(rng.randrange(1, 40))
        with contextlib.suppress(PayloadRefused):
            serializer.loads(b"cv1" + code + b"." + body)


def test_bytearray_and_memoryview_payloads_are_read() -> None:
    serializer = Serializer("json", secret=SECRET)
    payload = serializer.dumps([1])
    assert serializer.loads(bytearray(payload)) == [1]
    assert serializer.loads(memoryview(payload)) == [1]
