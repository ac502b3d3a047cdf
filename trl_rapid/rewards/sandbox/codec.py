"""Plain-data codec of the pipe between the candidate's process and the verdict's process.

Only these values cross, each rebuilt from scratch as an exact built-in type by the receiver: None, bool, int (any
size), float (inf, nan and -0.0 included, bit-exact), complex, str, bytes, and list / tuple / dict / set / frozenset
of them, at most `MAX_DEPTH` levels deep, `MAX_ITEMS` values and `MAX_MESSAGE_BYTES` bytes per message. The wire
format is tagged JSON (never pickle, never eval): JSON null/true/false/integers/strings/arrays stand for themselves
(an array is a list) and every other value is a one-key object, {"f": float.hex()}, {"i": hex int}, {"c": [re, im]},
{"b": base64}, {"t": tuple items}, {"s": set items}, {"z": frozenset items}, {"d": [[key, value], ...]}. `decode`
rejects anything else (a JSON float, NaN literal, unknown tag, unhashable key, too deep, too big).

`encode` also converts, on the sending side, what honest code commonly returns: numpy scalars and arrays (`.item()`,
`.tolist()`), subclasses of the plain types (namedtuple, OrderedDict, Counter, defaultdict, str/int/float subclasses:
copied to the exact base type, so an overridden `__eq__` does not survive) and bytearray (as bytes). Anything else
(generators, map objects, classes the program defined, modules, functions) raises `PlainDataError`.

This file is self-contained (standard library only): its source also runs inside the sandboxed interpreters.
"""

import base64
import json
import os
import struct

MAX_DEPTH = 100
MAX_ITEMS = 2_000_000
MAX_MESSAGE_BYTES = 64 << 20
_SMALL_INT = 1 << 62  # ints beyond this travel as hex strings: no int/str digit limit, no JSON precision question
_HEADER = struct.Struct("!Q")


class PlainDataError(ValueError):
    """A value that is not plain data, or a message that does not decode to plain data."""


def _convert(value):
    """An exact plain type for a common honest value (numpy, subclasses of plain types), or raise PlainDataError."""
    module = type(value).__module__ or ""
    if module == "numpy" or module.startswith("numpy."):
        if hasattr(value, "tolist"):  # arrays to nested lists, numpy scalars to Python scalars
            return value.tolist()
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, complex):
        return complex(float(value.real), float(value.imag))
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, tuple):
        return tuple(tuple.__iter__(value))
    if isinstance(value, list):
        return list(list.__iter__(value))
    if isinstance(value, dict):
        return {k: dict.__getitem__(value, k) for k in dict.__iter__(value)}
    if isinstance(value, frozenset):
        return frozenset(frozenset.__iter__(value))
    if isinstance(value, set):
        return set(set.__iter__(value))
    raise PlainDataError(f"a {type(value).__name__} is not plain data")


def to_wire(value):
    """The JSON-able tagged form of `value`; raises PlainDataError for anything that is not plain data."""
    budget = [MAX_ITEMS]

    def enc(v, depth):
        if depth > MAX_DEPTH:
            raise PlainDataError(f"nested deeper than {MAX_DEPTH} levels (or recursive)")
        budget[0] -= 1
        if budget[0] < 0:
            raise PlainDataError(f"more than {MAX_ITEMS} values")
        t = type(v)
        if v is None or t is bool or t is str:
            return v
        if t is int:
            return v if -_SMALL_INT < v < _SMALL_INT else {"i": format(v, "x")}
        if t is float:
            return {"f": v.hex()}
        if t is complex:
            return {"c": [v.real.hex(), v.imag.hex()]}
        if t is bytes:
            return {"b": base64.b64encode(v).decode("ascii")}
        if t is list:
            return [enc(x, depth + 1) for x in v]
        if t is tuple:
            return {"t": [enc(x, depth + 1) for x in v]}
        if t is dict:
            return {"d": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in v.items()]}
        if t is set:
            return {"s": [enc(x, depth + 1) for x in v]}
        if t is frozenset:
            return {"z": [enc(x, depth + 1) for x in v]}
        return enc(_convert(v), depth)  # _convert returns exact types only: no loop

    try:
        return enc(value, 0)
    except RecursionError:
        raise PlainDataError("nested too deeply") from None


