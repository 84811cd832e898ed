"""The daemon around a real Gateway and a real mosquitto: desired configs, Home Assistant
discovery and commands, node refusals in the audit. Nodes are paho clients sending real
protocol payloads (tests/test_ingest.py's FakeNode, tests/test_commands.py's ScriptedNode)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sensornode import cmdauth, protocol

from edge_gateway import audit
from edge_gateway.config import Config, parse_config
from edge_gateway.config_desired import desired_node_configs
from edge_gateway.daemon import HA_IRRIGATE_S, Daemon
from edge_gateway.ingest import Gateway
from edge_gateway.signing import KeyRing
from edge_gateway.store import Store
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for
from tests.test_commands import ScriptedNode, answer_started
from tests.test_ingest import FakeNode

SITE = "home"
WAIT_S = 10.0


def site_config(tmp_path: Path, broker: Mosquitto, keys: KeyRing,
                local_hardware: dict[str, Any] | None = None, ha: bool = True) -> Config:
    table: dict[str, Any] = {
        "site": {"name": SITE},
        "broker": {"host": broker.host, "port": broker.port},
        "storage": {"path": "gw.db"},
        "plants": {"veg": {"moisture_low_pct": 30, "moisture_high_pct": 45, "soak_s": 600,
                           "max_run_s": 10, "daily_budget_l": 20, "flow_l_per_min": 2}},
        "nodes": {"bed-1": {"role": "garden", "plant": "veg",
                            "key_file": str(keys.create("bed-1")), "report_interval_s": 30},
                  "drone-1": {"role": "drone"}},
        "homeassistant": {"enabled": ha},
    }
    if local_hardware is not None:
        table["local_hardware"] = local_hardware
    return parse_config(table, base_dir=tmp_path)


@dataclass
class Running:
    daemon: Daemon
    gateway: Gateway
    config: Config
    keys: KeyRing
    db: Path


def start_daemon(tmp_path: Path, broker: Mosquitto, **daemon_args: Any) -> Running:
    """Daemon attached to a started, connected Gateway; stop with `stop_daemon`."""
    local_hardware = daemon_args.pop("local_hardware", None)
    keys = KeyRing(tmp_path / "keys")
    config = site_config(tmp_path, broker, keys, local_hardware)
    gateway = Gateway(SITE, broker.host, broker.port, config.storage.path, batch_linger_s=0.01)
    daemon = Daemon(config, gateway, keys, **daemon_args)
    daemon.attach()
    try:
        gateway.start()
        gateway.wait_connected(WAIT_S)
    except BaseException:
        gateway.stop()
        daemon.stop()
        raise
    return Running(daemon, gateway, config, keys, config.storage.path)


def stop_daemon(running: Running) -> None:
    running.gateway.stop()
    running.daemon.stop()


@pytest.fixture
def running(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Running]:
    started = start_daemon(tmp_path, mosquitto)
    yield started
    stop_daemon(started)


class Watcher:
    """A client that keeps every message on its filters: {topic: [(payload, retained)]}."""

    def __init__(self, broker: Mosquitto, *filters: str) -> None:
        self.messages: dict[str, list[tuple[bytes, bool]]] = {}
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.subscribe([(f, 1) for f in filters])
        self.client.loop_start()
        assert subscribed.wait(WAIT_S), "watcher not subscribed"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.setdefault(msg.topic, []).append((bytes(msg.payload),
                                                            bool(msg.retain)))

    def latest(self, topic: str) -> bytes | None:
        with self._lock:
            found = self.messages.get(topic)
            return found[-1][0] if found else None

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watch(mosquitto: Mosquitto) -> Iterator[Callable[..., Watcher]]:
    made: list[Watcher] = []

    def make(*filters: str) -> Watcher:
        made.append(Watcher(mosquitto, *filters))
        return made[-1]

    yield make
    for watcher in made:
        watcher.close()


@pytest.fixture
def bed(mosquitto: Mosquitto) -> Iterator[FakeNode]:
    node = FakeNode(mosquitto, "bed-1")
    yield node
    node.close()


def test_desired_configs_are_published_retained_on_connect(
    running: Running, watch: Callable[..., Watcher]
) -> None:
    desired = desired_node_configs(running.config)
    # subscribed after the daemon connected: what arrives is what the broker retained
    watcher = watch(f"nt/{SITE}/+/config")
    topics = {name: protocol.node_topic(SITE, name, protocol.CONFIG) for name in desired}
    wait_for(lambda: all(watcher.latest(t) for t in topics.values()), WAIT_S, "both configs")
    for name, topic in topics.items():
        assert watcher.messages[topic] == [(desired[name].payload(), True)]
    document = json.loads(desired["bed-1"].payload())
    assert document["plant"]["max_run_s"] == 10 and document["report_interval_s"] == 30


def announce_bed(bed: FakeNode, watcher: Watcher) -> None:
    bed.birth()
    bed.telemetry(1, soil_moisture=41.5, pump=0.0)
    wait_for(lambda: watcher.latest("homeassistant/sensor/bed-1_soil_moisture/config"),
             WAIT_S, "bed-1's discovery configs")


def test_home_assistant_discovery_and_state_follow_birth_and_telemetry(
    running: Running, bed: FakeNode, watch: Callable[..., Watcher]
) -> None:
    watcher = watch("homeassistant/#", f"nt/{SITE}/+/state")
    announce_bed(bed, watcher)
    pump = json.loads(watcher.latest("homeassistant/switch/bed-1_pump/config") or b"{}")
    assert pump["command_topic"] == f"nt/{SITE}/bed-1/ha/pump/set"
    assert [a["topic"] for a in pump["availability"]] == [f"nt/{SITE}/bed-1/status"]
    moisture = json.loads(watcher.latest("homeassistant/sensor/bed-1_soil_moisture/config")
                          or b"{}")
    assert moisture["device"]["sw_version"] == "0.1.0"
    assert moisture["unit_of_measurement"] == "%"
    state_topic = f"nt/{SITE}/bed-1/state"
    wait_for(lambda: watcher.latest(state_topic), WAIT_S, "bed-1's state document")
    state = json.loads(watcher.latest(state_topic) or b"{}")
    assert state["soil_moisture"] == 41.5 and state["pump"] == 0
    late = watch(state_topic)  # subscribing later still gets it: retained
    wait_for(lambda: late.messages.get(state_topic), WAIT_S, "the retained state document")
    assert late.messages[state_topic] == [(watcher.latest(state_topic), True)]
    # the drone never spoke: nothing announced for it
    assert not [t for t in watcher.messages if "drone-1" in t]


def test_a_home_assistant_pump_switch_becomes_a_signed_audited_irrigate(
    running: Running, bed: FakeNode, watch: Callable[..., Watcher], mosquitto: Mosquitto,
    tmp_path: Path
) -> None:
    watcher = watch("homeassistant/#")
    announce_bed(bed, watcher)
    scripted = ScriptedNode(mosquitto, "bed-1", answer_started)
    try:
        watcher.publish(f"nt/{SITE}/bed-1/ha/pump/set", b"ON")
        command = scripted.commands.get(timeout=WAIT_S)
    finally:
        scripted.close()
    assert (command["action"], command["params"]) == ("irrigate", {"seconds": HA_IRRIGATE_S})
    auth = cmdauth.CommandAuth("bed-1", running.keys.key("bed-1").hex(),
                               str(tmp_path / "counter.json"))
    assert auth.admit(command, command["payload"]) is None  # signed with bed-1's key

    def audited() -> list[audit.AuditEntry]:
        with Store(running.db) as store:
            return [e for e in audit.entries(store) if e.result == audit.ACKED_OK]

    wait_for(audited, WAIT_S, "the audit row of HA's command")
    (entry,) = audited()
    assert (entry.requested_by, entry.node, entry.action, entry.cmd_id) == (
        "homeassistant", "bed-1", "irrigate", command["id"])


def test_a_node_refusal_lands_in_the_audit_as_it_arrives(running: Running,
                                                         bed: FakeNode) -> None:
    detail = "cmd 3f9c1a7e irrigate: forged: the signature does not match this node's key"
    bed.publish(protocol.EVENT, protocol.encode_event(5, 1_790_000_005.0, "fault", "cmd",
                                                      "refused", detail))

    def rows() -> list[tuple[Any, ...]]:
        # the table itself: audit.entries() would import the refusal on its own
        with Store(running.db) as store:
            return store.query("SELECT requested_by, node, action, result, cmd_id, event_seq"
                               " FROM audit")

    wait_for(rows, WAIT_S, "the refusal in the audit table")
    assert rows() == [(audit.UNKNOWN_SENDER, "bed-1", "irrigate", "refused forged",
                       "3f9c1a7e", 5)]


def test_home_assistant_commands_for_unknown_entities_or_values_send_nothing(
    running: Running, bed: FakeNode, watch: Callable[..., Watcher], mosquitto: Mosquitto
) -> None:
    watcher = watch("homeassistant/#")
    announce_bed(bed, watcher)
    scripted = ScriptedNode(mosquitto, "bed-1", answer_started)
    try:
        watcher.publish(f"nt/{SITE}/drone-1/ha/diffuser_1/set", b"40")  # never announced
        watcher.publish(f"nt/{SITE}/bed-1/ha/pump/set", b"MAYBE")
        watcher.publish(f"nt/{SITE}/bed-1/ha/pump/set", b"ON")  # handled after the two above
        command = scripted.commands.get(timeout=WAIT_S)
    finally:
        scripted.close()
    assert command["action"] == "irrigate"

    def audited() -> list[tuple[str, str, str]]:
        with Store(running.db) as store:
            return [(e.node, e.action, e.result) for e in audit.entries(store)]

    wait_for(lambda: audited() == [("bed-1", "irrigate", audit.ACKED_OK)], WAIT_S,
             lambda: f"only the valid command in the audit, got {audited()}")
