"""The Home Assistant bridge against a real mosquitto: the gateway side is a paho client with the
bridge attached; Home Assistant is played by a second paho client that reads the discovery
configs and state documents and publishes HA's birth message and entity commands."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_gateway.homeassistant import NodeDescription
from edge_gateway.homeassistant_bridge import HomeAssistantBridge
from edge_gateway.homeassistant_state import LatestValues
from edge_gateway.messages import Reading, Telemetry
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for

WAIT_S = 10.0
T0 = 1_790_000_000.0
GARDEN = NodeDescription("home", "bed-1", "garden", board="esp32_devkitc", fw="0.3.1",
                         quantities=frozenset({"soil_moisture", "pump", "air_temperature"}))
DRONE = NodeDescription("home", "drone-1", "drone", board="esp32_s3_devkitc", fw="0.3.1",
                        quantities=frozenset({"voc_index", "gas_resistance", "diffuser_duty_1",
                                              "diffuser_duty_2"}),
                        diffuser_max_duty_pct=60)
GARDEN_TOPICS = {f"homeassistant/{c}/bed-1_{k}/config" for c, k in (
    ("switch", "pump"), ("sensor", "soil_moisture"), ("sensor", "air_temperature"))}
DRONE_TOPICS = {f"homeassistant/{c}/drone-1_{k}/config" for c, k in (
    ("number", "diffuser_1"), ("number", "diffuser_2"), ("sensor", "voc_index"),
    ("sensor", "gas_resistance"))}
SYNC_TOPIC = "test/sync"


def new_client(broker: Mosquitto, name: str) -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}",
                       protocol=mqtt.MQTTv311)


class HomeAssistant:
    """Plays Home Assistant: subscribes (as HA does on start) and records what it receives."""

    def __init__(self, broker: Mosquitto, *filters: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = new_client(broker, "ha")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe([(f, 1) for f in (*filters, SYNC_TOPIC)])
        assert self._subscribed.wait(WAIT_S), "HA client not subscribed"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def received(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def latest(self) -> dict[str, tuple[bytes, bool]]:
        with self._lock:
            return {t: (payload, retained) for t, payload, retained in self.messages}

    def sync(self) -> None:
        """Wait until everything the broker had for us before now has arrived: a message we
        publish ourselves comes back after it, as one connection keeps its order."""
        marker = uuid.uuid4().hex.encode()
        self.publish(SYNC_TOPIC, marker)
        wait_for(lambda: marker in self.received(SYNC_TOPIC), WAIT_S, "the sync marker")

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Gateway:
    """The daemon's side: a paho client with the bridge attached, wired as the daemon does."""

    def __init__(self, broker: Mosquitto) -> None:
        self.commands: list[tuple[str, str, bool | int]] = []
        self.client = new_client(broker, "gw")
        self.bridge = HomeAssistantBridge(self.client, "home", self._on_command)
        self.connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.bridge.attach()  # not connected yet: on_connect subscribes
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(WAIT_S), "gateway client not connected"

    def _on_connect(self, *args: Any) -> None:
        self.bridge.on_connect()
        self.connected.set()

    def _on_command(self, node: str, entity: str, value: bool | int) -> None:
        self.commands.append((node, entity, value))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gateway(mosquitto: Mosquitto) -> Iterator[Gateway]:
    gw = Gateway(mosquitto)
    yield gw
    gw.close()


@pytest.fixture
def ha(mosquitto: Mosquitto) -> Iterator[HomeAssistant]:
    client = HomeAssistant(mosquitto, "homeassistant/#", "nt/home/+/state")
    yield client
    client.close()


def announce(gateway: Gateway, ha: HomeAssistant, *nodes: NodeDescription) -> set[str]:
    for description in nodes:
        gateway.bridge.publish_node(description)
    topics = set().union(*(GARDEN_TOPICS if d is GARDEN else DRONE_TOPICS for d in nodes))
    wait_for(lambda: set(ha.latest()) >= topics, WAIT_S, "the discovery configs")
    return topics


def test_configs_are_published_retained_and_correct(gateway: Gateway, ha: HomeAssistant,
                                                    mosquitto: Mosquitto) -> None:
    announce(gateway, ha, GARDEN, DRONE)  # on the broker once `ha` has them
    late = HomeAssistant(mosquitto, "homeassistant/#")  # subscribes after: gets retained copies
    try:
        late.sync()
        configs = late.latest()
        assert set(configs) == GARDEN_TOPICS | DRONE_TOPICS | {SYNC_TOPIC}
        assert all(retained for topic, (_, retained) in configs.items() if topic != SYNC_TOPIC)
        moisture = json.loads(configs["homeassistant/sensor/bed-1_soil_moisture/config"][0])
        assert moisture["unique_id"] == "neoterra_home_bed-1_soil_moisture"
        assert (moisture["device_class"], moisture["unit_of_measurement"],
                moisture["state_class"]) == ("moisture", "%", "measurement")
        assert moisture["state_topic"] == "nt/home/bed-1/state"
        assert moisture["availability"][0]["topic"] == "nt/home/bed-1/status"
        assert moisture["device"]["manufacturer"] == "Neoterra"
        pump = json.loads(configs["homeassistant/switch/bed-1_pump/config"][0])
        assert pump["command_topic"] == "nt/home/bed-1/ha/pump/set"
        diffuser = json.loads(configs["homeassistant/number/drone-1_diffuser_2/config"][0])
        assert (diffuser["min"], diffuser["max"]) == (0, 60)
        assert diffuser["device"]["model"] == "esp32_s3_devkitc"
        voc = json.loads(configs["homeassistant/sensor/drone-1_voc_index/config"][0])
        assert "device_class" not in voc and voc["state_class"] == "measurement"
    finally:
        late.close()


