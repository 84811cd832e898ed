"""The drone payload under its safety layer, end to end: the firmware under the real micropython
on the emulated board (with an arm switch wired), a real mosquitto, the gateway daemon (time,
store), commands signed as the gateway signs them.

1. A diffuser "show" (several diffuse commands in a row) is stopped by the retained site e-stop
   at once, and further commands are refused until the e-stop is reset.
2. A diffuser that drains its tank stops when the float switch opens; its tank refuses more.
3. A disarmed payload stops its diffusers and refuses commands.
4. A setpoint makes the emulated VOC index settle near its target; settling time and overshoot
   are printed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sensornode import protocol

from edge_gateway.commands import send_command
from edge_gateway.emulator import EmulatedNode
from edge_gateway.signing import KeyRing, Signer
from edge_gateway.store import Store
from hil_tests.conftest import SITE
from hil_tests.test_walking_skeleton import node_online
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for
from testkit.watch import Watcher

NODE = "drone-1"
ARM_PIN = 23
ESTOP_TOPIC = protocol.site_topic(SITE, protocol.ESTOP)
EVENT_TOPIC = protocol.node_topic(SITE, NODE, protocol.EVENT)
TELEMETRY_TOPIC = protocol.node_topic(SITE, NODE, protocol.TELEMETRY)
SETTLE_BOUND_S = 180.0  # aroma.py's stated bounds for a voc_index step 100 -> 200
OVERSHOOT_BOUND = 8.0
BAND = 5.0


class Drone:
    """The emulated drone node, its keys and the gateway's store, and a witness on the broker."""

    def __init__(self, broker: Mosquitto, db: Path, tmp_path: Path,
                 world: dict[str, object]) -> None:
        self.broker, self.db = broker, db
        self.keys = KeyRing(tmp_path / "keys")
        self.keys.create(NODE)
        cfg = {"site": SITE, "node": NODE, "role": "drone", "report_interval_s": 1,
               "broker": {"host": broker.host, "port": broker.port, "keepalive_s": 5},
               "cmd_key": self.keys.key(NODE).hex(),
               "diffusers": {"max_duty_pct": 80, "ramp_pct_per_s": 200, "freq_hz": 1000,
                             "max_run_s": 600}}
        self.node = EmulatedNode(tmp_path / NODE, cfg,
                                 world={"adc_noise_raw": 0, **world})
        self.watch = Watcher(broker, f"nt/{SITE}/#")

    def start(self) -> None:
        self.node.start()
        wait_for(lambda: node_online(self.db, NODE) is True, timeout=30,
                 what=lambda: f"{NODE} online; node log:\n{self.node.log_tail()}")
        # Armed and the tanks read: the safety layer has every input it needs.
        wait_for(lambda: ("arm_switch", "armed") in self.events(), timeout=10,
                 what=lambda: f"the arm switch read; log:\n{self.node.log_tail()}")

    def close(self) -> None:
        self.watch.close()
        self.node.kill()

    def cmd(self, action: str, **params: Any) -> dict[str, Any]:
        with Store(self.db) as store:
            return send_command(self.broker.host, self.broker.port, SITE, NODE, action, params,
                                10, signer=Signer(store, self.keys), requested_by="show")

    def diffuse(self, channel: int, duty: int, seconds: int) -> dict[str, Any]:
        return self.cmd("diffuse", channel=channel, duty_pct=duty, seconds=seconds)

    def duty(self, channel: int) -> float:
        value: float = self.node.state()["actuators"][f"diffuser_{channel}"]
        return value

    def events(self) -> list[tuple[str, str]]:
        out = []
        for payload in self.watch.payloads(EVENT_TOPIC):
            event = protocol.decode_event(payload)
            out.append((event["name"], event["state"]))
        return out

    def event_details(self, name: str) -> list[str]:
        return [protocol.decode_event(p)["detail"] for p in self.watch.payloads(EVENT_TOPIC)
                if protocol.decode_event(p)["name"] == name]

    def estop(self, latched: bool) -> float:
        sent = time.monotonic()
        self.watch.client.publish(ESTOP_TOPIC, protocol.encode_estop(latched, "hil", time.time()),
                                  qos=1, retain=True).wait_for_publish(timeout=5)
        return sent


