"""Home Assistant discovery builders: entities, configs, state documents, command checks (no I/O;
the MQTT side is tested against mosquitto in test_homeassistant_bridge.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sensornode import protocol

from edge_gateway.homeassistant import (
    SENSORS,
    NodeDescription,
    deletions,
    discovery_config,
    discovery_messages,
    entities,
)
from edge_gateway.homeassistant_bridge import CommandRefused, HaCommand, parse_command
from edge_gateway.homeassistant_state import LatestValues, state_document
from edge_gateway.messages import Ack, Event, Reading, Status, Telemetry

T0 = 1_790_000_000.0
GARDEN = NodeDescription(
    "home", "bed-1", "garden", board="esp32_devkitc", fw="0.3.1",
    quantities=frozenset({"soil_moisture", "soil_raw", "pump", "air_temperature",
                          "air_humidity", "soil_temperature_1", "soil_temperature_2",
                          "tank_ok_1"}))
DRONE = NodeDescription(
    "home", "drone-1", "drone", board="esp32_s3_devkitc", fw="0.3.1",
    quantities=frozenset({"voc_index", "voc_raw", "gas_resistance", "pressure", "mq135_ppm",
                          "mq135_ratio", "diffuser_duty_1", "diffuser_duty_2"}),
    diffuser_max_duty_pct=60)


def configs(description: NodeDescription) -> dict[str, dict[str, Any]]:
    return {topic: json.loads(payload) for topic, payload in discovery_messages(description)}


def test_every_protocol_quantity_has_a_home_assistant_mapping() -> None:
    assert set(SENSORS) == set(protocol.QUANTITIES)


def test_garden_node_topics_and_components() -> None:
    assert sorted(configs(GARDEN)) == sorted([
        "homeassistant/switch/bed-1_pump/config",
        "homeassistant/sensor/bed-1_soil_moisture/config",
        "homeassistant/sensor/bed-1_soil_raw/config",
        "homeassistant/sensor/bed-1_air_temperature/config",
        "homeassistant/sensor/bed-1_air_humidity/config",
        "homeassistant/sensor/bed-1_soil_temperature_1/config",
        "homeassistant/sensor/bed-1_soil_temperature_2/config",
        "homeassistant/binary_sensor/bed-1_tank_low_1/config",
    ])


# quantity: (device_class, unit_of_measurement, entity_category); state_class is measurement
SENSOR_FIELDS = {
    "soil_moisture": ("moisture", "%", None),
    "soil_raw": (None, None, "diagnostic"),
    "air_temperature": ("temperature", "°C", None),
    "soil_temperature_2": ("temperature", "°C", None),
    "air_humidity": ("humidity", "%", None),
    "pressure": ("atmospheric_pressure", "hPa", None),
    "gas_resistance": (None, "Ω", None),
    "voc_index": (None, None, None),
    "voc_raw": (None, None, "diagnostic"),
    "mq135_ppm": (None, "ppm", None),
    "mq135_ratio": (None, None, "diagnostic"),
}


@pytest.mark.parametrize("quantity", sorted(SENSOR_FIELDS))
def test_sensor_classes_and_units(quantity: str) -> None:
    node = GARDEN if quantity in GARDEN.quantities else DRONE
    config = configs(node)[f"homeassistant/sensor/{node.node}_{quantity}/config"]
    device_class, unit, category = SENSOR_FIELDS[quantity]
    assert config.get("device_class") == device_class
    assert config.get("unit_of_measurement") == unit
    assert config.get("entity_category") == category
    assert config["state_class"] == "measurement"
    assert config["state_topic"] == f"nt/home/{node.node}/state"
    assert config["value_template"] == (
        f"{{{{ value_json['{quantity}'] if '{quantity}' in value_json else None }}}}")
    assert config["unique_id"] == f"neoterra_home_{node.node}_{quantity}"
    assert "command_topic" not in config


def test_config_carries_device_and_availability_from_the_status_topic() -> None:
    config = configs(GARDEN)["homeassistant/sensor/bed-1_soil_moisture/config"]
    assert config["device"] == {
        "identifiers": ["neoterra_home_bed-1"], "name": "bed-1", "model": "esp32_devkitc",
        "sw_version": "0.3.1", "manufacturer": "Neoterra"}
    assert config["availability"] == [{
        "topic": "nt/home/bed-1/status",
        "value_template": "{{ 'online' if value_json.online else 'offline' }}",
        "payload_available": "online", "payload_not_available": "offline"}]
    assert config["name"] == "Soil moisture"


def test_pump_is_a_switch_with_a_never_retained_command_topic() -> None:
    config = configs(GARDEN)["homeassistant/switch/bed-1_pump/config"]
    assert config["command_topic"] == "nt/home/bed-1/ha/pump/set"
    assert config["retain"] is False
    assert (config["payload_on"], config["payload_off"]) == ("ON", "OFF")
    assert "'pump' in value_json" in config["value_template"]
    # the pump quantity is the switch's state, not a second entity
    assert not any("sensor/bed-1_pump" in topic for topic in configs(GARDEN))


def test_tank_switch_is_a_problem_sensor_on_when_the_tank_is_low() -> None:
    config = configs(GARDEN)["homeassistant/binary_sensor/bed-1_tank_low_1/config"]
    assert config["device_class"] == "problem"
    assert config["name"] == "Tank low 1"
    assert "{{ 'OFF' if value_json['tank_ok_1'] else 'ON' }}" in config["value_template"]


def test_drone_diffusers_are_numbers_capped_at_the_node_duty_cap() -> None:
    all_configs = configs(DRONE)
    for channel in (1, 2):
        config = all_configs[f"homeassistant/number/drone-1_diffuser_{channel}/config"]
        assert (config["min"], config["max"], config["step"]) == (0, 60, 1)
        assert config["unit_of_measurement"] == "%"
        assert config["command_topic"] == f"nt/home/drone-1/ha/diffuser_{channel}/set"
        assert f"value_json['diffuser_duty_{channel}']" in config["value_template"]
    assert not any("diffuser_duty" in topic for topic in all_configs)
    assert not any("/switch/" in topic for topic in all_configs)


def test_drone_channels_can_be_given_before_they_report() -> None:
    quiet = NodeDescription("home", "drone-2", "drone", diffuser_channels=(3, 1))
    assert [e.key for e in entities(quiet)] == ["diffuser_1", "diffuser_3"]
    assert configs(quiet)["homeassistant/number/drone-2_diffuser_1/config"]["device"][
        "model"] == "drone node"  # no board known yet


def test_unicode_units_are_utf8_json() -> None:
    payload = dict(discovery_messages(GARDEN))["homeassistant/sensor/bed-1_air_temperature/config"]
    assert "°C".encode() in payload


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"role": "boat"}, "role: 'boat' is not one of garden, drone"),
    ({"quantities": frozenset({"soil_moist"})}, "quantities: soil_moist not in"),
    ({"node": "Bed 1"}, "node: 'Bed 1' is not a valid name"),
    ({"diffuser_channels": (0, 5)}, "diffuser_channels: [0, 5] outside 1..4"),
    ({"diffuser_max_duty_pct": 120}, "diffuser_max_duty_pct: 120 is not a duty"),
])
def test_bad_descriptions_name_the_field(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"site": "home", "node": "bed-1", "role": "garden", **kwargs}
    with pytest.raises(ValueError) as err:
        NodeDescription(**fields)
    assert message in str(err.value)


def test_deletions_empty_the_topics_no_longer_announced() -> None:
    assert deletions(["a/config", "b/config", "c/config"], ["b/config"]) == [
        ("a/config", b""), ("c/config", b"")]
    assert deletions(["a/config"], ["a/config"]) == []


def test_a_config_is_the_same_bytes_every_time() -> None:
    assert discovery_messages(GARDEN) == discovery_messages(GARDEN)
    pump = entities(GARDEN)[0]
    assert discovery_config(GARDEN, pump)["unique_id"] == "neoterra_home_bed-1_pump"


# ---- state documents -------------------------------------------------------------------------


def reading(quantity: str, value: float, ts: float, node: str = "bed-1", seq: int = 1) -> Reading:
    return Reading(node, seq, ts, quantity, value, ts + 0.5)


def test_state_document_holds_the_newest_value_of_each_quantity() -> None:
    doc = json.loads(state_document([
        reading("soil_moisture", 41.5, T0 + 2), reading("soil_moisture", 39.0, T0 + 1),
        reading("pump", 1.0, T0 + 1), reading("soil_raw", 38211.0, T0 + 2)]))
    assert doc == {"v": 1, "soil_moisture": 41.5, "pump": 1, "soil_raw": 38211, "ts": T0 + 2}
    assert isinstance(doc["pump"], int)


def test_state_document_needs_a_reading() -> None:
    with pytest.raises(ValueError, match="readings: none given"):
        state_document([])


def event(name: str, state: str, ts: float, kind: str = "actuator") -> Event:
    return Event("home", "bed-1", 9, ts, kind, name, state, "cmd 3f9c", ts)


def test_latest_values_from_telemetry_and_actuator_events() -> None:
    latest = LatestValues()
    telemetry = Telemetry("home", "bed-1", (reading("pump", 0.0, T0),
                                            reading("soil_moisture", 30.0, T0)), T0)
    assert latest.apply([telemetry]) == {"bed-1"}
    assert latest.apply([event("pump", "on", T0 + 5)]) == {"bed-1"}
    doc = latest.document("bed-1")
    assert doc is not None and json.loads(doc) == {
        "v": 1, "pump": 1, "soil_moisture": 30, "ts": T0 + 5}
    assert latest.quantities("bed-1") == {"pump", "soil_moisture"}
    assert latest.document("bed-9") is None


def test_an_older_reading_replayed_later_does_not_replace_a_newer_one() -> None:
    latest = LatestValues()
    latest.apply([event("pump", "off", T0 + 10)])
    old = Telemetry("home", "bed-1", (reading("pump", 1.0, T0),), T0 + 20)
    assert latest.apply([old]) == set()
    assert latest.apply([old]) == set()
    doc = latest.document("bed-1")
    assert doc is not None and json.loads(doc)["pump"] == 0


def test_events_that_say_nothing_of_a_state_are_ignored() -> None:
    latest = LatestValues()
    ignored = [event("cmd", "refused", T0, kind="fault"), event("diffuser_1", "on", T0),
               event("valve", "on", T0), Status("home", "bed-1", True, T0),
               Ack("home", "bed-1", "3f9c", True, "started", "", T0, T0)]
    assert latest.apply(ignored) == set()
    assert latest.apply([event("diffuser_2", "off", T0)]) == {"bed-1"}
    doc = latest.document("bed-1")
    assert doc is not None and json.loads(doc) == {"v": 1, "diffuser_duty_2": 0, "ts": T0}


# ---- commands from Home Assistant ------------------------------------------------------------

ANNOUNCED = {d.node: {e.key: e for e in entities(d)} for d in (GARDEN, DRONE)}


def command(topic: str, payload: bytes, retained: bool = False) -> HaCommand:
    return parse_command("home", topic, payload, retained, ANNOUNCED)


def test_valid_commands() -> None:
    assert command("nt/home/bed-1/ha/pump/set", b"ON") == HaCommand("bed-1", "pump", True)
    assert command("nt/home/bed-1/ha/pump/set", b"OFF") == HaCommand("bed-1", "pump", False)
    assert command("nt/home/drone-1/ha/diffuser_2/set", b"45") == HaCommand(
        "drone-1", "diffuser_2", 45)
    assert command("nt/home/drone-1/ha/diffuser_1/set", b"60.0").value == 60
    assert command("nt/home/drone-1/ha/diffuser_1/set", b"0").value == 0


@pytest.mark.parametrize(("topic", "payload", "retained", "reason"), [
    ("nt/home/bed-1/ha/pump/set", b"on", False, "payload 'on' is not ON or OFF"),
    ("nt/home/bed-1/ha/pump/set", b"\xff\xfe", False, "is not UTF-8 text"),
    ("nt/home/bed-1/ha/pump/set", b"ON", True, "the message is retained"),
    ("nt/home/drone-1/ha/diffuser_1/set", b"61", False, "not a whole duty in 0..60 %"),
    ("nt/home/drone-1/ha/diffuser_1/set", b"-1", False, "not a whole duty in 0..60 %"),
    ("nt/home/drone-1/ha/diffuser_1/set", b"12.5", False, "not a whole duty in 0..60 %"),
    ("nt/home/drone-1/ha/diffuser_1/set", b"nan", False, "not a whole duty in 0..60 %"),
    ("nt/home/drone-1/ha/diffuser_1/set", b"lots", False, "'lots' is not a number"),
    ("nt/home/drone-1/ha/diffuser_3/set", b"10", False, "no 'diffuser_3' control announced"),
    ("nt/home/bed-1/ha/soil_moisture/set", b"10", False, "no 'soil_moisture' control"),
    ("nt/home/bed-9/ha/pump/set", b"ON", False, "node 'bed-9' has no 'pump' control"),
    ("nt/other/bed-1/ha/pump/set", b"ON", False, "not a command topic of site 'home'"),
])
def test_bad_commands_are_refused_with_the_reason(topic: str, payload: bytes, retained: bool,
                                                  reason: str) -> None:
    with pytest.raises(CommandRefused) as err:
        command(topic, payload, retained)
    assert reason in str(err.value)
