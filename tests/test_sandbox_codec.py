"""The plain-data codec of the sandbox pipe: exact round trips, honest conversions, and rejection of everything else."""

import json
import math
from collections import Counter, OrderedDict, namedtuple

import numpy as np
import pytest

from trl_rapid.rewards.sandbox.codec import MAX_DEPTH, PlainDataError, decode, encode


def _same(a, b) -> bool:
    """Equal with exact types all the way down (so True != 1, 1.0 != 1, -0.0 != 0.0, nan == nan here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.copysign(1, a) == math.copysign(1, b) and (a == b or (a != a and b != b))
    if isinstance(a, complex):
        return _same(a.real, b.real) and _same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


ROUND_TRIPS = [
    None, True, False, 0, 1, -1, 2**62 - 1, 2**62, -(2**62), 10**5000, -(10**5000),
    0.0, -0.0, 1.5, 0.1 + 0.2, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.nan,
    3j, complex(-0.0, math.inf), "", "héllo ☃", "\ud800", "\x00", b"", b"\x00\xff" * 10,
    [], [1, [2, [3]]], (), (1,), ((1, 2), [3]), {}, {"a": 1, 2: "b", (1, 2): [3], None: None, 1.5: True},
    {1, 2, "x", (1, 2)}, frozenset({frozenset({1}), 2}), set(), [True, 1, 1.0],
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda v: type(v).__name__)
def test_plain_values_round_trip_exactly(value):
    assert _same(decode(encode(value)), value)


def test_honest_non_plain_values_are_converted_to_plain_types():
    Point = namedtuple("Point", "x y")

    class MyStr(str):
        def __eq__(self, other):  # a rigged comparison does not survive the copy
            return True

        __hash__ = str.__hash__

    converted = decode(encode([np.int64(3), np.float32(0.5), np.bool_(True), np.arange(3), np.zeros((2, 2)),
                               Point(1, 2), OrderedDict(a=1), Counter("aa"), bytearray(b"x"), MyStr("s")]))
    assert _same(converted, [3, 0.5, True, [0, 1, 2], [[0.0, 0.0], [0.0, 0.0]], (1, 2), {"a": 1}, {"a": 2}, b"x",
                             "s"])
    assert converted[-1] != "t"


class Rigged:
    def __eq__(self, other):
        return True


def _recursive():
    value = []
    value.append(value)
    return value


def _nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value", [Rigged(), [Rigged()], {"k": Rigged()}, iter([1]), (x for x in []), map(str, []),
                                   range(3), len, object, _recursive(), _nested(MAX_DEPTH + 5), {1: {2: _recursive()}}],
                         ids=lambda v: type(v).__name__)
def test_non_plain_values_are_rejected_on_encode(value):
    with pytest.raises(PlainDataError):
        encode(value)


@pytest.mark.parametrize("body", [
    b"1.5", b"NaN", b"Infinity", b"-Infinity", b'{"x": 1}', b'{"f": 1}', b'{"t": 1}', b'{"i": "zz"}', b'{"b": "%%%"}',
    b'{"s": [[1]]}', b'{"d": [[[1], 2]]}', b'{"d": [[1]]}', b'{"f": "0x1p+0", "t": []}', b'{"c": ["0x1p+0"]}',
    b"[" * 100_000 + b"]" * 100_000, b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5), b"\xff\xfe", b"", b"[1,",
    b"9" * 5000,
], ids=lambda b: b[:20].decode("latin-1"))
def test_malformed_messages_are_rejected_on_decode(body):
    with pytest.raises(PlainDataError):
        decode(body)


def test_wire_format_is_tagged_json():
    assert json.loads(encode((1, 2.0, b"a"))) == {"t": [1, {"f": "0x1.0000000000000p+1"}, {"b": "YQ=="}]}
