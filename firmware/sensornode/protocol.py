# Wire protocol: topics and payloads, shared by the node firmware and the gateway.
# docs/protocol.md is the prose spec; tests/vectors/protocol.json holds the vectors both
# ends are tested against (under CPython and under the micropython interpreter).
import json

try:
    from typing import Any
except ImportError:
    pass

PROTOCOL_VERSION = 1
TOPIC_ROOT = "nt"

# Per-node topics under nt/<site>/<node>/
STATUS = "status"
TELEMETRY = "telemetry"
EVENT = "event"
CMD = "cmd"
ACK = "ack"
CONFIG = "config"
NODE_TOPICS = (STATUS, TELEMETRY, EVENT, CMD, ACK, CONFIG)

# Site-wide topics nt/<site>/<kind>: time from the gateway, the latching emergency stop.
TIME = "time"
ESTOP = "estop"
SITE_TOPICS = (TIME, ESTOP)

ROLES = ("garden", "drone")

# Every reported quantity, with its unit. A name not listed here is refused by the decoder,
# so a typo on a node shows up as a dead letter instead of a silently new column.
QUANTITIES = {
    "soil_moisture": "%",
    "soil_raw": "adc_u16",
    "pump": "on_off",
    "soil_temperature": "degC",
    "air_temperature": "degC",
    "air_humidity": "%RH",
    "pressure": "hPa",
    "gas_resistance": "ohm",
    "voc_index": "index",
    "voc_raw": "ticks",
    "mq135_ppm": "ppm",
    "mq135_ratio": "Rs/R0",
    "tank_ok": "on_off",
    "diffuser_duty": "%",
}
# Quantities a node may have several of (probes on one bus, diffuser channels): reported as
# <name>_<n> with n from 1 to MAX_CHANNELS, e.g. soil_temperature_2, diffuser_duty_1.
MULTI_QUANTITIES = ("soil_temperature", "diffuser_duty", "tank_ok")
MAX_CHANNELS = 8

ACTIONS = ("irrigate", "diffuse")
MAX_IRRIGATE_S = 3600
MAX_DIFFUSE_S = 3600
DIFFUSER_CHANNELS = 4
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"
_MAX_NAME = 32


class ProtocolError(ValueError):
    """A payload or topic that does not follow the protocol; the message names the field."""


def valid_name(name: object) -> bool:
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
        return False
    return all(ch in _NAME_CHARS for ch in name)


def check_name(field: str, name: object) -> str:
    if not valid_name(name):
        raise ProtocolError(
            "%s: %r is not a valid name; use 1-%d characters of a-z, 0-9, '-' or '_'"
            % (field, name, _MAX_NAME)
        )
    return str(name)


def node_topic(site: str, node: str, kind: str) -> str:
    check_name("site", site)
    check_name("node", node)
    if kind not in NODE_TOPICS:
        raise ProtocolError("topic kind: %r is not one of %s" % (kind, ", ".join(NODE_TOPICS)))
    return "%s/%s/%s/%s" % (TOPIC_ROOT, site, node, kind)


def site_filter(site: str, kind: str) -> str:
    """Subscription filter for one kind of topic from every node of a site."""
    check_name("site", site)
    return "%s/%s/+/%s" % (TOPIC_ROOT, site, kind)


def site_topic(site: str, kind: str) -> str:
    """A site-wide topic, nt/<site>/<kind>: one for every node of the site."""
    check_name("site", site)
    if kind not in SITE_TOPICS:
        raise ProtocolError(
            "site topic kind: %r is not one of %s" % (kind, ", ".join(SITE_TOPICS))
        )
    return "%s/%s/%s" % (TOPIC_ROOT, site, kind)