def test_unchanged_configs_are_not_sent_again(gateway: Gateway, ha: HomeAssistant) -> None:
    announce(gateway, ha, GARDEN)
    assert gateway.bridge.publish_node(GARDEN) == 0
    newer = NodeDescription("home", "bed-1", "garden", board="esp32_devkitc", fw="0.4.0",
                            quantities=GARDEN.quantities)
    assert gateway.bridge.publish_node(newer) == len(GARDEN_TOPICS)  # sw_version changed


def test_home_assistant_online_makes_every_config_republished(
    gateway: Gateway, ha: HomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_gateway.homeassistant_bridge")
    topics = announce(gateway, ha, GARDEN, DRONE)
    before = {topic: len(ha.received(topic)) for topic in topics}
    ha.publish("homeassistant/status", b"offline")  # HA going down: nothing to do
    ha.publish("homeassistant/status", b"online")
    wait_for(lambda: all(len(ha.received(t)) == before[t] + 1 for t in topics), WAIT_S,
             "every config once more")
    assert gateway.bridge.republished == 1
    assert any("republished 7 discovery configs" in r.getMessage() for r in caplog.records)


def test_an_entity_that_went_away_is_deleted_with_an_empty_retained_payload(
    gateway: Gateway, ha: HomeAssistant, mosquitto: Mosquitto
) -> None:
    announce(gateway, ha, DRONE)
    fewer = NodeDescription("home", "drone-1", "drone", board="esp32_s3_devkitc", fw="0.3.1",
                            quantities=DRONE.quantities - {"voc_index"},
                            diffuser_max_duty_pct=60)
    gateway.bridge.publish_node(fewer)
    gone = "homeassistant/sensor/drone-1_voc_index/config"
    wait_for(lambda: ha.received(gone)[-1:] == [b""], WAIT_S, "the empty config payload")

    late = HomeAssistant(mosquitto, "homeassistant/#")
    try:
        late.sync()
        assert set(late.latest()) == DRONE_TOPICS - {gone} | {SYNC_TOPIC}
    finally:
        late.close()

    assert gateway.bridge.remove_node("drone-1") == len(DRONE_TOPICS) - 1
    wait_for(lambda: all(ha.received(t)[-1:] == [b""] for t in DRONE_TOPICS), WAIT_S,
             "every drone config emptied")
    after = HomeAssistant(mosquitto, "homeassistant/#")
    try:
        after.sync()
        assert set(after.latest()) == {SYNC_TOPIC}
    finally:
        after.close()


def test_state_document_is_published_retained(gateway: Gateway, ha: HomeAssistant,
                                              mosquitto: Mosquitto) -> None:
    latest = LatestValues()
    latest.apply([Telemetry("home", "bed-1", (
        Reading("bed-1", 7, T0, "soil_moisture", 41.5, T0), Reading("bed-1", 7, T0, "pump", 0.0,
                                                                     T0)), T0)])
    document = latest.document("bed-1")
    assert document is not None
    gateway.bridge.publish_state("bed-1", document)
    wait_for(lambda: ha.received("nt/home/bed-1/state"), WAIT_S, "the state document")
    late = HomeAssistant(mosquitto, "nt/home/+/state")
    try:
        late.sync()
        payload, retained = late.latest()["nt/home/bed-1/state"]
        assert retained
        assert json.loads(payload) == {"v": 1, "soil_moisture": 41.5, "pump": 0, "ts": T0}
    finally:
        late.close()


def test_commands_from_home_assistant_reach_the_callback(gateway: Gateway,
                                                         ha: HomeAssistant) -> None:
    announce(gateway, ha, GARDEN, DRONE)
    ha.publish("nt/home/bed-1/ha/pump/set", b"ON")
    ha.publish("nt/home/drone-1/ha/diffuser_2/set", b"45")
    ha.publish("nt/home/bed-1/ha/pump/set", b"OFF")
    wait_for(lambda: len(gateway.commands) == 3, WAIT_S, "three commands")
    assert gateway.commands == [("bed-1", "pump", True), ("drone-1", "diffuser_2", 45),
                                ("bed-1", "pump", False)]


def test_bad_commands_are_refused_and_logged(gateway: Gateway, ha: HomeAssistant,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge_gateway.homeassistant_bridge")
    announce(gateway, ha, GARDEN, DRONE)
    bad = [("nt/home/drone-1/ha/diffuser_1/set", b"75", "not a whole duty in 0..60 %"),
           ("nt/home/bed-1/ha/pump/set", b"BLINK", "payload 'BLINK' is not ON or OFF"),
           ("nt/home/bed-7/ha/pump/set", b"ON", "node 'bed-7' has no 'pump' control"),
           ("nt/home/bed-1/ha/soil_moisture/set", b"3", "no 'soil_moisture' control")]
    for topic, payload, _ in bad:
        ha.publish(topic, payload)
    ha.publish("nt/home/drone-1/ha/diffuser_1/set", b"20")  # comes after them all
    wait_for(lambda: gateway.commands, WAIT_S, "the good command")
    assert gateway.commands == [("drone-1", "diffuser_1", 20)]
    assert gateway.bridge.refused == len(bad)
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for (topic, _, reason), message in zip(bad, refusals, strict=True):
        assert message.startswith(f"Home Assistant command on {topic} refused: ")
        assert reason in message


def test_a_retained_command_is_refused_as_stale(mosquitto: Mosquitto, ha: HomeAssistant,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge_gateway.homeassistant_bridge")
    ha.publish("nt/home/bed-1/ha/pump/set", b"ON", retain=True)  # left on the broker
    client = new_client(mosquitto, "gw")
    commands: list[tuple[str, str, bool | int]] = []
    bridge = HomeAssistantBridge(client, "home", lambda *c: commands.append(c))
    bridge.publish_node(GARDEN)  # queued until connected
    client.on_connect = lambda *args: bridge.on_connect()
    bridge.attach()
    client.connect(mosquitto.host, mosquitto.port, keepalive=30)
    client.loop_start()
    try:
        wait_for(lambda: bridge.refused == 1, WAIT_S, "the retained command refused")
        assert commands == []
        assert any("the message is retained" in r.getMessage() for r in caplog.records)
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_failing_command_handler_does_not_stop_the_bridge(
    mosquitto: Mosquitto, ha: HomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[bool | int] = []

    def flaky(node: str, entity: str, value: bool | int) -> None:
        calls.append(value)
        if value is True:
            raise RuntimeError("signing key missing")

    client = new_client(mosquitto, "gw")
    bridge = HomeAssistantBridge(client, "home", flaky)
    connected = threading.Event()
    client.on_connect = lambda *args: (bridge.on_connect(), connected.set())
    bridge.attach()
    client.connect(mosquitto.host, mosquitto.port, keepalive=30)
    client.loop_start()
    try:
        assert connected.wait(WAIT_S)
        assert bridge.publish_node(GARDEN) == len(GARDEN_TOPICS)
        wait_for(lambda: set(ha.latest()) >= GARDEN_TOPICS, WAIT_S, "the garden configs")
        ha.publish("nt/home/bed-1/ha/pump/set", b"ON")
        ha.publish("nt/home/bed-1/ha/pump/set", b"OFF")
        wait_for(lambda: len(calls) == 2, WAIT_S, "both commands handled")
        assert calls == [True, False]
        assert any("the handler failed" in r.getMessage() for r in caplog.records)
    finally:
        client.disconnect()
        client.loop_stop()


def test_commands_sent_while_the_gateway_is_away_are_not_obeyed_when_it_returns(
    mosquitto: Mosquitto, ha: HomeAssistant
) -> None:
    """The daemon keeps a persistent session (clean_session=False); the broker must not hold
    HA's commands for it while it is away and deliver them, stale, on its return."""
    commands: list[tuple[str, str, bool | int]] = []
    client_id = f"gw-{uuid.uuid4().hex[:8]}"

    def connect() -> tuple[mqtt.Client, HomeAssistantBridge]:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=False, protocol=mqtt.MQTTv311)
        bridge = HomeAssistantBridge(client, "home", lambda *c: commands.append(c))
        bridge.publish_node(GARDEN)
        subscribed = threading.Event()
        client.on_connect = lambda *args: bridge.on_connect()
        client.on_subscribe = lambda *args: subscribed.set()
        bridge.attach()
        client.connect(mosquitto.host, mosquitto.port, keepalive=30)
        client.loop_start()
        assert subscribed.wait(WAIT_S), "bridge not subscribed"
        return client, bridge

    client, _ = connect()
    client.disconnect()
    client.loop_stop()
    ha.publish("nt/home/bed-1/ha/pump/set", b"ON")  # nobody there to take it
    client, _ = connect()
    try:
        ha.publish("nt/home/bed-1/ha/pump/set", b"OFF")
        wait_for(lambda: commands, WAIT_S, "the command sent after the return")
        assert commands == [("bed-1", "pump", False)]
    finally:
        client.disconnect()
        client.loop_stop()
