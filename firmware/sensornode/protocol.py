# Wire protocol: topics and payloads, shared by the node firmware and the gateway.
# docs/protocol.md is the prose spec; tests/vectors/protocol.json holds the vectors both
# ends are tested against (under CPython and under the micropython interpreter).
import json

from sensornode.wirefields import PROTOCOL_VERSION as PROTOCOL_VERSION  # part of the API
from sensornode.wirefields import ProtocolError as ProtocolError  # part of this module's API
from sensornode.wirefields import (
    bool_field,
    choice_field,
    dump,
    field,
    int_field,
    is_number,
    load,
    optional_text,
    str_field,
    timestamp,
)

try:
    from typing import Any
except ImportError:
    pass

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
_CHANNEL_SUFFIXES = tuple(str(n) for n in range(1, MAX_CHANNELS + 1))

ACTIONS = ("irrigate", "diffuse", "setpoint", "estop", "reset_estop", "clear_safe_mode")
MAX_IRRIGATE_S = 3600
MAX_DIFFUSE_S = 3600
DIFFUSER_CHANNELS = 4
# setpoint quantity: (lowest, highest target); the same ranges as sensornode.aroma's loop.
SETPOINT_QUANTITIES = {"voc_index": (1.0, 500.0), "gas_ratio": (0.1, 100.0)}
MAX_REASON = 200  # characters of an operator's reason (estop, its reset)
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"
_MAX_NAME = 32


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


# ---- status (retained birth message and last will) ---------------------------------------


def encode_status(
    online: bool,
    role: str = "",
    fw: str = "",
    board: str = "",
    uptime_s: int = 0,
    seq_next: int = 0,
    ts: float = 0.0,
    seq_last: "int | None" = None,
    config_version: str = "",
) -> bytes:
    if not online:
        return dump({"online": False})
    obj = {
        "online": True,
        "role": role,
        "fw": fw,
        "board": board,
        "uptime_s": uptime_s,
        "seq_next": seq_next,
        "ts": ts,
    }
    if seq_last is not None and 0 <= seq_last < seq_next:
        obj["seq_last"] = seq_last
    if config_version:
        obj["config"] = config_version
    return dump(obj)


def decode_status(payload: "bytes | str") -> "dict[str, Any]":
    obj = load(payload, "status")
    if not bool_field(obj, "status", "online"):
        return {"online": False}
    role = choice_field(obj, "status", "role", ROLES)
    fw = str_field(obj, "status", "fw", 32)
    board = str_field(obj, "status", "board", 32)
    uptime_s = int_field(obj, "status", "uptime_s", 0, 2**31)
    seq_next = int_field(obj, "status", "seq_next", 0, 2**53)
    seq_last = None
    if "seq_last" in obj:
        seq_last = int_field(obj, "status", "seq_last", 0, seq_next - 1)
    config_version = str_field(obj, "status", "config", 32) if "config" in obj else ""
    return {
        "online": True,
        "role": role,
        "fw": fw,
        "board": board,
        "uptime_s": uptime_s,
        "seq_next": seq_next,
        "seq_last": seq_last,
        "config": config_version,
        "ts": timestamp(obj, "status"),
    }


# ---- telemetry ----------------------------------------------------------------------------


def encode_telemetry(batch: "list[dict[str, Any]]") -> bytes:
    """batch: [{"seq": int, "ts": float, "values": {quantity: number}}, ...]"""
    return dump({"batch": batch})


def encode_entry(seq: int, ts: "float | tuple[int, int]", values: "dict[str, float]") -> bytes:
    """One telemetry entry as stored in a node's outbox until it is sent (ts may be a pending
    stamp, [boot, monotonic ms], that the node's sender resolves before sending)."""
    return json.dumps({"seq": seq, "ts": ts, "values": values}, separators=(",", ":")).encode()


def encode_telemetry_entries(entries: "list[bytes]") -> bytes:
    """A telemetry payload from entries made by encode_entry, without decoding them again
    (the node joins what its outbox holds)."""
    return b'{"v":%d,"batch":[' % PROTOCOL_VERSION + b",".join(entries) + b"]}"


def known_quantity(name: str) -> bool:
    if name in QUANTITIES:
        return True
    base, _, index = name.rpartition("_")
    # Compared as text: str.isdigit() also takes other scripts' digits ("1" in Arabic-Indic).
    return base in MULTI_QUANTITIES and index in _CHANNEL_SUFFIXES


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
        if not is_number(value):
            raise ProtocolError(
                "%s.values.%s: must be a finite number, got %r" % (where, name, value)
            )
        out[name] = float(value)
    return out


