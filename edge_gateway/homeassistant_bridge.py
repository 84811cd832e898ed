"""The gateway's MQTT side of Home Assistant discovery, on a paho client it is given.

It publishes each node's discovery configs (retained; empty retained payloads for entities
that went away) and state documents, republishes every config when Home Assistant announces
`online` on `<prefix>/status` (HA forgets discovered entities it has not stored, e.g. after
its database was reset, and re-reads retained configs only when it subscribes), and turns
commands HA sends to `nt/<site>/<node>/ha/<entity>/set` into calls of `on_command(node,
entity, value)`: value is True/False for the pump switch, an integer duty in % for a diffuser
number. The daemon makes that a signed, audited command; a payload that is not a valid value
for that entity is refused here, with a warning naming the topic, the problem and the fix.

Commands are subscribed with QoS 0 on purpose: the daemon's MQTT session is persistent, and a
QoS 1 subscription would make the broker keep HA's commands while the gateway is down and hand
them over, stale, when it returns (a pump switched on hours late). mosquitto does not queue
QoS 0 deliveries for a disconnected client.

Callbacks run on paho's network thread: `on_command` must hand its work off, not block.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from sensornode import protocol

from edge_gateway.homeassistant import (
    DEFAULT_PREFIX,
    OFF,
    ON,
    Entity,
    NodeDescription,
    command_filter,
    config_topic,
    deletions,
    discovery_config,
    encode,
    entities,
    state_topic,
)

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, str, bool | int], None]
HA_ONLINE = b"online"
COMMAND_QOS = 0  # see the module docstring: never queued for a gateway that is away
PUBLISH_QOS = 1


class CommandRefused(ValueError):
    """A command from Home Assistant we will not pass on; the message says why and what to do."""


@dataclass(frozen=True)
class HaCommand:
    node: str
    entity: str
    value: bool | int


def parse_command(site: str, topic: str, payload: bytes, retained: bool,
                  announced: Mapping[str, Mapping[str, Entity]]) -> HaCommand:
    """Check a message on nt/<site>/<node>/ha/<entity>/set against what we announced."""
    parts = topic.split("/")
    if (len(parts) != 6 or parts[0] != protocol.TOPIC_ROOT or parts[1] != site
            or parts[3] != "ha" or parts[5] != "set"):
        raise CommandRefused(f"not a command topic of site {site!r}; HA publishes to "
                             f"{protocol.TOPIC_ROOT}/{site}/<node>/ha/<entity>/set")
    node, key = parts[2], parts[4]
    if retained:
        raise CommandRefused("the message is retained, and a stored command is stale; set "
                             "retain false on the entity (our discovery config does) and clear "
                             f"the topic: mosquitto_pub -r -n -t '{topic}'")
    entity = announced.get(node, {}).get(key)
    if entity is None or not entity.commandable:
        raise CommandRefused(f"node {node!r} has no {key!r} control announced to Home "
                             "Assistant; remove the stale entity in HA or check the node name")
    text = _text(payload)
    if entity.component == "switch":
        if text not in (ON, OFF):
            raise CommandRefused(f"payload {text!r} is not {ON} or {OFF}")
        return HaCommand(node, key, text == ON)
    return HaCommand(node, key, _duty(text, int(entity.fields["max"])))


def _text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandRefused(f"payload {payload[:40]!r} is not UTF-8 text") from None


def _duty(text: str, cap: int) -> int:
    try:
        value = float(text)
    except ValueError:
        raise CommandRefused(f"payload {text[:40]!r} is not a number; send a duty in "
                             f"0..{cap} %") from None
    if not math.isfinite(value) or value != int(value) or not 0 <= value <= cap:
        raise CommandRefused(f"payload {text[:40]!r} is not a whole duty in 0..{cap} % "
                             "(the channel's cap)")
    return int(value)


@dataclass
class _Node:
    description: NodeDescription
    entities: dict[str, Entity]
    configs: dict[str, bytes]  # config topic -> payload, as published


class HomeAssistantBridge:
    def __init__(self, client: mqtt.Client, site: str, on_command: CommandHandler,
                 prefix: str = DEFAULT_PREFIX) -> None:
        protocol.check_name("site", site)
        if not prefix or any(ch in prefix for ch in "+#\0") or "" in prefix.split("/"):
            raise ValueError(f"prefix: {prefix!r} is not an MQTT topic prefix; use levels "
                             'without "+", "#" or empty parts, e.g. "homeassistant"')
        self.client, self.site, self.prefix = client, site, prefix
        self.on_command = on_command
        self.status_topic = f"{prefix}/status"
        self.command_filter = command_filter(site)
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self.refused = 0  # commands refused since start
        self.republished = 0  # times HA's `online` made us republish

    # ---- wiring ---------------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self.status_topic, 1), (self.command_filter, COMMAND_QOS)]

    def attach(self) -> None:
        """Route HA's status and command topics to this bridge (the client's on_message keeps
        everything else); subscribes now if connected, else call on_connect() once it is."""
        self.client.message_callback_add(self.status_topic, self._on_ha_status)
        self.client.message_callback_add(self.command_filter, self._on_command_message)
        if self.client.is_connected():
            self.client.subscribe(self.subscriptions())

    def detach(self) -> None:
        self.client.message_callback_remove(self.status_topic)
        self.client.message_callback_remove(self.command_filter)
        if self.client.is_connected():
            self.client.unsubscribe([topic for topic, _ in self.subscriptions()])

    def on_connect(self) -> None:
        """Call from the client's on_connect: subscribe (again) and republish every config,
        in case the broker lost its retained messages."""
        self.client.subscribe(self.subscriptions())
        self.republish()

    # ---- publishing -------------------------------------------------------------------------

    def publish_node(self, description: NodeDescription) -> int:
        """Announce the node's entities; configs unchanged since the last call are not sent
        again, entities it no longer has are deleted. Returns how many messages were sent."""
        if description.site != self.site:
            raise ValueError(f"site: node {description.node!r} is of site "
                             f"{description.site!r}, this bridge serves {self.site!r}")
        node_entities = {e.key: e for e in entities(description)}
        configs = {config_topic(self.prefix, e.component, description.node, e.key):
                   encode(discovery_config(description, e)) for e in node_entities.values()}
        with self._lock:
            old = self._nodes.get(description.node)
            old_configs = old.configs if old else {}
            self._nodes[description.node] = _Node(description, node_entities, configs)
        messages = deletions(old_configs, configs)
        messages += [(t, p) for t, p in configs.items() if old_configs.get(t) != p]
        for topic, payload in messages:
            self._publish(topic, payload)
        return len(messages)

    def remove_node(self, node: str) -> int:
        """Delete every entity of a node that is gone for good (e.g. removed from the config)."""
        with self._lock:
            gone = self._nodes.pop(node, None)
        messages = deletions(gone.configs if gone else (), ())
        for topic, payload in messages:
            self._publish(topic, payload)
        return len(messages)

    def publish_state(self, node: str, document: bytes) -> None:
        """The node's state document (edge_gateway.homeassistant_state: LatestValues.document),
        retained so HA shows the last values at once after a restart."""
        self._publish(state_topic(self.site, node), document)

    def republish(self) -> int:
        with self._lock:
            messages = [m for n in self._nodes.values() for m in n.configs.items()]
        for topic, payload in messages:
            self._publish(topic, payload)
        return len(messages)

    def announced(self) -> dict[str, NodeDescription]:
        with self._lock:
            return {name: n.description for name, n in self._nodes.items()}

    def _publish(self, topic: str, payload: bytes) -> None:
        # QoS 1 is queued by paho while disconnected and sent once connected.
        info = self.client.publish(topic, payload, qos=PUBLISH_QOS, retain=True)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("Home Assistant: could not publish %s: %s", topic,
                        mqtt.error_string(info.rc))

    # ---- incoming ---------------------------------------------------------------------------

    def _on_ha_status(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if bytes(msg.payload).strip() != HA_ONLINE:
            return
        count = self.republish()
        self.republished += 1
        log.info("Home Assistant is online: republished %d discovery configs", count)

    def _on_command_message(self, client: mqtt.Client, userdata: Any,
                            msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            announced = {name: n.entities for name, n in self._nodes.items()}
        try:
            command = parse_command(self.site, msg.topic, bytes(msg.payload), bool(msg.retain),
                                    announced)
        except CommandRefused as exc:
            self.refused += 1
            log.warning("Home Assistant command on %s refused: %s", msg.topic, exc)
            return
        try:
            self.on_command(command.node, command.entity, command.value)
        except Exception:  # a handler bug must cost one command, not paho's network thread
            log.exception("Home Assistant command on %s: the handler failed", msg.topic)