def parse_topic(topic: str) -> tuple[str, str, str]:
    """Split nt/<site>/<node>/<kind> into (site, node, kind)."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_ROOT:
        raise ProtocolError("topic: %r is not of the form nt/<site>/<node>/<kind>" % topic)
    site = check_name("topic site", parts[1])
    node = check_name("topic node", parts[2])
    if parts[3] not in NODE_TOPICS:
        raise ProtocolError("topic: unknown kind %r in %r" % (parts[3], topic))
    return site, node, parts[3]


# ---- field checks -------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """A JSON number we can store: not bool, not NaN or infinite, not an absurdly long int."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return -1e300 <= value <= 1e300  # False for NaN too


def _field(obj: "dict[str, Any]", where: str, key: str) -> "Any":
    if key not in obj:
        raise ProtocolError("%s.%s: missing" % (where, key))
    return obj[key]


def _int_field(obj: "dict[str, Any]", where: str, key: str, low: int, high: int) -> int:
    value = _field(obj, where, key)
    if not _is_int(value) or not low <= value <= high:
        raise ProtocolError(
            "%s.%s: must be an integer in %d..%d, got %r" % (where, key, low, high, value)
        )
    return int(value)


def _timestamp(obj: "dict[str, Any]", where: str) -> float:
    value = _field(obj, where, "ts")
    # 2001-09-09 .. 2286: rules out seconds-since-2000 clocks that were never set.
    if not _is_number(value) or not 1e9 <= value < 1e10:
        raise ProtocolError("%s.ts: must be Unix time in seconds, got %r" % (where, value))
    return float(value)


def _str_field(obj: "dict[str, Any]", where: str, key: str, max_len: int = 64) -> str:
    value = _field(obj, where, key)
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise ProtocolError(
            "%s.%s: must be a text of 1-%d characters, got %r" % (where, key, max_len, value)
        )
    return value


def _choice_field(obj: "dict[str, Any]", where: str, key: str, allowed: "tuple[str, ...]") -> str:
    value = _field(obj, where, key)
    if value not in allowed:
        raise ProtocolError(
            "%s.%s: must be one of %s, got %r" % (where, key, ", ".join(allowed), value)
        )
    return str(value)


def _bool_field(obj: "dict[str, Any]", where: str, key: str) -> bool:
    value = _field(obj, where, key)
    if not isinstance(value, bool):
        raise ProtocolError("%s.%s: must be true or false, got %r" % (where, key, value))
    return value


