"""MQTT delivery → the message the store keeps: protocol decoding for the ingest path.

Pure and never raising: whatever the protocol refuses (or a decoder bug trips on) becomes a
DeadLetter with the reason, so one bad payload costs one dead letter and nothing else. It runs
in the ingest writer's thread for every delivery, sharing the GIL with paho's network thread,
hence the topic cache and the fast telemetry path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from sensornode import protocol
from sensornode.wirefields import PROTOCOL_VERSION

from edge_gateway.store import Ack, DeadLetter, Event, Message, Reading, Status, Telemetry

log = logging.getLogger(__name__)

# Topics seen so far and what they parse to; cleared when a flood of distinct topics (a fuzzer,
# a misconfigured fleet) would make it grow without end.
MAX_CACHED_TOPICS = 4096


def decode_message(site: str, topic: str, payload: bytes, received_at: float) -> Message:
    """Turn one MQTT delivery into something to store; anything refused becomes a DeadLetter."""
    return Decoder(site).decode(topic, payload, received_at)


class Decoder:
    """decode_message for one site, remembering how each topic parses."""

    def __init__(self, site: str) -> None:
        self.site = site
        # topic -> (node, kind), or the reason the topic is refused
        self._topics: dict[str, tuple[str, str] | str] = {}

    def decode(self, topic: str, payload: bytes, received_at: float) -> Message:
        try:
            parsed = self._topics.get(topic)
            if parsed is None:
                parsed = self._parse_topic(topic)
            if isinstance(parsed, str):
                return DeadLetter(topic, payload, parsed, received_at)
            node, kind = parsed
            return _DECODERS[kind](self.site, node, payload, received_at)
        except protocol.ProtocolError as exc:
            return DeadLetter(topic, payload, str(exc), received_at)
        except Exception as exc:  # a decoder bug must cost one message, not the daemon
            log.exception("decoder failed on %s", topic)
            return DeadLetter(topic, payload, f"undecodable: {type(exc).__name__}: {exc}",
                              received_at)

    def _parse_topic(self, topic: str) -> tuple[str, str] | str:
        parsed: tuple[str, str] | str
        try:
            topic_site, node, kind = protocol.parse_topic(topic)
            if topic_site != self.site:
                raise protocol.ProtocolError(
                    f"topic: site {topic_site!r} is not this gateway's {self.site!r}")
            if kind not in _DECODERS:
                raise protocol.ProtocolError(
                    f"topic: the gateway does not ingest {kind!r} messages")
            parsed = (node, kind)
        except protocol.ProtocolError as exc:
            parsed = str(exc)
        if len(self._topics) >= MAX_CACHED_TOPICS:
            self._topics.clear()
        self._topics[topic] = parsed
        return parsed


def _telemetry(site: str, node: str, payload: bytes, received_at: float) -> Telemetry:
    readings = _fast_telemetry(node, payload, received_at)
    if readings is None:
        readings = [
            Reading(node, entry["seq"], entry["ts"], quantity, value, received_at)
            for entry in protocol.decode_telemetry(payload)
            for quantity, value in entry["values"].items()
        ]
    return Telemetry(site, node, tuple(readings), received_at)


# Every quantity name the protocol accepts (sensornode.protocol.known_quantity), ASCII only.
_QUANTITIES = frozenset(protocol.QUANTITIES) | {
    f"{name}_{n}" for name in protocol.MULTI_QUANTITIES for n in range(1, protocol.MAX_CHANNELS + 1)
}
_Seq = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
_Timestamp = Annotated[float, msgspec.Meta(ge=1e9, lt=1e10)]  # sensornode.wirefields.timestamp
_Value = Annotated[float, msgspec.Meta(ge=-1e300, le=1e300)]  # sensornode.wirefields.is_number


class _Entry(msgspec.Struct):
    seq: _Seq
    ts: _Timestamp
    values: dict[str, _Value]


class _TelemetryPayload(msgspec.Struct):
    v: Literal[1]  # PROTOCOL_VERSION; msgspec refuses true and 1.0
    batch: list[_Entry]


_TELEMETRY_SHAPE = msgspec.json.Decoder(_TelemetryPayload)
assert PROTOCOL_VERSION == 1, "update _TelemetryPayload.v"


def _fast_telemetry(node: str, payload: bytes, received_at: float) -> list[Reading] | None:
    """The readings of a payload of the usual shape, as protocol.decode_telemetry reads them;
    None for anything else (refused or merely unusual), which the protocol then decodes.

    Telemetry is nearly all of the traffic: msgspec checks the shape and the bounds in C, in a
    fifth of the time json.loads and type checks in Python take. Every check is the protocol's
    or stricter, so this can only accept what the protocol accepts (tests/test_ingest_fuzz.py
    compares the two)."""
    # msgspec does not look inside fields it skips; the protocol refuses any non-UTF-8 payload.
    if not payload.isascii():
        try:
            payload.decode()
        except UnicodeDecodeError:
            return None
    try:
        batch = _TELEMETRY_SHAPE.decode(payload).batch
    except msgspec.DecodeError:  # ValidationError included
        return None
    if not batch:
        return None
    readings = []
    for entry in batch:
        values = entry.values
        if not values or not _QUANTITIES.issuperset(values):
            return None
        seq, ts = entry.seq, entry.ts
        readings += [Reading(node, seq, ts, quantity, value, received_at)
                     for quantity, value in values.items()]
    return readings


def _status(site: str, node: str, payload: bytes, received_at: float) -> Status:
    status = _checked_text(protocol.decode_status(payload), "status", ("fw", "board"))
    if not status["online"]:
        return Status(site, node, online=False, received_at=received_at)
    return Status(
        site, node, online=True, received_at=received_at, role=status["role"],
        fw=status["fw"], board=status["board"], uptime_s=status["uptime_s"],
        seq_next=status["seq_next"],
        seq_last=status["seq_last"],
        config_version=status["config"],
    )


def _event(site: str, node: str, payload: bytes, received_at: float) -> Event:
    event = _checked_text(protocol.decode_event(payload), "event", ("name", "state", "detail"))
    return Event(
        site, node, event["seq"], event["ts"], event["kind"], event["name"],
        event["state"], event["detail"], received_at,
    )


def _ack(site: str, node: str, payload: bytes, received_at: float) -> Ack:
    ack = _checked_text(protocol.decode_ack(payload), "ack", ("id", "detail"))
    return Ack(
        site, node, ack["id"], ack["ok"], ack["result"], ack["detail"], ack["ts"], received_at
    )


def _checked_text(decoded: dict[str, Any], where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """Refuse text SQLite cannot store: JSON may escape lone surrogates ("\\ud800"), which
    Python decodes into a str that has no UTF-8 form."""
    for key in keys:
        text = decoded.get(key, "")
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                raise protocol.ProtocolError(
                    f"{where}.{key}: not valid Unicode text (a lone surrogate escape?),"
                    f" got {text!r}") from None
    return decoded


_DECODERS: dict[str, Callable[[str, str, bytes, float], Message]] = {
    protocol.TELEMETRY: _telemetry,
    protocol.STATUS: _status,
    protocol.EVENT: _event,
    protocol.ACK: _ack,
}
