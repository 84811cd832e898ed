"""MQTT delivery → the message the store keeps: protocol decoding for the ingest path.

Pure and never raising: whatever the protocol refuses (or a decoder bug trips on) becomes a
DeadLetter with the reason, so one bad payload costs one dead letter and nothing else. It runs
in paho's network thread for every delivery, hence the topic cache.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

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
_MAX_SEQ = 2**53
_LIMIT = 1e300  # sensornode.wirefields.is_number


def _fast_telemetry(node: str, payload: bytes, received_at: float) -> list[Reading] | None:
    """The readings of a payload of the usual shape, as protocol.decode_telemetry reads them;
    None for anything else (refused or merely unusual), which the protocol then decodes.

    Telemetry is nearly all of the traffic and decoding runs in paho's thread, where it adds
    to paho's own time per message; checking types directly here takes half as long. Every
    check is the protocol's or stricter, so this can only accept what the protocol accepts
    (tests/test_ingest_fuzz.py compares the two)."""
    try:
        obj = json.loads(payload.decode())
    except (ValueError, RecursionError):
        return None
    if type(obj) is not dict or type(obj.get("v")) is not int or obj["v"] != PROTOCOL_VERSION:
        return None
    batch = obj.get("batch")
    if type(batch) is not list or not batch:
        return None
    readings = []
    for entry in batch:
        if type(entry) is not dict:
            return None
        seq, ts, values = entry.get("seq"), entry.get("ts"), entry.get("values")
        if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
            return None
        if (type(ts) is not float and type(ts) is not int) or not 1e9 <= ts < 1e10:
            return None
        ts = float(ts)
        if type(values) is not dict or not values:
            return None
        for quantity, value in values.items():
            if quantity not in _QUANTITIES:
                return None
            if (type(value) is not float and type(value) is not int) or not (
                    -_LIMIT <= value <= _LIMIT):
                return None
            readings.append(Reading(node, seq, ts, quantity, float(value), received_at))
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