def _optional_text(obj: "dict[str, Any]", where: str, key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise ProtocolError("%s.%s: must be text, got %r" % (where, key, value))
    return value


def _load(payload: "bytes | str", where: str) -> "dict[str, Any]":
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


def _dump(obj: "dict[str, Any]") -> bytes:
    obj["v"] = PROTOCOL_VERSION
    return json.dumps(obj, separators=(",", ":")).encode()  # compact: every byte is airtime


# ---- status (retained birth message and last will) ---------------------------------------


def encode_status(
    online: bool,
    role: str = "",
    fw: str = "",
    board: str = "",
    uptime_s: int = 0,
    seq_next: int = 0,
    ts: float = 0.0,
) -> bytes:
    if not online:
        return _dump({"online": False})
    return _dump(
        {
            "online": True,
            "role": role,
            "fw": fw,
            "board": board,
            "uptime_s": uptime_s,
            "seq_next": seq_next,
            "ts": ts,
        }
    )


def decode_status(payload: "bytes | str") -> "dict[str, Any]":
    obj = _load(payload, "status")
    if not _bool_field(obj, "status", "online"):
        return {"online": False}
    role = _choice_field(obj, "status", "role", ROLES)
    return {
        "online": True,
        "role": role,
        "fw": _str_field(obj, "status", "fw", 32),
        "board": _str_field(obj, "status", "board", 32),
        "uptime_s": _int_field(obj, "status", "uptime_s", 0, 2**31),
        "seq_next": _int_field(obj, "status", "seq_next", 0, 2**53),
        "ts": _timestamp(obj, "status"),
    }


# ---- telemetry ----------------------------------------------------------------------------


def encode_telemetry(batch: "list[dict[str, Any]]") -> bytes:
    """batch: [{"seq": int, "ts": float, "values": {quantity: number}}, ...]"""
    return _dump({"batch": batch})


def encode_entry(seq: int, ts: float, values: "dict[str, float]") -> bytes:
    """One telemetry entry as stored in a node's outbox until it is sent."""
    return json.dumps({"seq": seq, "ts": ts, "values": values}, separators=(",", ":")).encode()


def encode_telemetry_entries(entries: "list[bytes]") -> bytes:
    """A telemetry payload from entries made by encode_entry, without decoding them again
    (the node joins what its outbox holds)."""
    return b'{"v":%d,"batch":[' % PROTOCOL_VERSION + b",".join(entries) + b"]}"


def known_quantity(name: str) -> bool:
    if name in QUANTITIES:
        return True
    base, _, index = name.rpartition("_")
    return (
        base in MULTI_QUANTITIES
        and index.isdigit()
        and 1 <= int(index) <= MAX_CHANNELS
        and index[0] != "0"
    )


def quantity_unit(name: str) -> str:
    """The unit of a known quantity, channel suffix or not."""
    if name in QUANTITIES:
        return QUANTITIES[name]
    return QUANTITIES[name.rpartition("_")[0]]


def _decode_values(values: object, where: str) -> "dict[str, float]":
    if not isinstance(values, dict) or not values:
        raise ProtocolError("%s.values: must be a non-empty object of quantity: number" % where)
    out = {}
    for name, value in values.items():
        if not known_quantity(name):
            raise ProtocolError(
                "%s.values.%s: unknown quantity (known: %s)"
                % (where, name, ", ".join(sorted(QUANTITIES)))
            )
        if not _is_number(value):
            raise ProtocolError(
                "%s.values.%s: must be a finite number, got %r" % (where, name, value)
            )
        out[name] = float(value)
    return out


def decode_telemetry(payload: "bytes | str") -> "list[dict[str, Any]]":
    """The batch as [{"seq", "ts", "values"}]; one bad entry refuses the whole payload."""
    obj = _load(payload, "telemetry")
    batch = _field(obj, "telemetry", "batch")
    if not isinstance(batch, list) or not batch:
        raise ProtocolError("telemetry.batch: must be a non-empty list")
    out = []
    for i, entry in enumerate(batch):
        where = "telemetry.batch[%d]" % i
        if not isinstance(entry, dict):
            raise ProtocolError("%s: must be an object" % where)
        out.append(
            {
                "seq": _int_field(entry, where, "seq", 0, 2**53),
                "ts": _timestamp(entry, where),
                "values": _decode_values(_field(entry, where, "values"), where),
            }
        )
    return out


# ---- events -------------------------------------------------------------------------------

EVENT_KINDS = ("actuator", "fault", "boot")


def encode_event(seq: int, ts: float, kind: str, name: str, state: str, detail: str = "") -> bytes:
    obj = {"seq": seq, "ts": ts, "kind": kind, "name": name, "state": state}
    if detail:
        obj["detail"] = detail
    return _dump(obj)


def decode_event(payload: "bytes | str") -> "dict[str, Any]":
    obj = _load(payload, "event")
    kind = _choice_field(obj, "event", "kind", EVENT_KINDS)
    detail = _optional_text(obj, "event", "detail")
    return {
        "seq": _int_field(obj, "event", "seq", 0, 2**53),
        "ts": _timestamp(obj, "event"),
        "kind": kind,
        "name": _str_field(obj, "event", "name", 32),
        "state": _str_field(obj, "event", "state", 32),
        "detail": detail,
    }


# ---- commands and acks --------------------------------------------------------------------


def encode_command(cmd_id: str, action: str, params: "dict[str, Any]", ts: float) -> bytes:
    return _dump({"id": cmd_id, "action": action, "params": params, "ts": ts})


def decode_command(payload: "bytes | str") -> "dict[str, Any]":
    obj = _load(payload, "cmd")
    cmd_id = _str_field(obj, "cmd", "id", 40)
    action = _choice_field(obj, "cmd", "action", ACTIONS)
    params = _field(obj, "cmd", "params")
    if not isinstance(params, dict):
        raise ProtocolError("cmd.params: must be an object")
    checked = {}
    if action == "irrigate":
        checked["seconds"] = _int_field(params, "cmd.params", "seconds", 1, MAX_IRRIGATE_S)
    elif action == "diffuse":
        checked["channel"] = _int_field(params, "cmd.params", "channel", 1, DIFFUSER_CHANNELS)
        checked["duty_pct"] = _int_field(params, "cmd.params", "duty_pct", 0, 100)
        checked["seconds"] = _int_field(params, "cmd.params", "seconds", 1, MAX_DIFFUSE_S)
    return {"id": cmd_id, "action": action, "params": checked, "ts": _timestamp(obj, "cmd")}


ACK_RESULTS = ("started", "done", "refused", "error")


def encode_ack(cmd_id: str, ok: bool, result: str, ts: float, detail: str = "") -> bytes:
    obj = {"id": cmd_id, "ok": ok, "result": result, "ts": ts}
    if detail:
        obj["detail"] = detail
    return _dump(obj)


def decode_ack(payload: "bytes | str") -> "dict[str, Any]":
    obj = _load(payload, "ack")
    ok = _bool_field(obj, "ack", "ok")
    result = _choice_field(obj, "ack", "result", ACK_RESULTS)
    detail = _optional_text(obj, "ack", "detail")
    return {
        "id": _str_field(obj, "ack", "id", 40),
        "ok": ok,
        "result": result,
        "ts": _timestamp(obj, "ack"),
        "detail": detail,
    }


# ---- time (site-wide, gateway -> nodes, QoS 0, never retained) ------------------------------

MAX_TIME_INTERVAL_S = 86400


def encode_time(ts: float, interval_s: float) -> bytes:
    """ts: the gateway's Unix time in seconds (sent to the millisecond); interval_s: how often
    the gateway sends it."""
    return _dump({"ts": round(ts, 3), "interval_s": interval_s})


def decode_time(payload: "bytes | str") -> "dict[str, Any]":
    """{"ts": Unix seconds, "ts_ms": the same in integer milliseconds, "interval_s": seconds}.

    Nodes use ts_ms: it is read from the number's digits, exact on every port, while a
    single-precision float (the ESP32 and RP2 ports) holds 1.8e9 s only to about +-64 s."""
    obj = _load(payload, "time")
    ts = _timestamp(obj, "time")
    interval = _field(obj, "time", "interval_s")
    if not _is_number(interval) or not 0 < interval <= MAX_TIME_INTERVAL_S:
        raise ProtocolError(
            "time.interval_s: must be a number of seconds above 0 and at most %d, got %r"
            % (MAX_TIME_INTERVAL_S, interval)
        )
    text = payload.decode() if isinstance(payload, bytes) else payload
    return {"ts": ts, "ts_ms": _ts_digits_ms(text, ts), "interval_s": float(interval)}


def _ts_digits_ms(text: str, ts: float) -> int:
    """Integer milliseconds from the digits of the payload's "ts" number; json's float `ts`
    (already checked) is the fallback and the check that the right digits were read."""
    ms = -1
    start = text.find('"ts"')
    if start >= 0:
        rest = text[start + 4 :].lstrip()
        if rest[:1] == ":":
            rest = rest[1:].lstrip()
            end = 0
            while end < len(rest) and rest[end] in "0123456789.":
                end += 1
            whole, _, frac = rest[:end].partition(".")
            exponent = rest[end : end + 1] in ("e", "E")
            if whole.isdigit() and (not frac or frac.isdigit()) and not exponent:
                frac += "0000"
                ms = int(whole) * 1000 + int(frac[:3]) + (1 if frac[3] >= "5" else 0)
    if ms < 0 or abs(ms / 1000 - ts) > ts * 1e-6:
        ms = round(ts * 1000)
    return ms