@pytest.fixture
def drone(mosquitto: Mosquitto, gateway: Path, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Drone]:
    world = getattr(request, "param", {})
    d = Drone(mosquitto, gateway, tmp_path, world)
    try:
        yield d
    finally:
        d.close()


def test_the_site_estop_stops_a_running_show_at_once(drone: Drone) -> None:
    drone.start()
    for channel, duty, seconds in ((1, 40, 60), (2, 60, 60), (1, 70, 60), (3, 30, 60)):
        ack = drone.diffuse(channel, duty, seconds)
        assert ack["ok"] and ack["result"] == "started", ack
    wait_for(lambda: (drone.duty(1), drone.duty(2), drone.duty(3)) == (70, 60, 30), timeout=5,
             what=lambda: f"the show running; state {drone.node.state()['actuators']}")
    sent = drone.estop(True)
    wait_for(lambda: not any(drone.duty(n) for n in (1, 2, 3, 4)), timeout=2,
             what=lambda: f"every diffuser off; log:\n{drone.node.log_tail()}")
    latency = time.monotonic() - sent
    print(f"drone e-stop: every diffuser off {latency * 1000:.0f} ms after the retained "
          "e-stop was published (control tick 200 ms)")
    assert latency < 1.0
    refused = drone.diffuse(1, 20, 10)
    assert not refused["ok"] and refused["detail"].startswith("refused: e-stop latched (site "), \
        refused
    setpoint = drone.cmd("setpoint", channel=2, target=150.0, quantity="voc_index")
    assert not setpoint["ok"] and "e-stop latched" in setpoint["detail"]
    drone.estop(False)
    wait_for(lambda: ("estop", "reset") in drone.events(), timeout=5, what="the e-stop reset")
    assert not any(drone.duty(n) for n in (1, 2, 3)), "a reset switches nothing back on"
    assert drone.diffuse(1, 20, 5)["ok"]
    stopped = [d for d in drone.event_details("diffuser_2") if d.startswith("stopped: e-stop")]
    assert stopped, drone.event_details("diffuser_2")


@pytest.mark.parametrize("drone", [{"tank_level_ml_1": 12.0, "tank_switch_threshold_ml_1": 10.0,
                                    "diffuser_flow_ml_per_s_1": 2.0}], indirect=True)
def test_a_drained_tank_stops_its_diffuser_and_refuses_more(drone: Drone) -> None:
    drone.start()
    assert drone.diffuse(1, 80, 120)["ok"]
    assert drone.diffuse(2, 50, 120)["ok"]  # tank 2: not affected
    wait_for(lambda: drone.duty(1) == 0, timeout=15,
             what=lambda: f"diffuser_1 stopped by its empty tank; log:\n{drone.node.log_tail()}")
    level = drone.node.state()["world"]["tank_level_ml_1"]
    assert 5.0 < level < 10.0, f"stopped soon after the switch opened (level {level} ml)"
    assert "stopped: tank empty (tank_switch_1)" in drone.event_details("diffuser_1")
    assert drone.duty(2) == 50
    for channel in (1, 3):  # both on tank 1
        ack = drone.diffuse(channel, 30, 10)
        assert not ack["ok"] and ack["detail"] == "refused: tank empty (tank_switch_1)", ack


def test_a_disarmed_payload_stops_and_refuses(drone: Drone) -> None:
    drone.start()
    assert drone.diffuse(4, 50, 60)["ok"]
    wait_for(lambda: drone.duty(4) == 50, timeout=5, what="diffuser_4 running")
    drone.node.set_world(armed=False)
    wait_for(lambda: drone.duty(4) == 0, timeout=3,
             what=lambda: f"diffuser_4 stopped on disarm; log:\n{drone.node.log_tail()}")
    ack = drone.diffuse(4, 50, 60)
    assert not ack["ok"] and ack["detail"] == "refused: payload disarmed (armed)", ack
    assert ("arm_switch", "disarmed") in drone.events()
