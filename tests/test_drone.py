"""The drone role (firmware/sensornode/drone.py) under its safety layer, in simulated time: the
emulated board and world in-process, the real Safety built as the node builds it
(node_safety.limits_for with the role's actuators and defaults), a stand-in for the rest of the
Node (events, sensors). Diffuse commands, the arm switch, tanks, e-stop and safe mode."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import emu  # type: ignore[import-not-found]  # boards/emulated, on pytest's pythonpath
import pytest
from sensornode import config, node_safety
from sensornode.board import Board
from sensornode.component import Component
from sensornode.drone import LOOP_RUN_S, DroneRole, Tap
from sensornode.safety import Safety
from sensornode.sensors import SensorSet

from edge_gateway.boards import BOARDS_DIR
from edge_gateway.emulated_world import world_config
from testkit.emulated import FakeClock, fresh_emulation  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("fresh_emulation")
TS = 1795300000.0
ARM_PIN = 23  # free on the emulated ESP32 drone wiring


def drone_profile(arm_pin: int | None = ARM_PIN) -> dict[str, Any]:
    profile: dict[str, Any] = json.loads((BOARDS_DIR / "emulated" / "drone.json").read_text())
    if arm_pin is None:
        del profile["pins"]["arm_switch"]
    else:
        profile["pins"]["arm_switch"] = arm_pin
    return profile


class Rig:
    """A drone node's role and safety layer on the emulated board, time in a FakeClock."""

    def __init__(self, tmp_path: Path, world: dict[str, object] | None = None,
                 arm_pin: int | None = ARM_PIN, chips: tuple[str, ...] | None = None,
                 **given: Any) -> None:
        self.clock = FakeClock(1000)
        profile = drone_profile(arm_pin)
        if chips is not None:
            profile["i2c_devices"] = [d for d in profile["i2c_devices"] if d["model"] in chips]
        emu.configure(world_config(profile, {"adc_noise_raw": 0, **(world or {})}, "drone-t"),
                      None, self.clock)
        self.cfg = config.validate({"site": "t", "node": "drone-1", "role": "drone", **given})
        self.events: list[tuple[str, str, str, str]] = []
        self.sensors = SensorSet(self.cfg, lambda name, values: None, lambda *fault: None)
        self.role = DroneRole(self, Board(profile), self.cfg, clock=self.clock)
        limits = node_safety.limits_for(self.cfg, self.role.actuators(),
                                        self.role.safety_defaults())
        self.safety = Safety(limits, str(tmp_path / "safety.json"), on_event=self._safety_event,
                             apply=self.role.drive, mono=self.clock, wall=lambda: TS)
        self.safety.comms(True)
        self.safety.set_input("tank_switch_1", True)
        self.safety.set_input("tank_switch_2", True)
        self.ids = 0

    # what the role uses of its Node
    def event(self, kind: str, name: str, state: str, detail: str) -> None:
        self.events.append((kind, name, state, detail))

    def _safety_event(self, kind: str, name: str, state: str, detail: str) -> None:
        self.event(kind, name, state, detail)
        self.role.safety_event(kind, name, state, detail)

    # the node's control task, in simulated time
    def run(self, seconds: float, step_s: float = 0.2) -> None:
        for _ in range(round(seconds / step_s)):
            self.clock.advance(step_s)
            self.safety.tick()
            self.role.control()
            for diffuser in self.role.diffusers.values():
                diffuser.update()

    def cmd(self, action: str, **params: Any) -> tuple[bool, str]:
        self.ids += 1
        result = self.role.obey({"id": f"c{self.ids}", "action": action, "params": params,
                                 "expires": None})
        assert result is not None
        ok, detail = result
        return ok, detail

    def world_duty(self, channel: int) -> float:
        actuators: dict[str, float] = emu.get().world.actuators()
        return actuators[f"diffuser_{channel}"]

    def states(self, name: str) -> list[str]:
        return [e[2] for e in self.events if e[1] == name]