def decode_telemetry(payload: "bytes | str") -> "list[dict[str, Any]]":
    """The batch as [{"seq", "ts", "values"}]; one bad entry refuses the whole payload."""
    obj = load(payload, "telemetry")
    batch = field(obj, "telemetry", "batch")
    if not isinstance(batch, list) or not batch:
        raise ProtocolError("telemetry.batch: must be a non-empty list")
    out = []
    for i, entry in enumerate(batch):
        where = "telemetry.batch[%d]" % i
        if not isinstance(entry, dict):
            raise ProtocolError("%s: must be an object" % where)
        out.append(
            {
                "seq": int_field(entry, where, "seq", 0, 2**53),
                "ts": timestamp(entry, where),
                "values": _decode_values(field(entry, where, "values"), where),
            }
        )
    return out


# ---- events -------------------------------------------------------------------------------

# autonomy: what a garden node did on its own while the gateway was away, reported once back.
EVENT_KINDS = ("actuator", "fault", "boot", "autonomy", "config")


def encode_event(
    seq: int, ts: "float | tuple[int, int]", kind: str, name: str, state: str, detail: str = ""
) -> bytes:
    obj = {"seq": seq, "ts": ts, "kind": kind, "name": name, "state": state}
    if detail:
        obj["detail"] = detail
    return dump(obj)


def decode_event(payload: "bytes | str") -> "dict[str, Any]":
    obj = load(payload, "event")
    kind = choice_field(obj, "event", "kind", EVENT_KINDS)
    detail = optional_text(obj, "event", "detail")
    return {
        "seq": int_field(obj, "event", "seq", 0, 2**53),
        "ts": timestamp(obj, "event"),
        "kind": kind,
        "name": str_field(obj, "event", "name", 32),
        "state": str_field(obj, "event", "state", 32),
        "detail": detail,
    }


# ---- commands and acks --------------------------------------------------------------------


MAX_COUNTER = 2**53  # exact in a double, so every JSON parser reads it alike
SIG_HEX = 64  # hex digits of an HMAC-SHA256
_SIG_HEAD = b',"sig":"'
_SIG_TAIL = len(_SIG_HEAD) + SIG_HEX + 2  # ,"sig":"<hex>"}


def encode_command(
    cmd_id: str,
    action: str,
    params: "dict[str, Any]",
    ts: float,
    node: str = "",
    counter: int = 0,
    expires: float = 0,
) -> bytes:
    """A command without its signature: the bytes the gateway signs (see sign_command).
    node and counter are left out when empty (a node refuses such a command); expires (Unix
    s, after which the node refuses it as stale) when 0."""
    obj = {"id": cmd_id, "action": action, "params": params, "ts": ts}
    if node:
        obj["node"] = node
    if counter:
        obj["counter"] = counter
    if expires:
        obj["expires"] = expires
    return dump(obj)


def sign_command(unsigned: bytes, sig: str) -> bytes:
    """The command as sent: `sig` (hex HMAC-SHA256 of `unsigned`) added as the last member,
    so a receiver recovers the signed bytes exactly (split_signature), whatever its JSON."""
    if len(sig) != SIG_HEX or not unsigned.endswith(b"}"):
        raise ProtocolError("cmd.sig: must be %d hex digits added to a command" % SIG_HEX)
    return unsigned[:-1] + _SIG_HEAD + sig.encode() + b'"}'


def split_signature(payload: "bytes | str") -> "tuple[bytes, str]":
    """(the signed bytes, the hex signature) of a command as sign_command made it; the
    signature is "" when the payload does not end with one."""
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    tail = raw[-_SIG_TAIL:]
    if len(raw) <= _SIG_TAIL or not tail.startswith(_SIG_HEAD) or not tail.endswith(b'"}'):
        return raw, ""
    sig = tail[len(_SIG_HEAD) : -2].decode()
    if not all(ch in "0123456789abcdef" for ch in sig):
        return raw, ""
    return raw[:-_SIG_TAIL] + b"}", sig


def decode_command(payload: "bytes | str") -> "dict[str, Any]":
    """The command's fields; `node` "", `counter` 0 and `sig` "" when absent (the node's
    cmdauth refuses those with an ack, as their id is readable)."""
    obj = load(payload, "cmd")
    cmd_id = str_field(obj, "cmd", "id", 40)
    action = choice_field(obj, "cmd", "action", ACTIONS)
    node = check_name("cmd.node", obj["node"]) if "node" in obj else ""
    counter = int_field(obj, "cmd", "counter", 1, MAX_COUNTER) if "counter" in obj else 0
    sig = split_signature(payload)[1]
    if "sig" in obj and obj["sig"] != sig:
        raise ProtocolError(
            "cmd.sig: must be %d lowercase hex digits and the payload's last member"
            % SIG_HEX
        )
    params = field(obj, "cmd", "params")
    if not isinstance(params, dict):
        raise ProtocolError("cmd.params: must be an object")
    ts = timestamp(obj, "cmd")
    expires = None
    if "expires" in obj:
        expires = obj["expires"]
        if not is_number(expires) or not ts < expires < 1e10:
            raise ProtocolError(
                "cmd.expires: must be a Unix time in seconds after the command's ts (%s), "
                "got %r" % (ts, expires)
            )
        expires = float(expires)
    return {
        "id": cmd_id,
        "action": action,
        "params": _command_params(action, params),
        "ts": ts,
        "node": node,
        "counter": counter,
        "sig": sig,
        "expires": expires,
    }


