"""The node's safety layer by example: every limit and interlock refuses or stops with an event
naming it, the failsafe, the latching e-stop, the daily water budget across clock jumps and
reboots, the state file (saved only on change, damaged files), and the limits' validation.
Rig and SCENARIOS are shared with the property tests and the MicroPython run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sensornode.safety import Safety, SafetyConfigError, parse_limits

Event = tuple[str, str, str, str]

NOON = 1794312000  # 2026-11-10 12:00 UTC
DAY = 86400
CONFIG: dict[str, Any] = {
    "failsafe_s": 30,
    "pumps": {
        "pump": {"max_on_s": 600, "min_off_s": 60, "flow_l_per_min": 2.0,
                 "daily_budget_l": 10, "dry_input": "water"},
    },
    "diffusers": {
        "diffuser_1": {"max_duty_pct": 80, "max_on_s": 300, "min_off_s": 10,
                       "tank_input": "tank_switch_1"},
    },
}
LIMITS = parse_limits(CONFIG)


class Rig:
    """A Safety on fake clocks (monotonic ms restart at each boot, a wall clock that can jump
    or be unknown), recording its events and what the hardware was told."""

    def __init__(self, path: Path, limits: dict[str, Any] = LIMITS, wall: float | None = NOON,
                 ready: bool = True) -> None:
        self.path = path
        self.limits = limits
        self.mono = 0
        self.wall = wall
        self.events: list[Event] = []
        self.hardware: dict[str, float] = {}
        self.applied: list[tuple[str, float]] = []
        self.safety = self.boot()
        if ready:
            self.ready()

    def ready(self) -> None:
        """Gateway up, water present, tank full, payload armed."""
        self.safety.comms(True)
        for name in ("water", "tank_switch_1", "armed"):
            self.safety.set_input(name, True)

    def boot(self, mono: int = 0) -> Safety:
        self.mono = mono
        self.safety = Safety(self.limits, str(self.path), on_event=self.on_event,
                             apply=self.apply, mono=lambda: self.mono, wall=lambda: self.wall)
        return self.safety

    def on_event(self, kind: str, name: str, state: str, detail: str) -> None:
        self.events.append((kind, name, state, detail))

    def apply(self, name: str, value: float) -> None:
        self.hardware[name] = value
        self.applied.append((name, value))

    def advance(self, seconds: float) -> dict[str, float]:
        self.mono += int(seconds * 1000)
        if self.wall is not None:
            self.wall += seconds
        return self.safety.tick()

    def take_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path / "safety.json")


def test_boot_state_is_all_off_and_the_hardware_is_told_so(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "safety.json", ready=False)
    assert rig.safety.outputs() == {"pump": 0, "diffuser_1": 0}
    assert rig.applied == [("diffuser_1", 0), ("pump", 0)]  # in name order on every port
    assert rig.events == []


def test_a_pump_run_ends_as_asked(rig: Rig) -> None:
    assert rig.safety.request("pump", 1, "cmd c1", 30) == (True, "pump on for 30 s")
    assert rig.hardware["pump"] == 1
    assert rig.advance(29.9) == {}
    assert rig.advance(0.1) == {"pump": 0}
    assert rig.take_events() == [
        ("actuator", "pump", "on", "cmd c1: pump on for 30 s"),
        ("actuator", "pump", "off", "cmd c1: done, 30 s as asked"),
    ]


def test_a_run_longer_than_max_on_is_cut_to_it_and_stopped_there(rig: Rig) -> None:
    ok, reason = rig.safety.request("diffuser_1", 50, "show sunset", 1000)
    assert ok and reason == "diffuser_1 at 50 % for 300 s, capped by max_on_s=300"
    rig.advance(299)
    assert rig.safety.outputs()["diffuser_1"] == 50
    assert rig.advance(1) == {"diffuser_1": 0}
    assert rig.events[-1] == ("actuator", "diffuser_1", "stopped", "stopped: max_on_s=300 reached")


def test_asking_again_never_extends_a_run_past_max_on(rig: Rig) -> None:
    rig.safety.request("diffuser_1", 40, "cmd a", 200)
    rig.advance(150)
    ok, reason = rig.safety.request("diffuser_1", 60, "cmd b", 200)
    assert ok and reason == "diffuser_1 at 60 % for 150 s, capped by max_on_s=300"
    rig.advance(149)
    assert rig.safety.outputs()["diffuser_1"] == 60
    rig.advance(1)
    assert rig.safety.outputs()["diffuser_1"] == 0
    assert rig.safety.request("diffuser_1", 60, "cmd c", 10) == (
        False, "refused: min_off_s=10, off only 0 s ago")


def test_min_off_refuses_a_restart_until_it_has_passed(rig: Rig) -> None:
    rig.safety.request("pump", 1, "cmd a", 10)
    rig.advance(5)
    assert rig.safety.request("pump", 0, "cmd b", 0) == (True, "pump off")
    rig.advance(59)
    assert rig.safety.request("pump", 1, "local bed", 10) == (
        False, "refused: min_off_s=60, off only 59 s ago")
    assert rig.events[-1] == (
        "actuator", "pump", "refused", "local bed: refused: min_off_s=60, off only 59 s ago")
    rig.advance(1)
    assert rig.safety.request("pump", 1, "local bed", 10)[0]


def test_diffuser_duty_is_capped(rig: Rig) -> None:
    ok, reason = rig.safety.request("diffuser_1", 100, "cmd a", 10)
    assert ok and reason == "diffuser_1 at 80 % for 10 s, duty capped by max_duty_pct=80"
    assert rig.hardware["diffuser_1"] == 80


def test_an_empty_tank_refuses_and_stops_its_diffuser(rig: Rig) -> None:
    rig.safety.set_input("tank_switch_1", False)
    assert rig.safety.request("diffuser_1", 30, "cmd a", 60) == (
        False, "refused: tank empty (tank_switch_1)")
    rig.safety.set_input("tank_switch_1", True)
    assert rig.safety.request("diffuser_1", 30, "cmd a", 60)[0]
    assert rig.safety.set_input("tank_switch_1", False) == {"diffuser_1": 0}
    assert rig.events[-1] == (
        "actuator", "diffuser_1", "stopped", "stopped: tank empty (tank_switch_1)")


def test_diffusers_run_only_while_the_payload_is_armed(rig: Rig) -> None:
    rig.safety.request("diffuser_1", 30, "cmd a", 60)
    assert rig.safety.set_input("armed", False) == {"diffuser_1": 0}
    assert rig.events[-1][2:] == ("stopped", "stopped: payload disarmed (armed)")
    assert rig.safety.request("diffuser_1", 30, "cmd b", 60) == (
        False, "refused: payload disarmed (armed)")


def test_an_input_never_read_counts_as_forbidding(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "safety.json", ready=False)
    rig.safety.comms(True)
    assert rig.safety.request("pump", 1, "cmd a", 10) == (
        False, "refused: pump dry (water, not read yet)")
    rig.safety.set_input("water", True)
    assert rig.safety.request("pump", 1, "cmd a", 10)[0]
    assert rig.safety.set_input("water", False) == {"pump": 0}
    assert rig.events[-1][3] == "stopped: pump dry (water)"


def test_stale_commands_are_refused_by_the_nodes_clock(rig: Rig) -> None:
    assert rig.safety.request("pump", 1, "cmd a", 10, expires_at=NOON - 5) == (
        False, f"refused: stale, expired 5 s ago (expires_at={NOON - 5})")
    assert rig.safety.request("pump", 1, "cmd b", 10, expires_at=NOON + 5)[0]
    rig.safety.request("pump", 0, "cmd b", 0)
    rig.wall = None  # the clock is not known: an expiry cannot be checked
    rig.advance(60)
    ok, reason = rig.safety.request("pump", 1, "cmd c", 10, expires_at=NOON + 500)
    assert not ok and reason.startswith("refused: cannot tell if stale")


def test_estop_latches_everything_off_until_reset_and_survives_a_reboot(rig: Rig) -> None:
    rig.safety.request("pump", 1, "cmd a", 100)
    rig.safety.request("diffuser_1", 50, "show s", 100)
    assert rig.safety.estop("cmd e1") == {"diffuser_1": 0, "pump": 0}
    assert rig.events[-3:] == [
        ("actuator", "diffuser_1", "stopped", "stopped: e-stop (cmd e1)"),
        ("actuator", "pump", "stopped", "stopped: e-stop (cmd e1)"),
        ("actuator", "estop", "latched", "cmd e1"),
    ]
    rig.advance(100)
    for source in ("cmd b", "local bed", "rule dry", "show s"):
        assert rig.safety.request("pump", 1, source, 10) == (
            False, "refused: e-stop latched (cmd e1); reset it first")
    assert rig.safety.request("pump", 0, "cmd c", 0) == (True, "pump already off")
    rig.boot()
    rig.ready()
    assert rig.safety.estop_by == "cmd e1"
    assert not rig.safety.request("diffuser_1", 10, "cmd d", 10)[0]
    assert rig.safety.reset_estop("cmd r1") == (True, "e-stop reset (latched by cmd e1)")
    assert rig.safety.outputs() == {"pump": 0, "diffuser_1": 0}  # nothing comes back on
    assert rig.safety.request("diffuser_1", 10, "cmd d", 10)[0]


def test_failsafe_stops_what_the_gateway_started_but_not_a_bounded_local_run(rig: Rig) -> None:
    rig.safety.request("diffuser_1", 50, "cmd a", 200)
    rig.safety.request("pump", 1, "local bed-1", 200)
    rig.safety.comms(False)
    assert rig.safety.next_due_ms() == rig.mono + 30000
    assert rig.advance(29.9) == {}
    assert rig.advance(0.1) == {"diffuser_1": 0}
    assert rig.events[-1] == (
        "actuator", "diffuser_1", "stopped", "stopped: failsafe_s=30, gateway unreachable for 30 s")
    assert rig.safety.outputs()["pump"] == 1
    assert rig.safety.request("diffuser_1", 50, "rule aroma", 60) == (
        False, "refused: failsafe_s=30, gateway unreachable for 30 s; only local requests run")
    rig.advance(170)
    assert rig.events[-1] == ("actuator", "pump", "off", "local bed-1: done, 200 s as asked")
    rig.safety.comms(True)
    assert rig.safety.request("diffuser_1", 50, "rule aroma", 60)[0]


def test_a_gateway_run_granted_while_offline_still_stops_at_the_failsafe(rig: Rig) -> None:
    rig.safety.comms(False)
    rig.advance(10)
    ok, reason = rig.safety.request("pump", 1, "rule dry", 100)
    assert ok and reason == "pump on for 100 s, failsafe in 20 s unless the gateway is back"
    rig.advance(20)
    assert rig.safety.outputs()["pump"] == 0


def test_the_daily_budget_caps_runs_and_refunds_what_did_not_flow(rig: Rig) -> None:
    # 10 l at 2 l/min is 300 s of pumping a day.
    ok, reason = rig.safety.request("pump", 1, "cmd a", 200)
    assert ok and rig.safety.water_used_ml() == {"pump": 6667}  # charged at the start
    rig.advance(100)
    rig.safety.request("pump", 0, "cmd b", 0)
    assert rig.safety.water_used_ml() == {"pump": 3334}
    rig.advance(60)
    ok, reason = rig.safety.request("pump", 1, "cmd c", 600)
    assert ok and reason == "pump on for 199 s, capped by daily_budget_l=10"
    rig.advance(199.98)
    assert rig.safety.outputs()["pump"] == 0
    assert rig.events[-1][2:] == ("stopped", "stopped: daily_budget_l=10 reached")
    assert rig.safety.water_used_ml() == {"pump": 10000}
    rig.advance(60)
    assert rig.safety.request("pump", 1, "local bed", 10) == (
        False, "refused: daily_budget_l=10 used up (10000 ml today)")


def test_the_budget_day_resets_forwards_only(rig: Rig) -> None:
    rig.safety.request("pump", 1, "cmd a", 300)
    rig.advance(300)
    rig.advance(60)
    assert rig.safety.water_used_ml() == {"pump": 10000}
    rig.wall = NOON - DAY  # stepped back a day: the same budget day goes on
    rig.advance(1)
    assert not rig.safety.request("pump", 1, "cmd b", 10)[0]
    rig.wall = NOON + 300  # and back: still the same day
    rig.advance(1)
    assert not rig.safety.request("pump", 1, "cmd b", 10)[0]
    rig.wall = NOON + 2 * DAY  # forwards by days: a new budget
    rig.advance(1)
    assert rig.safety.water_used_ml() == {"pump": 0}
    assert rig.safety.request("pump", 1, "cmd b", 10)[0]


def test_a_run_across_midnight_counts_its_rest_against_the_new_day(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "safety.json", wall=NOON + 11 * 3600 + 58 * 60)  # 23:58
    rig.safety.request("pump", 1, "cmd a", 600)  # capped to 300 s by the budget
    rig.advance(60)
    assert rig.safety.water_used_ml() == {"pump": 10000}
    rig.advance(120)  # 00:01, 120 s left: 4 l
    assert rig.safety.water_used_ml() == {"pump": 4000}
    rig.advance(120)
    assert rig.safety.water_used_ml() == {"pump": 4000}
    rig.advance(60)
    ok, reason = rig.safety.request("pump", 1, "cmd b", 600)
    assert ok and reason == "pump on for 180 s, capped by daily_budget_l=10"


def test_a_reboot_mid_run_never_resumes_it_and_counts_it_whole(rig: Rig) -> None:
    rig.safety.request("pump", 1, "cmd a", 120)
    rig.advance(30)
    rig.wall = NOON + 40  # power cut, back 10 s later
    rig.boot(mono=5)
    assert rig.safety.outputs() == {"pump": 0, "diffuser_1": 0}
    assert rig.applied[-2:] == [("diffuser_1", 0), ("pump", 0)]
    assert rig.events[-1] == ("actuator", "pump", "stopped",
                              "stopped: interrupted by a reboot, not resumed (120 s allowed)")
    assert rig.safety.water_used_ml() == {"pump": 4000}
    rig.ready()
    assert rig.safety.request("pump", 1, "cmd b", 10) == (
        False, "refused: min_off_s=60, off only 0 s ago")
    rig.advance(60)
    assert rig.safety.request("pump", 1, "cmd b", 300) == (
        True, "pump on for 180 s, capped by daily_budget_l=10")


def test_min_off_survives_a_reboot_by_the_wall_clock(rig: Rig) -> None:
    rig.safety.request("pump", 1, "cmd a", 10)
    rig.advance(10)
    rig.wall = NOON + 40
    rig.boot()
    rig.ready()
    assert rig.safety.request("pump", 1, "cmd b", 10) == (
        False, "refused: min_off_s=60, off only 30 s ago")


def test_an_interrupted_run_that_may_have_crossed_midnight_counts_in_the_new_day(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path / "safety.json", wall=NOON + 11 * 3600 + 58 * 60)  # 23:58
    rig.safety.request("pump", 1, "cmd a", 240)
    rig.advance(60)
    rig.wall = NOON + 12 * 3600 + 5 * 60  # rebooted at 00:05: how much flowed after 00:00?
    rig.boot()
    assert rig.safety.water_used_ml() == {"pump": 8000}  # all it was allowed, to be safe


def test_the_state_file_is_written_only_when_something_changes(rig: Rig) -> None:
    saves = rig.safety.saves
    stat = os.stat(rig.path)
    for _ in range(500):
        rig.advance(0.5)
    rig.safety.comms(False)
    rig.safety.comms(True)
    assert rig.safety.saves == saves
    assert os.stat(rig.path).st_mtime_ns == stat.st_mtime_ns
    rig.safety.request("pump", 1, "cmd a", 10)
    assert rig.safety.saves == saves + 1
    saved = json.loads(rig.path.read_text())
    assert saved["act"]["pump"] == {"run": True, "start": NOON + 250, "allowed_ms": 10000,
                                    "off": None, "used_ml": 334}
    assert not (rig.path.parent / "safety.json.tmp").exists()


@pytest.mark.parametrize("damage", ['{"v": 1, "day": ', "[]", '{"v": 1}', "\x00\xff" * 8])
def test_a_damaged_state_file_boots_safe_with_the_estop_latched(
    tmp_path: Path, damage: str
) -> None:
    (tmp_path / "safety.json").write_text(damage)
    rig = Rig(tmp_path / "safety.json")
    assert rig.safety.outputs() == {"pump": 0, "diffuser_1": 0}
    kind, name, state, detail = rig.events[0]
    assert (kind, name, state) == ("fault", "safety", "damaged")
    assert detail.startswith("state file unreadable (")
    assert rig.safety.request("diffuser_1", 10, "cmd a", 10) == (
        False, "refused: e-stop latched (damaged state file); reset it first")
    rig.safety.reset_estop("cmd r")
    rig.advance(60)
    assert rig.safety.request("diffuser_1", 10, "cmd a", 10)[0]
    assert rig.safety.request("pump", 1, "cmd b", 10) == (
        False, "refused: daily_budget_l=10 used up (10000 ml today)")
    rig.wall = NOON + DAY
    rig.advance(1)
    assert rig.safety.request("pump", 1, "cmd b", 10)[0]


def test_a_state_file_that_cannot_be_written_refuses_to_switch_on(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "missing-dir" / "safety.json")
    assert rig.events[0][:3] == ("fault", "safety", "save_failed")
    ok, reason = rig.safety.request("pump", 1, "cmd a", 10)
    assert not ok and reason.startswith("refused: cannot save the safety state (")
    assert rig.safety.outputs()["pump"] == 0
    assert ("pump", 1) not in rig.applied


def test_requests_the_layer_cannot_take_are_refused_with_the_fix(rig: Rig) -> None:
    assert rig.safety.request("pump_9", 1, "cmd a", 10) == (
        False, "refused: no actuator 'pump_9'; this node has diffuser_1, pump")
    assert rig.safety.request("pump", 0.5, "cmd a", 10) == (
        False, "refused: value 0.5; pump takes 0 or 1")
    assert rig.safety.request("diffuser_1", 120, "cmd a", 10) == (
        False, "refused: value 120; diffuser_1 takes a duty from 0 to 100")
    assert rig.safety.request("pump", 1, "cmd a", 0) == (
        False, "refused: seconds must be a whole number of at least 1, got 0")
    assert rig.safety.request("pump", 1, "boot", 10) == (
        False, "refused: boot never switches anything on")
    assert rig.safety.request("pump", 1, "gateway", 10) == (
        False, "refused: unknown source 'gateway'; use cmd/rule/local/show <name>")
    assert rig.safety.outputs() == {"pump": 0, "diffuser_1": 0}
    assert [e[2] for e in rig.events[-6:]] == ["refused"] * 6


def test_safe_mode_disables_everything_until_enabled(rig: Rig) -> None:
    rig.safety.request("pump", 1, "local bed", 100)
    assert rig.safety.disable("safe mode: 3 unexplained resets") == {"pump": 0}
    assert rig.events[-2:] == [
        ("actuator", "pump", "stopped", "stopped: safe mode: 3 unexplained resets"),
        ("actuator", "safety", "disabled", "safe mode: 3 unexplained resets"),
    ]
    assert rig.safety.request("diffuser_1", 10, "cmd a", 10) == (
        False, "refused: safe mode: 3 unexplained resets")
    assert rig.safety.allowed_max("diffuser_1") == 0
    rig.safety.enable("cmd clear")
    assert rig.safety.allowed_max("diffuser_1") == 80
    assert rig.safety.request("diffuser_1", 10, "cmd a", 10)[0]


def test_allowed_max_is_the_clamp_for_a_closed_loop(rig: Rig) -> None:
    assert rig.safety.allowed_max("diffuser_1") == 80
    assert rig.safety.allowed_max("pump") == 1
    rig.safety.set_input("tank_switch_1", False)
    assert rig.safety.allowed_max("diffuser_1") == 0
    rig.safety.set_input("tank_switch_1", True)
    rig.safety.estop("local button")
    assert rig.safety.allowed_max("diffuser_1") == 0
    assert rig.safety.allowed_max("pump") == 0


def test_next_due_is_the_earliest_forced_change(rig: Rig) -> None:
    assert rig.safety.next_due_ms() is None
    rig.safety.request("pump", 1, "cmd a", 100)
    rig.safety.request("diffuser_1", 20, "local p", 50)
    assert rig.safety.next_due_ms() == rig.mono + 50000
    rig.safety.comms(False)
    rig.advance(1)
    assert rig.safety.next_due_ms() == rig.mono + 29000


# ---- limits ------------------------------------------------------------------------------------


def test_limits_get_defaults_for_every_actuator_the_board_has() -> None:
    limits = parse_limits({"pumps": {"pump": {"max_on_s": 120}}}, pumps=["pump"],
                          diffusers=["diffuser_1", "diffuser_2"])
    assert limits["failsafe_s"] == 60
    assert limits["pumps"]["pump"] == {"max_on_s": 120, "min_off_s": 60, "flow_l_per_min": 1.0,
                                       "daily_budget_l": 20, "dry_input": ""}
    assert sorted(limits["diffusers"]) == ["diffuser_1", "diffuser_2"]
    assert limits["diffusers"]["diffuser_2"]["armed_input"] == "armed"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"failsafe_s": 2}, "safety.failsafe_s: must be a whole number from 5 to 86400, got 2"),
        ({"failsafe": 60}, "safety.failsafe: unknown field; known fields here: failsafe_s, "
                           "pumps, diffusers"),
        ({"pumps": {"pump": {"max_on_s": 0}}},
         "safety.pumps.pump.max_on_s: must be a whole number from 1 to 3600, got 0"),
        ({"pumps": {"pump": {"flow_l_per_min": 0}}},
         "safety.pumps.pump.flow_l_per_min: must be a number from 0.01 to 1000, got 0"),
        ({"pumps": {"pump": {"max_on": 10}}}, "safety.pumps.pump.max_on: unknown field; known "
         "fields here: daily_budget_l, dry_input, flow_l_per_min, max_on_s, min_off_s"),
        ({"pumps": {"pump": {"dry_input": "Float!"}}}, "safety.pumps.pump.dry_input: must be "
         "empty (no interlock) or an input name"),
        ({"diffusers": {"diffuser_1": {"armed_input": ""}}},
         "safety.diffusers.diffuser_1.armed_input: must be an input name"),
        ({"diffusers": {"diffuser_1": {"max_duty_pct": 101}}},
         "safety.diffusers.diffuser_1.max_duty_pct: must be a number from 0 to 100, got 101"),
        ({"pumps": {"pump_2": {}}}, "safety.pumps.pump_2: this board has no such actuator; it "
         "has: pump"),
        ({"pumps": []}, "safety.pumps: must be an object of actuator name -> limits"),
        ("x", "safety: must be an object like"),
    ],
)
def test_bad_limits_name_the_field_and_the_fix(section: Any, message: str) -> None:
    with pytest.raises(SafetyConfigError) as raised:
        parse_limits(section, pumps=["pump"], diffusers=["diffuser_1"])
    assert message in str(raised.value)


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(SafetyConfigError) as raised:
        parse_limits({"failsafe_s": 0, "pumps": {"p": {"min_off_s": -1}},
                      "diffusers": {"p": {}}})
    assert str(raised.value).count(";") == 2
    assert "safety.diffusers.p: the name is taken by a pump" in str(raised.value)