def test_the_role_names_its_diffusers_and_ties_each_to_a_tank(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert rig.role.actuators() == {
        "pumps": [], "diffusers": ["diffuser_1", "diffuser_2", "diffuser_3", "diffuser_4"]}
    assert rig.role.safety_defaults() == {
        f"diffuser_{n}": {"tank_input": f"tank_switch_{2 - n % 2}"} for n in range(1, 5)}
    assert rig.safety.outputs() == {f"diffuser_{n}": 0 for n in range(1, 5)}


def test_diffuse_runs_only_once_the_arm_switch_settled_closed(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ok, detail = rig.cmd("diffuse", channel=1, duty_pct=50, seconds=30)
    assert not ok and detail == "refused: payload disarmed (armed, not read yet)"
    now = rig.clock.ms  # the command sampled the switch: closed since now
    rig.role.poll_arm(now + 99)
    assert rig.role.armed is None, "closed, but not yet for ARM_DEBOUNCE_MS"
    rig.role.poll_arm(now + 100)
    assert rig.role.armed is True
    assert ("actuator", "arm_switch", "armed", "arm switch") in rig.events
    ok, detail = rig.cmd("diffuse", channel=1, duty_pct=50, seconds=30)
    assert ok and detail == "diffuser_1 at 50 % for 30 s", detail
    rig.run(2)  # the ramp: 50 %/s
    assert rig.world_duty(1) == pytest.approx(50, abs=0.01)
    rig.run(29)
    assert rig.world_duty(1) == 0, "the safety layer ends the run after 30 s"
    assert rig.states("diffuser_1") == ["refused", "on", "off"]


def test_duty_is_capped_and_a_channel_the_board_lacks_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path, safety={"diffusers": {"diffuser_2": {"max_duty_pct": 30}}})
    rig.run(0.4)
    ok, detail = rig.cmd("diffuse", channel=2, duty_pct=90, seconds=10)
    assert ok and "duty capped by max_duty_pct=30" in detail
    rig.run(3)
    assert rig.world_duty(2) == pytest.approx(30, abs=0.01)
    assert rig.cmd("diffuse", channel=5, duty_pct=10, seconds=5) == (
        False, "this payload has no diffuser channel 5 (it has 1, 2, 3, 4)")


def test_disarming_stops_the_diffusers_at_the_next_tick_and_refuses_more(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(0.4)
    assert rig.cmd("diffuse", channel=1, duty_pct=40, seconds=60)[0]
    assert rig.cmd("diffuse", channel=2, duty_pct=40, seconds=60)[0]
    rig.run(1)
    emu.get().set_world(armed=False)
    rig.run(0.2)  # one control tick
    assert rig.world_duty(1) == rig.world_duty(2) == 0
    assert rig.safety.outputs()["diffuser_1"] == 0
    assert ("actuator", "diffuser_1", "stopped",
            "stopped: payload disarmed (armed)") in rig.events
    assert rig.cmd("diffuse", channel=1, duty_pct=40, seconds=60) == (
        False, "refused: payload disarmed (armed)")
    # Re-armed: nothing restarts by itself.
    emu.get().set_world(armed=True)
    rig.run(1)
    assert rig.role.armed and rig.world_duty(1) == 0


def test_a_board_without_an_arm_switch_counts_as_armed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, arm_pin=None)
    rig.run(0.2)
    assert rig.role.armed is True
    assert rig.cmd("diffuse", channel=3, duty_pct=20, seconds=5)[0]
    assert not [e for e in rig.events if e[1] == "arm_switch"]


def test_a_configured_armed_input_name_is_the_one_fed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, safety={"diffusers": {
        n: {"armed_input": "fc_armed"} for n in ("diffuser_1", "diffuser_2", "diffuser_3",
                                                 "diffuser_4")}})
    rig.run(0.4)
    assert rig.cmd("diffuse", channel=1, duty_pct=20, seconds=5)[0]