def from_wire(raw):
    """Rebuild a value from its tagged form with exact built-in types; raises PlainDataError on anything unexpected."""
    budget = [MAX_ITEMS]

    def items(body, depth):
        if type(body) is not list:
            raise PlainDataError("a container tag must hold a list")
        return [dec(x, depth + 1) for x in body]

    def dec(x, depth):
        if depth > MAX_DEPTH:
            raise PlainDataError(f"nested deeper than {MAX_DEPTH} levels")
        budget[0] -= 1
        if budget[0] < 0:
            raise PlainDataError(f"more than {MAX_ITEMS} values")
        t = type(x)
        if x is None or t is bool or t is str or t is int:
            return x
        if t is list:
            return [dec(i, depth + 1) for i in x]
        if t is not dict or len(x) != 1:
            raise PlainDataError(f"unexpected {t.__name__} on the wire")
        ((tag, body),) = x.items()
        if tag in ("f", "i", "b"):
            if type(body) is not str:
                raise PlainDataError(f"tag {tag!r} must hold a string")
            if tag == "f":
                return float.fromhex(body)
            if tag == "i":
                return int(body, 16)
            return base64.b64decode(body.encode("ascii"), validate=True)
        if tag == "c":
            if type(body) is not list or len(body) != 2 or not all(type(p) is str for p in body):
                raise PlainDataError("tag 'c' must hold two strings")
            return complex(float.fromhex(body[0]), float.fromhex(body[1]))
        if tag == "t":
            return tuple(items(body, depth))
        if tag == "s":
            return set(items(body, depth))
        if tag == "z":
            return frozenset(items(body, depth))
        if tag == "d":
            pairs = items(body, depth)
            if not all(type(p) is list and len(p) == 2 for p in pairs):
                raise PlainDataError("tag 'd' must hold [key, value] pairs")
            return {k: v for k, v in pairs}
        raise PlainDataError(f"unknown tag {tag!r}")

    try:
        return dec(raw, 0)
    except PlainDataError:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError, UnicodeError) as exc:  # unhashable key, bad hex...
        raise PlainDataError(f"malformed value: {type(exc).__name__}: {exc}") from None


def _no_json_float(text):
    raise PlainDataError(f"a bare JSON number {text!r} is not allowed (floats travel as hex)")


def encode(value) -> bytes:
    """`value` as one message body (UTF-8 tagged JSON)."""
    try:
        body = json.dumps(to_wire(value), ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")
    except RecursionError:
        raise PlainDataError("nested too deeply") from None
    if len(body) > MAX_MESSAGE_BYTES:
        raise PlainDataError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return body


def decode(body: bytes):
    """The plain value in one message body; raises PlainDataError for anything that is not plain data."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise PlainDataError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        raw = json.loads(body, parse_float=_no_json_float, parse_constant=_no_json_float)
    except PlainDataError:
        raise
    except (ValueError, RecursionError, UnicodeError) as exc:
        raise PlainDataError(f"not valid JSON: {type(exc).__name__}") from None
    return from_wire(raw)


def send(fd: int, value) -> None:
    """Write one length-prefixed message."""
    body = encode(value)
    data = memoryview(_HEADER.pack(len(body)) + body)
    while data:
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(fd: int):
    """Read one length-prefixed message; EOFError if the pipe is closed, PlainDataError if it is not plain data."""
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size))
    if size > MAX_MESSAGE_BYTES:
        raise PlainDataError(f"announced message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    return decode(_read_exactly(fd, size))
