"""The per-node state document Home Assistant's entities read: nt/<site>/<node>/state.

Our telemetry comes in batches of several quantities, but an HA entity reads one state topic.
After each committed batch the gateway publishes, retained, per node
{"v": 1, <quantity>: <newest value>, ..., "ts": <newest reading's ts>}; every entity's
value_template (edge_gateway.homeassistant) picks its own field. `LatestValues` keeps those
values from committed telemetry and actuator events.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Any

from sensornode import protocol

from edge_gateway.homeassistant import DIFFUSER, PUMP, channel_number, encode
from edge_gateway.messages import Event, Message, Reading, Telemetry


def state_document(readings: Iterable[Reading]) -> bytes:
    """{"v": 1, <quantity>: <newest value>, ..., "ts": <newest ts>} from a node's readings."""
    latest: dict[str, Reading] = {}
    for reading in readings:
        held = latest.get(reading.quantity)
        if held is None or reading.ts >= held.ts:
            latest[reading.quantity] = reading
    if not latest:
        raise ValueError("readings: none given; a state document needs at least one reading")
    doc: dict[str, Any] = {"v": protocol.PROTOCOL_VERSION}
    for quantity in sorted(latest):
        value = latest[quantity].value
        doc[quantity] = int(value) if math.isfinite(value) and value == int(value) else value
    doc["ts"] = max(r.ts for r in latest.values())
    return encode(doc)


class LatestValues:
    """The newest value of every quantity of every node, from committed telemetry and actuator
    events, for the state documents. An older reading (an outbox replayed after an outage) never
    replaces a newer one. Thread-safe: the writer thread applies, the publisher reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, dict[str, Reading]] = {}

    def apply(self, messages: Iterable[Message]) -> set[str]:
        """Take what a committed batch stored; returns the nodes whose state changed."""
        changed: set[str] = set()
        with self._lock:
            for message in messages:
                if isinstance(message, Telemetry):
                    readings: Iterable[Reading] = message.readings
                elif isinstance(message, Event):
                    readings = _event_readings(message)
                else:
                    continue
                for reading in readings:
                    if self._keep(reading):
                        changed.add(reading.node)
        return changed

    def _keep(self, reading: Reading) -> bool:
        node = self._nodes.setdefault(reading.node, {})
        held = node.get(reading.quantity)
        if held is not None and (held.ts > reading.ts or held == reading):
            return False
        node[reading.quantity] = reading
        return True

    def quantities(self, node: str) -> frozenset[str]:
        with self._lock:
            return frozenset(self._nodes.get(node, ()))

    def document(self, node: str) -> bytes | None:
        """The node's state document, or None before it has reported anything."""
        with self._lock:
            readings = list(self._nodes.get(node, {}).values())
        return state_document(readings) if readings else None


def _event_readings(event: Event) -> list[Reading]:
    """The state an actuator event tells: the pump on or off, a diffuser channel off (an "on"
    says nothing of the duty it ramps to; the next telemetry does)."""
    if event.kind != "actuator" or event.state not in ("on", "off"):
        return []
    value = 1.0 if event.state == "on" else 0.0
    if event.name == PUMP:
        quantity = PUMP
    elif (channel := channel_number(event.name, DIFFUSER)) and event.state == "off":
        quantity = f"diffuser_duty_{channel}"
    else:
        return []
    return [Reading(event.node, event.seq, event.ts, quantity, value, event.received_at)]
