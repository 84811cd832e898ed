"""Home Assistant MQTT discovery for Neoterra nodes: what to publish, built without any I/O.

For each node the gateway announces one Home Assistant device and an entity per thing it can
show or do: a sensor per reported quantity (with HA's device class, state class and unit), the
garden pump as a switch, each drone diffuser channel as a number (0 to the channel's duty cap),
tank switches as "tank low" problem sensors. Discovery configs go to
`<prefix>/<component>/<node>_<entity>/config`, retained; an empty retained payload there deletes
an entity that went away.

Our telemetry is batched JSON, but an HA entity wants one state topic. The gateway therefore
publishes, after each committed batch, a retained per-node state document
`nt/<site>/<node>/state` = {"v": 1, <quantity>: <latest value>, ..., "ts": <newest ts>}, built
by edge_gateway.homeassistant_state; every entity's value_template picks its quantity from it
and renders "None" (HA's "unknown") while the node has not reported it yet.
Availability follows the node's own retained status topic (birth / last will), so an entity
goes unavailable when its node does, whether or not the gateway is up.

The MQTT side (subscribing to HA's birth message and to commands) is
edge_gateway.homeassistant_bridge.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sensornode import protocol

DEFAULT_PREFIX = "homeassistant"
MANUFACTURER = "Neoterra"
ORIGIN = {"name": "Neoterra gateway"}
STATE = "state"  # nt/<site>/<node>/state: the per-node state document
PUMP = "pump"
DIFFUSER = "diffuser"  # entity diffuser_<n>, quantity diffuser_duty_<n>
ON, OFF = "ON", "OFF"  # HA's default switch payloads, used as is


@dataclass(frozen=True)
class SensorSpec:
    """How one of our quantities looks in Home Assistant."""

    name: str
    device_class: str | None = None
    unit: str | None = None
    precision: int | None = None  # suggested_display_precision
    diagnostic: bool = False  # raw signals: shown under the device's diagnostics
    icon: str | None = None


# Every quantity in sensornode.protocol.QUANTITIES (a test keeps the two in step). HA has no
# device class for a VOC index (its VOC classes want µg/m³ or ppm), for a resistance, or for the
# MQ-135's CO₂-equivalent estimate (carbon_dioxide would claim a calibrated CO₂ reading).
SENSORS: Mapping[str, SensorSpec] = {
    "soil_moisture": SensorSpec("Soil moisture", "moisture", "%", 0),
    "soil_raw": SensorSpec("Soil probe raw", precision=0, diagnostic=True),
    PUMP: SensorSpec("Pump"),  # a switch on garden nodes, see entities()
    "soil_temperature": SensorSpec("Soil temperature", "temperature", "°C", 1),
    "air_temperature": SensorSpec("Air temperature", "temperature", "°C", 1),
    "air_humidity": SensorSpec("Air humidity", "humidity", "%", 0),
    "pressure": SensorSpec("Pressure", "atmospheric_pressure", "hPa", 1),
    "gas_resistance": SensorSpec("Gas resistance", None, "Ω", 0, icon="mdi:air-filter"),
    "voc_index": SensorSpec("VOC index", precision=0, icon="mdi:scent"),
    "voc_raw": SensorSpec("VOC raw signal", precision=0, diagnostic=True),
    "mq135_ppm": SensorSpec("Air quality (MQ-135, CO₂-equivalent)", None, "ppm", 0,
                            icon="mdi:molecule-co2"),
    "mq135_ratio": SensorSpec("MQ-135 Rs/R0", precision=2, diagnostic=True),
    "tank_ok": SensorSpec("Tank low"),  # a problem binary_sensor, see entities()
    "diffuser_duty": SensorSpec("Diffuser duty", None, "%", 0, icon="mdi:scent"),
}


@dataclass(frozen=True)
class NodeDescription:
    """What the gateway knows of a node: its status birth, the quantities it has reported, and
    (drones) its diffuser channels and their duty cap (the node's diffusers.max_duty_pct)."""

    site: str
    node: str
    role: str
    board: str = ""
    fw: str = ""
    quantities: frozenset[str] = frozenset()
    diffuser_channels: tuple[int, ...] | None = None  # None: from reported diffuser_duty_<n>
    diffuser_max_duty_pct: int = 100

    def __post_init__(self) -> None:
        protocol.check_name("site", self.site)
        protocol.check_name("node", self.node)
        if self.role not in protocol.ROLES:
            raise ValueError(f"role: {self.role!r} is not one of {', '.join(protocol.ROLES)}")
        unknown = sorted(q for q in self.quantities if not protocol.known_quantity(q))
        if unknown:
            raise ValueError(f"quantities: {', '.join(unknown)} not in sensornode.protocol."
                             "QUANTITIES; pass the quantity names the node reports")
        bad = [c for c in self.diffuser_channels or () if not 1 <= c <= protocol.DIFFUSER_CHANNELS]
        if bad:
            raise ValueError(f"diffuser_channels: {bad} outside 1..{protocol.DIFFUSER_CHANNELS}")
        if not 0 <= self.diffuser_max_duty_pct <= 100:
            raise ValueError(f"diffuser_max_duty_pct: {self.diffuser_max_duty_pct} is not a "
                             "duty in 0..100 %; pass the node's diffusers.max_duty_pct")

    def channels(self) -> tuple[int, ...]:
        if self.role != "drone":
            return ()
        if self.diffuser_channels is not None:
            return tuple(sorted(set(self.diffuser_channels)))
        found = (channel_number(q, "diffuser_duty") for q in self.quantities)
        return tuple(sorted(c for c in found if c is not None))


@dataclass(frozen=True)
class Entity:
    """One HA entity of a node. `key` names it in topics and unique ids; `quantity` is the
    state document field it shows; `fields` are its component-specific discovery fields."""

    component: str  # sensor, binary_sensor, switch, number
    key: str
    name: str
    quantity: str
    value_template: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def commandable(self) -> bool:
        return self.component in ("switch", "number")


def entities(description: NodeDescription) -> list[Entity]:
    """Every entity of the node, actuators first, then one per reported quantity."""
    out: list[Entity] = []
    covered: set[str] = set()
    if description.role == "garden":
        out.append(Entity("switch", PUMP, "Pump", PUMP, _switch_template(PUMP), {
            "payload_on": ON, "payload_off": OFF, "icon": "mdi:water-pump"}))
        covered.add(PUMP)
    for channel in description.channels():
        quantity = f"diffuser_duty_{channel}"
        out.append(Entity("number", f"{DIFFUSER}_{channel}", f"Diffuser {channel}", quantity,
                          _value_template(quantity), {
                              "min": 0, "max": description.diffuser_max_duty_pct, "step": 1,
                              "mode": "slider", "unit_of_measurement": "%",
                              "icon": "mdi:scent"}))
        covered.add(quantity)
    for quantity in sorted(description.quantities - covered, key=_quantity_order):
        out.append(_sensor_entity(quantity))
    return out


def _sensor_entity(quantity: str) -> Entity:
    base, channel = _base(quantity)
    spec = SENSORS[base]
    name = f"{spec.name} {channel}" if channel else spec.name
    if base == "tank_ok":  # on = a problem: the tank is below its float switch
        key = quantity.replace("tank_ok", "tank_low", 1)
        return Entity("binary_sensor", key, name, quantity,
                      _switch_template(quantity, invert=True), {"device_class": "problem"})
    if base == PUMP:  # a pump on a node that is not a garden: shown, not switched
        return Entity("binary_sensor", quantity, name, quantity, _switch_template(quantity),
                      {"device_class": "running"})
    fields: dict[str, Any] = {"state_class": "measurement"}
    for key, value in (("device_class", spec.device_class), ("unit_of_measurement", spec.unit),
                       ("suggested_display_precision", spec.precision), ("icon", spec.icon)):
        if value is not None:
            fields[key] = value
    if spec.diagnostic:
        fields["entity_category"] = "diagnostic"
    return Entity("sensor", quantity, name, quantity, _value_template(quantity), fields)


# ---- topics and discovery messages -----------------------------------------------------------


def state_topic(site: str, node: str) -> str:
    protocol.check_name("site", site)
    protocol.check_name("node", node)
    return f"{protocol.TOPIC_ROOT}/{site}/{node}/{STATE}"


def command_topic(site: str, node: str, key: str) -> str:
    """Where HA publishes a switch's ON/OFF or a number's value: nt/<site>/<node>/ha/<key>/set."""
    protocol.check_name("site", site)
    protocol.check_name("node", node)
    return f"{protocol.TOPIC_ROOT}/{site}/{node}/ha/{key}/set"


def command_filter(site: str) -> str:
    protocol.check_name("site", site)
    return f"{protocol.TOPIC_ROOT}/{site}/+/ha/+/set"


def config_topic(prefix: str, component: str, node: str, key: str) -> str:
    return f"{prefix}/{component}/{node}_{key}/config"


def unique_id(site: str, node: str, key: str) -> str:
    return f"neoterra_{site}_{node}_{key}"


def discovery_config(description: NodeDescription, entity: Entity) -> dict[str, Any]:
    site, node = description.site, description.node
    config: dict[str, Any] = {
        "unique_id": unique_id(site, node, entity.key),
        "name": entity.name,
        "state_topic": state_topic(site, node),
        "value_template": entity.value_template,
        "availability": [{
            "topic": protocol.node_topic(site, node, protocol.STATUS),
            "value_template": "{{ 'online' if value_json.online else 'offline' }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        }],
        "device": device(description),
        "origin": dict(ORIGIN),
        "qos": 1,
        **entity.fields,
    }
    if entity.commandable:
        # Commands are never retained: a stored one would be obeyed again long after.
        config["command_topic"] = command_topic(site, node, entity.key)
        config["retain"] = False
    return config


def device(description: NodeDescription) -> dict[str, Any]:
    out: dict[str, Any] = {
        "identifiers": [f"neoterra_{description.site}_{description.node}"],
        "name": description.node,
        "manufacturer": MANUFACTURER,
        "model": description.board or f"{description.role} node",
    }
    if description.fw:
        out["sw_version"] = description.fw
    return out


def discovery_messages(description: NodeDescription,
                       prefix: str = DEFAULT_PREFIX) -> list[tuple[str, bytes]]:
    """(config topic, retained payload) for every entity of the node."""
    return [(config_topic(prefix, e.component, description.node, e.key),
             encode(discovery_config(description, e))) for e in entities(description)]


def deletions(old_topics: Iterable[str], new_topics: Iterable[str]) -> list[tuple[str, bytes]]:
    """Empty retained payloads for the config topics that are no longer announced: HA then
    removes those entities (and the broker forgets the retained config)."""
    keep = set(new_topics)
    return [(topic, b"") for topic in sorted(set(old_topics) - keep)]


def encode(obj: Mapping[str, Any]) -> bytes:
    # Sorted keys: the same config is the same bytes, so unchanged configs need no republish.
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


# ---- helpers ---------------------------------------------------------------------------------


def _value_template(quantity: str) -> str:
    return f"{{{{ value_json['{quantity}'] if '{quantity}' in value_json else None }}}}"


def _switch_template(quantity: str, invert: bool = False) -> str:
    on, off = (OFF, ON) if invert else (ON, OFF)
    return (f"{{% if '{quantity}' in value_json %}}"
            f"{{{{ '{on}' if value_json['{quantity}'] else '{off}' }}}}"
            "{% else %}None{% endif %}")


def _base(quantity: str) -> tuple[str, int | None]:
    if quantity in SENSORS:
        return quantity, None
    base, _, index = quantity.rpartition("_")
    return base, int(index)


def channel_number(name: str, base: str) -> int | None:
    """n of "<base>_<n>", else None."""
    head, _, index = name.rpartition("_")
    if head == base and index.isdigit() and index[0] != "0":
        return int(index)
    return None


def _quantity_order(quantity: str) -> tuple[int, int]:
    base, channel = _base(quantity)
    return list(SENSORS).index(base), channel or 0