def _command_params(action: str, params: "dict[str, Any]") -> "dict[str, Any]":
    checked = {}  # type: dict[str, Any]
    where = "cmd.params"
    if action == "irrigate":
        checked["seconds"] = int_field(params, where, "seconds", 1, MAX_IRRIGATE_S)
    elif action == "diffuse":
        checked["channel"] = int_field(params, where, "channel", 1, DIFFUSER_CHANNELS)
        checked["duty_pct"] = int_field(params, where, "duty_pct", 0, 100)
        checked["seconds"] = int_field(params, where, "seconds", 1, MAX_DIFFUSE_S)
    elif action == "setpoint":
        checked["channel"] = int_field(params, where, "channel", 1, DIFFUSER_CHANNELS)
        quantity = choice_field(params, where, "quantity", tuple(sorted(SETPOINT_QUANTITIES)))
        checked["quantity"] = quantity
        target = field(params, where, "target")
        low, high = SETPOINT_QUANTITIES[quantity]
        if target is not None and (not is_number(target) or not low <= target <= high):
            raise ProtocolError(
                "%s.target: must be a %s from %s to %s, or null to switch the loop off, "
                "got %r" % (where, quantity, low, high, target)
            )
        checked["target"] = None if target is None else float(target)
    elif action == "estop":
        checked["reason"] = _reason(params, where)
    # reset_estop and clear_safe_mode take no params.
    for key in params:
        if key not in checked:
            raise ProtocolError(
                "%s.%s: %s takes no such parameter (it takes: %s)"
                % (where, key, action, ", ".join(sorted(checked)) or "none")
            )
    return checked


def _reason(obj: "dict[str, Any]", where: str) -> str:
    reason = optional_text(obj, where, "reason")
    if len(reason) > MAX_REASON:
        raise ProtocolError(
            "%s.reason: must be at most %d characters, got %d" % (where, MAX_REASON, len(reason))
        )
    return reason


ACK_RESULTS = ("started", "done", "refused", "error")


def encode_ack(cmd_id: str, ok: bool, result: str, ts: float, detail: str = "") -> bytes:
    obj = {"id": cmd_id, "ok": ok, "result": result, "ts": ts}
    if detail:
        obj["detail"] = detail
    return dump(obj)


def decode_ack(payload: "bytes | str") -> "dict[str, Any]":
    obj = load(payload, "ack")
    ok = bool_field(obj, "ack", "ok")
    result = choice_field(obj, "ack", "result", ACK_RESULTS)
    detail = optional_text(obj, "ack", "detail")
    return {
        "id": str_field(obj, "ack", "id", 40),
        "ok": ok,
        "result": result,
        "ts": timestamp(obj, "ack"),
        "detail": detail,
    }


# ---- time (site-wide, gateway -> nodes, QoS 0, never retained) ------------------------------

MAX_TIME_INTERVAL_S = 86400


def encode_time(ts: float, interval_s: float) -> bytes:
    """ts: the gateway's Unix time in seconds (sent to the millisecond); interval_s: how often
    the gateway sends it."""
    return dump({"ts": round(ts, 3), "interval_s": interval_s})


def decode_time(payload: "bytes | str") -> "dict[str, Any]":
    """{"ts": Unix seconds, "ts_ms": the same in integer milliseconds, "interval_s": seconds}.

    Nodes use ts_ms: it is read from the number's digits, exact on every port, while a
    single-precision float (the ESP32 and RP2 ports) holds 1.8e9 s only to about +-64 s."""
    obj = load(payload, "time")
    ts = timestamp(obj, "time")
    interval = field(obj, "time", "interval_s")
    if not is_number(interval) or not 0 < interval <= MAX_TIME_INTERVAL_S:
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


# ---- estop (site-wide, gateway/CLI -> nodes, QoS 1, retained) -------------------------------

MAX_BY = 32


def encode_estop(latched: bool, by: str, ts: float, reason: str = "") -> bytes:
    obj = {"latched": latched, "by": by, "ts": round(ts, 3)}  # type: dict[str, Any]
    if reason:
        obj["reason"] = reason
    payload = dump(obj)
    decode_estop(payload)  # what is sent must be what every node accepts
    return payload


def decode_estop(payload: "bytes | str") -> "dict[str, Any]":
    """{"latched", "by", "ts", "reason"}. A node takes a payload this refuses as latched
    (docs/protocol.md, "estop"): the safe reading of nonsense on this topic is "stop"."""
    obj = load(payload, "estop")
    latched = bool_field(obj, "estop", "latched")
    by = str_field(obj, "estop", "by", MAX_BY)
    for ch in by:
        if ord(ch) < 32 or ord(ch) == 127:
            raise ProtocolError("estop.by: must be printable text, got %r" % by)
    return {"latched": latched, "by": by, "ts": timestamp(obj, "estop"),
            "reason": _reason(obj, "estop")}
