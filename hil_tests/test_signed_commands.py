"""Signed commands end to end: the firmware under the real micropython on the emulated board,
a real mosquitto, the real gateway daemon storing what the node reports.

Someone on the broker tries a forged command, a replay of a command the gateway sent, and a
properly signed command meant for another node: the node refuses each with an ack naming the
reason and an event, and each shows in the gateway's audit log next to the good irrigate the
gateway signed, which runs the pump.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

from sensornode import protocol

from edge_gateway import audit
from edge_gateway.commands import send_command
from edge_gateway.emulator import EmulatedNode
from edge_gateway.signing import KeyRing, Signer
from edge_gateway.store import Store
from hil_tests.conftest import SITE
from hil_tests.test_walking_skeleton import node_online
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for
from testkit.watch import Watcher

NODE = "bed-1"
CMD_TOPIC = protocol.node_topic(SITE, NODE, protocol.CMD)
ACK_TOPIC = protocol.node_topic(SITE, NODE, protocol.ACK)


def publish(watcher: Watcher, payload: bytes) -> None:
    """What an intruder with broker access does: put a command on the node's topic."""
    watcher.client.publish(CMD_TOPIC, payload, qos=1).wait_for_publish(timeout=5)


def ack_for(watcher: Watcher, cmd_id: str) -> dict[str, Any] | None:
    for payload in watcher.payloads(ACK_TOPIC):
        ack = protocol.decode_ack(payload)
        if ack["id"] == cmd_id:
            return ack
    return None


def wait_ack(watcher: Watcher, node: EmulatedNode, cmd_id: str) -> dict[str, Any]:
    ack = wait_for(lambda: ack_for(watcher, cmd_id), timeout=10,
                   what=lambda: f"the node's ack of {cmd_id}; node log:\n{node.log_tail()}")
    assert isinstance(ack, dict)
    return ack


def audit_rows(db: Path) -> list[audit.AuditEntry]:
    with Store(db) as store:
        return audit.entries(store, node=NODE)


def pump_events(db: Path) -> list[str]:
    with Store(db) as store:
        return [e.state for e in store.events(node=NODE) if e.name == "pump"]


def test_forged_replayed_and_misdirected_commands_are_refused_and_audited(
    mosquitto: Mosquitto, gateway: Path, tmp_path: Path
) -> None:
    keys = KeyRing(tmp_path / "keys")
    keys.create(NODE)
    keys.create("bed-2")
    config = {
        "site": SITE,
        "node": NODE,
        "broker": {"host": mosquitto.host, "port": mosquitto.port, "keepalive_s": 5},
        "report_interval_s": 1,
        "irrigation": {"max_run_s": 30},
        "cmd_key": keys.key(NODE).hex(),
    }
    node = EmulatedNode(tmp_path / NODE, config, world={"soil_moisture": 35.0})
    intruder = Watcher(mosquitto, f"nt/{SITE}/{NODE}/+")
    node.start()
    try:
        wait_for(lambda: node_online(gateway, NODE) is True, timeout=20,
                 what=lambda: f"{NODE} online; node log:\n{node.log_text()}")
        assert node.state()["pump"] is False

        # 1. Forged: the right shape, signed with a key that is not the node's.
        unsigned = protocol.encode_command("forged-1", "irrigate", {"seconds": 30}, time.time(),
                                           NODE, 10**15)
        wrong_key = hmac.new(b"guess" * 8, unsigned, hashlib.sha256).hexdigest()
        publish(intruder, protocol.sign_command(unsigned, wrong_key))
        forged = wait_ack(intruder, node, "forged-1")

        # 2. The gateway's own signed irrigate: obeyed.
        with Store(gateway) as store:
            good = send_command(mosquitto.host, mosquitto.port, SITE, NODE, "irrigate",
                                {"seconds": 2}, 10, signer=Signer(store, keys),
                                requested_by="alice")
        assert (good["ok"], good["result"]) == (True, "started"), good
        wait_for(lambda: node.state()["pump"] is True, timeout=5, what="pump on")
        wait_for(lambda: node.state()["pump"] is False, timeout=8, what="pump off after 2 s")

        # 3. Replay: the intruder recorded the gateway's command and sends it again.
        (recorded,) = [p for p in intruder.payloads(CMD_TOPIC)
                       if protocol.decode_command(p)["id"] == good["id"]]
        publish(intruder, recorded)
        wait_for(lambda: len([p for p in intruder.payloads(ACK_TOPIC)
                              if protocol.decode_ack(p)["id"] == good["id"]]) == 2,
                 timeout=10, what=lambda: f"the ack of the replay; log:\n{node.log_tail()}")
        replayed = [protocol.decode_ack(p) for p in intruder.payloads(ACK_TOPIC)
                    if protocol.decode_ack(p)["id"] == good["id"]][1]

        # 4. Signed properly, but for bed-2 (with bed-2's key), put on bed-1's topic.
        other = protocol.encode_command("other-1", "irrigate", {"seconds": 30}, time.time(),
                                        "bed-2", 10**15)
        publish(intruder, protocol.sign_command(
            other, hmac.new(keys.key("bed-2"), other, hashlib.sha256).hexdigest()))
        misdirected = wait_ack(intruder, node, "other-1")

        for ack in (forged, replayed, misdirected):
            assert (ack["ok"], ack["result"]) == (False, "refused"), ack
        assert forged["detail"] == "forged: the signature does not match this node's key"
        assert replayed["detail"].startswith("replayed: counter "), replayed
        assert misdirected["detail"] == "wrong node: it is for bed-2, this is bed-1"

        expected = {
            ("unknown", "forged-1", "refused forged"),
            ("alice", good["id"], "acked ok"),
            ("unknown", good["id"], "refused replayed"),
            ("unknown", "other-1", "refused wrong node"),
        }

        def audited() -> set[tuple[str, str | None, str]]:
            return {(e.requested_by, e.cmd_id, e.result) for e in audit_rows(gateway)}

        wait_for(lambda: audited() == expected, timeout=10,
                 what=lambda: f"the audit to show all four commands; it has {audited()}")
        # The pump ran once, for the gateway's command only; the node reported each refusal.
        wait_for(lambda: pump_events(gateway) == ["on", "off"], timeout=10,
                 what=lambda: f"pump on/off events, got {pump_events(gateway)}")
        assert node.state()["pump"] is False
        with Store(gateway) as store:
            refusals = [e.detail for e in store.events(node=NODE)
                        if (e.kind, e.name, e.state) == ("fault", "cmd", "refused")]
        assert len(refusals) == 3 and all(d.startswith("cmd ") for d in refusals), refusals
    finally:
        intruder.close()
        node.kill()
