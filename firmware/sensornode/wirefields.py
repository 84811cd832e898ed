# Payload field checks shared by every message of the wire protocol (sensornode.protocol):
# each failure is a ProtocolError whose message names the field. MicroPython subset.
import json

try:
    from typing import Any
except ImportError:
    pass

PROTOCOL_VERSION = 1


class ProtocolError(ValueError):
    """A payload or topic that does not follow the protocol; the message names the field."""


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A JSON number we can store: not bool, not NaN or infinite, not an absurdly long int."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return -1e300 <= value <= 1e300  # False for NaN too


def field(obj: "dict[str, Any]", where: str, key: str) -> "Any":
    if key not in obj:
        raise ProtocolError("%s.%s: missing" % (where, key))
    return obj[key]


def int_field(obj: "dict[str, Any]", where: str, key: str, low: int, high: int) -> int:
    value = field(obj, where, key)
    if not is_int(value) or not low <= value <= high:
        raise ProtocolError(
            "%s.%s: must be an integer in %d..%d, got %r" % (where, key, low, high, value)
        )
    return int(value)


def timestamp(obj: "dict[str, Any]", where: str) -> float:
    value = field(obj, where, "ts")
    # 2001-09-09 .. 2286: rules out seconds-since-2000 clocks that were never set.
    if not is_number(value) or not 1e9 <= value < 1e10:
        raise ProtocolError("%s.ts: must be Unix time in seconds, got %r" % (where, value))
    return float(value)


def str_field(obj: "dict[str, Any]", where: str, key: str, max_len: int = 64) -> str:
    value = field(obj, where, key)
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise ProtocolError(
            "%s.%s: must be a text of 1-%d characters, got %r" % (where, key, max_len, value)
        )
    return value


def choice_field(obj: "dict[str, Any]", where: str, key: str, allowed: "tuple[str, ...]") -> str:
    value = field(obj, where, key)
    if value not in allowed:
        raise ProtocolError(
            "%s.%s: must be one of %s, got %r" % (where, key, ", ".join(allowed), value)
        )
    return str(value)


def bool_field(obj: "dict[str, Any]", where: str, key: str) -> bool:
    value = field(obj, where, key)
    if not isinstance(value, bool):
        raise ProtocolError("%s.%s: must be true or false, got %r" % (where, key, value))
    return value


def optional_text(obj: "dict[str, Any]", where: str, key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise ProtocolError("%s.%s: must be text, got %r" % (where, key, value))
    return value


def load(payload: "bytes | str", where: str) -> "dict[str, Any]":
    try:
        text = payload.decode() if isinstance(payload, bytes) else payload
        obj = json.loads(text)
    # Hostile nesting: RecursionError (a RuntimeError) on CPython, MemoryError on MicroPython.
    except (ValueError, UnicodeError, RuntimeError, MemoryError) as exc:
        raise ProtocolError("%s: not JSON (%s)" % (where, exc)) from None
    if not isinstance(obj, dict):
        raise ProtocolError("%s: must be a JSON object" % where)
    version = obj.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            "%s.v: protocol version %r is not supported (expected %d)"
            % (where, version, PROTOCOL_VERSION)
        )
    return obj


def dump(obj: "dict[str, Any]") -> bytes:
    obj["v"] = PROTOCOL_VERSION
    return json.dumps(obj, separators=(",", ":")).encode()  # compact: every byte is airtime


