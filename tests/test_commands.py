"""Signed command round trips through a real mosquitto, with a scripted node answering, and
the audit rows they leave."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sensornode import cmdauth, protocol

from edge_gateway import audit
from edge_gateway.commands import CommandError, CommandTimeout, InvalidCommand, send_command
from edge_gateway.signing import KeyRing, Signer
from edge_gateway.store import Store
from testkit.mosquitto import Mosquitto, free_port

SITE = "home"
WAIT_S = 10.0
# What a scripted node answers to a decoded command: (cmd_id, ok, result, detail) per ack.
Script = Callable[[dict[str, Any]], list[tuple[str, bool, str, str]]]


def answer_started(cmd: dict[str, Any]) -> list[tuple[str, bool, str, str]]:
    return [(cmd["id"], True, "started", "")]


class ScriptedNode:
    """A node that acks each command on its cmd topic as `script` says."""

    def __init__(self, broker: Mosquitto, node: str, script: Script = answer_started) -> None:
        self.node, self.script = node, script
        self.commands: queue.Queue[dict[str, Any]] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"scripted-{node}",
                                  protocol=mqtt.MQTTv311)
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = self._on_command
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.subscribe(protocol.node_topic(SITE, node, protocol.CMD), qos=1)
        self.client.loop_start()
        assert subscribed.wait(WAIT_S), f"scripted node {node} not subscribed"

    def _on_command(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        cmd = protocol.decode_command(bytes(msg.payload))
        self.commands.put({**cmd, "payload": bytes(msg.payload)})
        for cmd_id, ok, result, detail in self.script(cmd):
            client.publish(protocol.node_topic(SITE, self.node, protocol.ACK),
                           protocol.encode_ack(cmd_id, ok, result, cmd["ts"], detail), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def scripted(mosquitto: Mosquitto) -> Iterator[Callable[[Script], ScriptedNode]]:
    nodes: list[ScriptedNode] = []

    def start(script: Script) -> ScriptedNode:
        nodes.append(ScriptedNode(mosquitto, "bed-1", script))
        return nodes[-1]

    yield start
    for node in nodes:
        node.close()


@pytest.fixture
def signer(tmp_path: Path) -> Iterator[Signer]:
    keys = KeyRing(tmp_path / "keys")
    keys.create("bed-1")
    with Store(tmp_path / "gateway.db") as store:
        yield Signer(store, keys)


def irrigate(broker: Mosquitto, signer: Signer, seconds: object = 5, node: str = "bed-1",
             timeout_s: float = WAIT_S) -> dict[str, Any]:
    return send_command(broker.host, broker.port, SITE, node, "irrigate",
                        {"seconds": seconds}, timeout_s, signer=signer, requested_by="alice")


def only_audit_row(signer: Signer) -> audit.AuditEntry:
    (entry,) = audit.entries(signer.store)
    return entry


def test_round_trip_returns_the_nodes_ack_and_audits_it(
    mosquitto: Mosquitto, scripted: Callable[[Script], ScriptedNode], signer: Signer
) -> None:
    node = scripted(lambda cmd: [(cmd["id"], True, "started", "pump on for 30 s")])
    ack = irrigate(mosquitto, signer, seconds=30)
    cmd = node.commands.get(timeout=WAIT_S)
    assert (cmd["action"], cmd["params"]) == ("irrigate", {"seconds": 30})
    assert ack["id"] == cmd["id"] and len(cmd["id"]) == 16
    assert (ack["ok"], ack["result"]) == (True, "started")
    entry = only_audit_row(signer)
    assert (entry.requested_by, entry.node, entry.action, entry.params) == (
        "alice", "bed-1", "irrigate", {"seconds": 30})
    assert (entry.result, entry.detail, entry.cmd_id) == ("acked ok", "pump on for 30 s", cmd["id"])
    assert entry.counter == cmd["counter"] and entry.done_at is not None
    assert entry.requested_at <= entry.done_at


def test_the_command_is_signed_so_the_node_admits_it_once(
    mosquitto: Mosquitto, scripted: Callable[[Script], ScriptedNode], signer: Signer,
    tmp_path: Path
) -> None:
    node = scripted(answer_started)
    irrigate(mosquitto, signer)
    irrigate(mosquitto, signer)
    first, second = node.commands.get(timeout=WAIT_S), node.commands.get(timeout=WAIT_S)
    assert first["node"] == "bed-1" and second["counter"] > first["counter"]
    auth = cmdauth.CommandAuth("bed-1", signer.keys.key("bed-1").hex(),
                               str(tmp_path / "counter.json"))
    assert auth.admit(first, first["payload"]) is None
    replay = auth.admit(first, first["payload"])
    assert replay is not None and replay.startswith("replayed")
    assert auth.admit(second, second["payload"]) is None


def test_acks_for_other_commands_are_ignored(
    mosquitto: Mosquitto, scripted: Callable[[Script], ScriptedNode], signer: Signer
) -> None:
    scripted(lambda cmd: [("someone-else", True, "done", ""), (cmd["id"], True, "done", "")])
    ack = irrigate(mosquitto, signer)
    assert ack["result"] == "done"


def test_refusal_is_returned_as_an_ack_and_audited_with_its_reason(
    mosquitto: Mosquitto, scripted: Callable[[Script], ScriptedNode], signer: Signer
) -> None:
    scripted(lambda cmd: [(cmd["id"], False, "refused", "replayed: counter 3, last 7")])
    ack = irrigate(mosquitto, signer)
    assert (ack["ok"], ack["result"]) == (False, "refused")
    entry = only_audit_row(signer)
    assert (entry.result, entry.detail) == ("refused replayed", "replayed: counter 3, last 7")


def test_silent_node_times_out_with_a_hint_and_the_audit_says_so(
    mosquitto: Mosquitto, signer: Signer
) -> None:
    with pytest.raises(CommandTimeout) as raised:
        irrigate(mosquitto, signer, timeout_s=0.3)
    assert str(raised.value) == (
        "no ack from node bed-1 within 0.3 s — is it online? check `neoterra nodes`"
    )
    entry = only_audit_row(signer)
    assert (entry.result, entry.detail) == ("timeout", str(raised.value))


def test_command_is_not_retained(
    mosquitto: Mosquitto, scripted: Callable[[Script], ScriptedNode], signer: Signer
) -> None:
    scripted(answer_started)
    irrigate(mosquitto, signer)
    # A late subscriber must not get the command. Retained messages follow the SUBACK in
    # filter order, so once the retained marker arrives, a retained command would have too.
    marker = "nt/home/test-marker/config"
    received: queue.Queue[str] = queue.Queue()
    late = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    late.on_message = lambda client, userdata, msg: received.put(msg.topic)
    late.connect(mosquitto.host, mosquitto.port)
    late.loop_start()
    try:
        late.publish(marker, b"x", qos=1, retain=True).wait_for_publish(WAIT_S)
        late.subscribe([(protocol.node_topic(SITE, "bed-1", protocol.CMD), 1), (marker, 1)])
        assert received.get(timeout=WAIT_S) == marker
    finally:
        late.disconnect()
        late.loop_stop()


@pytest.mark.parametrize(("node", "seconds", "names"), [
    ("Bed 1", 5, "node"),
    ("bed-1", 0, "seconds"),
    ("bed-1", protocol.MAX_IRRIGATE_S + 1, "seconds"),
    ("bed-1", "5", "seconds"),
])
def test_invalid_input_is_refused_before_connecting(node: str, seconds: object,
                                                    names: str, signer: Signer) -> None:
    closed_port = free_port()  # nothing listens: validation must come first
    with pytest.raises(InvalidCommand, match=names):
        send_command("127.0.0.1", closed_port, SITE, node, "irrigate", {"seconds": seconds},
                     1.0, signer=signer, requested_by="alice")
    assert audit.entries(signer.store) == []


def test_unknown_action_is_refused(signer: Signer) -> None:
    with pytest.raises(InvalidCommand, match="action"):
        send_command("127.0.0.1", free_port(), SITE, "bed-1", "flood", {}, 1.0,
                     signer=signer, requested_by="alice")


def test_a_node_without_a_key_file_is_refused_before_connecting(signer: Signer) -> None:
    with pytest.raises(InvalidCommand, match="no key for node bed-2; make one with"):
        send_command("127.0.0.1", free_port(), SITE, "bed-2", "irrigate", {"seconds": 5}, 1.0,
                     signer=signer, requested_by="alice")
    assert audit.entries(signer.store) == []


def test_a_command_must_say_who_asked(signer: Signer) -> None:
    with pytest.raises(InvalidCommand, match="requested_by"):
        send_command("127.0.0.1", free_port(), SITE, "bed-1", "irrigate", {"seconds": 5}, 1.0,
                     signer=signer, requested_by=" ")


def test_unreachable_broker_is_a_clear_error_and_audited_as_not_sent(signer: Signer) -> None:
    port = free_port()
    with pytest.raises(CommandError, match=f"cannot reach the MQTT broker at 127.0.0.1:{port}"):
        send_command("127.0.0.1", port, SITE, "bed-1", "irrigate", {"seconds": 5}, 1.0,
                     signer=signer, requested_by="rule:dry-bed")
    entry = only_audit_row(signer)
    assert (entry.requested_by, entry.result) == ("rule:dry-bed", "not sent")
    assert entry.detail.startswith(f"cannot reach the MQTT broker at 127.0.0.1:{port}")