def test_an_empty_tank_stops_its_diffusers_and_refuses_more(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(0.4)
    assert rig.cmd("diffuse", channel=1, duty_pct=60, seconds=60)[0]
    assert rig.cmd("diffuse", channel=2, duty_pct=60, seconds=60)[0]
    rig.run(1)
    rig.safety.set_input("tank_switch_1", False)  # what the node does with tank_ok_1 = 0
    assert rig.world_duty(1) == 0 and rig.world_duty(2) > 0, "tank 2 feeds diffuser_2"
    assert rig.cmd("diffuse", channel=3, duty_pct=60, seconds=60) == (
        False, "refused: tank empty (tank_switch_1)")
    assert rig.cmd("setpoint", channel=1, target=200.0, quantity="voc_index") == (
        False, "refused: diffuser_1 may not run now (tank empty)")


def test_estop_stops_everything_cancels_loops_and_refuses_setpoints(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(0.4)
    assert rig.cmd("diffuse", channel=1, duty_pct=60, seconds=60)[0]
    ok, _ = rig.cmd("setpoint", channel=2, target=200.0, quantity="voc_index")
    assert ok and 2 in rig.role.loops
    rig.run(1)
    rig.safety.estop("cmd x")
    assert rig.safety.outputs()["diffuser_1"] == 0 and rig.world_duty(1) == 0
    assert rig.role.loops == {}
    assert ("actuator", "aroma_2", "off", "stopped: e-stop (cmd x)") in rig.events
    assert rig.cmd("setpoint", channel=2, target=200.0, quantity="voc_index") == (
        False, "refused: e-stop latched (cmd x); reset it first")
    rig.safety.reset_estop("cmd y")
    rig.role.sample("voc_index", 100)
    rig.run(2)
    assert rig.world_duty(2) == 0, "after a reset nothing restarts until asked"


def test_safe_mode_cancels_loops(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(0.4)
    assert rig.cmd("setpoint", channel=1, target=150.0, quantity="voc_index")[0]
    rig.safety.disable("safe mode: 3 unexplained resets")
    assert rig.role.loops == {}
    assert rig.cmd("setpoint", channel=1, target=150.0, quantity="voc_index") == (
        False, "refused: safe mode: 3 unexplained resets")


def test_setpoint_checks_target_and_sensor_and_none_stops(tmp_path: Path) -> None:
    rig = Rig(tmp_path, chips=("sht4x", "sgp40"))
    rig.run(0.4)
    ok, detail = rig.cmd("setpoint", channel=1, target=2.0, quantity="gas_ratio")
    assert not ok and detail == "refused: gas_ratio needs the BME680, this payload has none"
    ok, detail = rig.cmd("setpoint", channel=1, target=180.0, quantity="voc_index")
    assert ok and detail == "aroma_1 holding voc_index at 180 with diffuser_1", detail
    rig.role.sample("voc_index", 100)
    assert rig.safety.outputs()["diffuser_1"] > 0
    assert rig.cmd("setpoint", channel=1, target=None, quantity="voc_index") == (
        True, "aroma_1 off, diffuser_1 off")
    assert rig.safety.outputs()["diffuser_1"] == 0 and rig.role.loops == {}
    assert rig.cmd("setpoint", channel=1, target=0, quantity="voc_index") == (
        True, "aroma_1 was not running")


def test_a_diffuse_command_takes_the_channel_over_from_its_loop(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(0.4)
    assert rig.cmd("setpoint", channel=1, target=300.0, quantity="voc_index")[0]
    rig.role.sample("voc_index", 100)
    ok, detail = rig.cmd("diffuse", channel=1, duty_pct=10, seconds=20)
    assert ok and detail == "diffuser_1 at 10 % for 20 s"
    assert rig.role.loops == {}
    rig.role.sample("voc_index", 100)
    assert rig.safety.outputs()["diffuser_1"] == 10


def test_a_loop_without_readings_stops_its_diffuser(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(0.4)
    assert rig.cmd("setpoint", channel=1, target=300.0, quantity="voc_index")[0]
    for _ in range(5):
        rig.role.sample("voc_index", 100)
        rig.run(1)
    assert rig.safety.outputs()["diffuser_1"] > 0
    rig.run(29)  # the loop holds its duty for stale_s (30 s) without a reading, renewing
    assert rig.safety.outputs()["diffuser_1"] > 0
    rig.run(2)
    assert rig.safety.outputs()["diffuser_1"] == 0
    assert rig.role.loops[1].stale


def test_a_stalled_node_loop_cannot_hold_a_run_past_loop_run_s(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(0.4)
    assert rig.cmd("setpoint", channel=1, target=300.0, quantity="voc_index")[0]
    rig.role.sample("voc_index", 100)
    for _ in range(LOOP_RUN_S * 5 + 1):  # only the safety layer ticks: the role is stuck
        rig.clock.advance(0.2)
        rig.safety.tick()
    assert rig.safety.outputs()["diffuser_1"] == 0


def test_max_on_s_and_min_off_s_pause_the_loop_with_a_bounded_number_of_retries(
        tmp_path: Path) -> None:
    rig = Rig(tmp_path, safety={"diffusers": {"diffuser_1": {"max_on_s": 30, "min_off_s": 20}}})
    rig.run(0.4)
    assert rig.cmd("setpoint", channel=1, target=300.0, quantity="voc_index")[0]
    on_at: list[float] = []
    for second in range(120):
        rig.role.sample("voc_index", 100)
        rig.run(1)
        if rig.safety.outputs()["diffuser_1"] > 0:
            on_at.append(second)
    states = rig.states("diffuser_1")
    assert "stopped" in states, "max_on_s ended the loop's run"
    # Runs of at most 30 s, gaps of at least 20 s, and the loop started again each time.
    runs = 1 + sum(1 for a, b in itertools.pairwise(on_at) if b - a > 1)
    assert runs >= 2
    assert states.count("refused") <= 8, states
    assert max(rig.role.loops[1].pid.integral, 0) <= 80


def test_the_tap_sees_every_sample_the_filters_hold_back(tmp_path: Path) -> None:
    seen: list[dict[str, float]] = []

    class Chip:
        def __init__(self) -> None:
            self.n = 0

        async def read(self) -> dict[str, float]:
            self.n += 1
            return {"voc_index": 100 + self.n % 2}

    reported: list[dict[str, float]] = []
    comp = Component("sgp40", Tap(Chip(), seen.append), interval_s=1,
                     filters={"voc_index": [{"delta": 5, "heartbeat_s": 3600}]},
                     on_report=lambda name, values: reported.append(values),
                     clock=FakeClock(0))
    import asyncio

    for n in range(4):
        asyncio.run(comp.run_once(1000 * (n + 1)))
    assert len(seen) == 4 and len(reported) == 1
