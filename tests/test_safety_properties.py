"""The safety layer's invariants (issue 5) over random sequences of requests from every source,
interlock inputs, comms loss, e-stops and resets, reboots (a new Safety from the state file,
sometimes damaged), wall-clock jumps and time passing: pump on-time never exceeds max_on_s;
the water pumped per budget day never exceeds its budget; diffuser duty never exceeds its cap
and is 0 whenever its tank is empty, the payload disarmed or the e-stop latched; min_off_s
holds; everything not held by a local request is off failsafe_s after the gateway is lost;
boot state is off.

The model watches what the hardware is told (the `apply` callback) against true time, and
ticks the layer at every deadline it announces (next_due_ms) and at least every TICK_MS, as the
node's loop does."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sensornode.safety import Safety, parse_limits
from sensornode.timesync import RTC_PLAUSIBLE_S

LIMITS = parse_limits({
    "failsafe_s": 10,
    "pumps": {"pump": {"max_on_s": 20, "min_off_s": 5, "flow_l_per_min": 6,
                       "daily_budget_l": 3, "dry_input": "water"}},
    "diffusers": {
        "diffuser_1": {"max_duty_pct": 70, "max_on_s": 15, "min_off_s": 3,
                       "tank_input": "tank_switch_1"},
        "diffuser_2": {"max_duty_pct": 40, "max_on_s": 25, "min_off_s": 0},
    },
})
PUMPS = LIMITS["pumps"]
DIFFUSERS = LIMITS["diffusers"]
ACTUATORS = {**PUMPS, **DIFFUSERS}
INPUTS = ("water", "tank_switch_1", "armed")
TICK_MS = 1000
DAY = 86400
START_WALL = 1794398400 - 120  # two minutes before a UTC midnight

sources = st.sampled_from(["cmd c1", "rule dry", "local bed", "local aroma", "show s", "boot",
                           "gateway"])
values = st.sampled_from([0, 1, 10, 50, 70.5, 100, 0.5, -1])


class SafetyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="safety-prop-"))
        self.path = self.dir / "safety.json"
        self.t = 0  # true time, ms
        self.wall_offset = START_WALL * 1000  # wall ms = t + offset
        self.wall_state = "known"  # or "unknown" (None) or "unset" (an RTC counting from 2000)
        self.hardware = {name: 0.0 for name in ACTUATORS}
        self.on_since: dict[str, int] = {}
        self.off_at: dict[str, int] = {}
        self.holder: dict[str, str] = {}
        self.inputs: dict[str, bool] = {}
        self.latched = False
        self.disabled = False
        self.down_since: int | None = 0
        self.day: int | None = None  # budget day: the latest wall day seen
        self.flowed = 0  # ml * 60000 pumped in the budget day
        self.safety = self.boot()
        self.all_clear()

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- the world -----------------------------------------------------------------------

    def wall(self) -> float | None:
        if self.wall_state == "unknown":
            return None
        if self.wall_state == "unset":
            return 946684800 + self.t / 1000  # a cold RTC, counting from 2000
        return (self.t + self.wall_offset) / 1000

    def boot(self, mono_base: int = 0) -> Safety:
        self.boot_t = self.t
        self.mono_base = mono_base
        self.observe_day()
        safety = Safety(LIMITS, str(self.path), on_event=self.on_event, apply=self.apply,
                        mono=self.mono, wall=self.wall)
        assert safety.outputs() == {name: 0 for name in ACTUATORS}
        assert all(value == 0 for value in self.hardware.values())
        return safety

    def mono(self) -> int:
        return self.t - self.boot_t + self.mono_base

    def on_event(self, kind: str, name: str, state: str, detail: str) -> None:
        assert kind in ("actuator", "fault") and detail
        if state in ("refused", "stopped"):
            assert detail.count("refused: ") + detail.count("stopped: ") == 1

    def apply(self, name: str, value: float) -> None:
        before = self.hardware[name]
        self.hardware[name] = value
        if before == 0 and value != 0:
            self.on_since[name] = self.t
            if name in self.off_at:
                assert self.t - self.off_at[name] >= ACTUATORS[name]["min_off_s"] * 1000
        elif before != 0 and value == 0:
            self.switched_off(name)

    def switched_off(self, name: str) -> None:
        assert self.t - self.on_since.pop(name) <= ACTUATORS[name]["max_on_s"] * 1000
        self.off_at[name] = self.t
        self.holder.pop(name, None)

    def observe_day(self) -> None:
        wall = self.wall()
        if wall is None or wall < RTC_PLAUSIBLE_S:
            return
        day = int(wall // DAY)
        if self.day is None:
            self.day = day
        elif day > self.day:
            self.day, self.flowed = day, 0

    def pass_time(self, to: int) -> None:
        """The world runs from self.t to `to` with the outputs as they are."""
        if self.hardware["pump"]:
            self.flowed += (to - self.t) * int(PUMPS["pump"]["flow_l_per_min"] * 1000)
        self.t = to
        self.observe_day()

    # ---- what happens --------------------------------------------------------------------

    @rule(actuator=st.sampled_from(list(ACTUATORS)), level=st.sampled_from([1, 1, 0, 30, 70, 100]),
          source=st.sampled_from(["cmd c1", "rule dry", "local bed", "local aroma", "show s"]),
          seconds=st.integers(1, 40), expiry=st.none() | st.integers(-5, 30))
    def request(self, actuator: str, level: int, source: str, seconds: int,
                expiry: int | None) -> None:
        value = (1 if level else 0) if actuator in PUMPS else level
        self.ask(actuator, value, source, seconds, expiry)

    @rule(actuator=st.sampled_from([*ACTUATORS, "pump_9"]), value=values, source=sources,
          seconds=st.integers(-1, 40), expiry=st.none() | st.integers(-10, 30))
    def odd_request(self, actuator: str, value: float, source: str, seconds: int,
                    expiry: int | None) -> None:
        self.ask(actuator, value, source, seconds, expiry)

    def ask(self, actuator: str, value: float, source: str, seconds: int,
            expiry: int | None) -> None:
        wall = self.wall()
        expires_at = None if expiry is None else (wall or START_WALL) + expiry
        ok, reason = self.safety.request(actuator, value, source, seconds, expires_at)
        assert reason.startswith("refused: ") != ok, reason
        if ok and value:
            self.holder[actuator] = source

    @rule()
    def all_clear(self) -> None:
        """Gateway back, water and tank full, payload armed, e-stop reset."""
        self.comms(True)
        for name in INPUTS:
            self.set_input(name, True)
        self.reset_estop()
        self.safe_mode(False)

    @rule(name=st.sampled_from(INPUTS), ok=st.sampled_from([True, True, False]))
    def set_input(self, name: str, ok: bool) -> None:
        self.inputs[name] = ok
        self.safety.set_input(name, ok)

    @rule(up=st.sampled_from([True, False, False]))
    def comms(self, up: bool) -> None:
        if up:
            self.down_since = None
        elif self.down_since is None:
            self.down_since = self.t
        self.safety.comms(up)

    @rule(ms=st.integers(0, 20000))
    def outage(self, ms: int) -> None:
        """The gateway goes away for a while."""
        self.comms(False)
        self.advance(ms)

    @rule(what=st.sampled_from(["estop", "estop", "safe mode", "normal mode"]),
          source=sources)
    def trouble(self, what: str, source: str) -> None:
        if what == "estop":
            self.estop(source)
        else:
            self.safe_mode(what == "safe mode")

    def estop(self, source: str) -> None:
        self.latched = True
        self.safety.estop(source)

    def reset_estop(self) -> None:
        self.latched = False
        assert self.safety.reset_estop("cmd r")[0]

    def safe_mode(self, on: bool) -> None:
        self.disabled = on
        if on:
            self.safety.disable("safe mode: test")
        else:
            self.safety.enable("cmd clear")

    @rule(ms=st.integers(1, 3000))
    def moment(self, ms: int) -> None:
        self.advance(ms)

    @rule(ms=st.integers(1, 30000))
    def advance(self, ms: int) -> None:
        if ms == 0:
            return
        end = self.t + ms
        for _ in range(ms // TICK_MS + 2 * len(ACTUATORS) + 2):
            if self.t >= end:
                break
            step = min(end, self.t + TICK_MS)
            due = self.safety.next_due_ms()
            if due is not None:
                due_t = due - self.mono_base + self.boot_t
                assert due_t >= self.t  # nothing overdue after a tick
                step = min(step, max(due_t, self.t + 1))
            self.pass_time(step)
            self.safety.tick()
        assert self.t == end

    @rule(seconds=st.integers(-3 * DAY, 3 * DAY) | st.integers(-120, 120))
    def jump_wall_clock(self, seconds: int) -> None:
        self.wall_offset += seconds * 1000
        self.observe_day()
        self.safety.tick()

    @rule(state=st.sampled_from(["known", "unknown", "unset"]))
    def wall_clock(self, state: str) -> None:
        self.wall_state = state
        self.observe_day()
        self.safety.tick()

    @rule(down_ms=st.integers(0, 120000), mono_base=st.integers(0, 2**40),
          damage=st.integers(0, 9).map(lambda n: n == 0), cut=st.booleans())
    def reboot(self, down_ms: int, mono_base: int, damage: bool, cut: bool) -> None:
        for name in ACTUATORS:  # the power goes, and the outputs with it
            if self.hardware[name]:
                self.hardware[name] = 0
                self.switched_off(name)
        self.pass_time(self.t + down_ms)
        self.disabled = False  # the boot guard, not the layer, keeps safe mode across reboots
        self.off_at = {}  # min_off_s across a reboot rests on the wall clock: not checked
        self.inputs = {}
        self.down_since = self.t
        if cut:
            (self.dir / "safety.json.tmp").write_text('{"v": 1, "da')  # torn write
        if damage and self.path.exists():
            self.path.write_bytes(self.path.read_bytes()[:-7])
            self.latched = True
            # The damaged file took the budget day's high-water mark with it.
            self.day, self.flowed = None, 0
        self.safety = self.boot(mono_base)
        assert bool(self.safety.estop_by) == self.latched

    # ---- what must always hold ----------------------------------------------------------

    @invariant()
    def outputs_are_what_the_hardware_shows(self) -> None:
        assert self.safety.outputs() == self.hardware

    @invariant()
    def runs_stay_within_max_on(self) -> None:
        for name, since in self.on_since.items():
            assert self.t - since <= ACTUATORS[name]["max_on_s"] * 1000

    @invariant()
    def water_stays_within_the_budget(self) -> None:
        assert self.flowed <= PUMPS["pump"]["daily_budget_l"] * 1000 * 60000

    @invariant()
    def diffusers_obey_cap_tank_arm_and_estop(self) -> None:
        for name, lim in DIFFUSERS.items():
            duty = self.hardware[name]
            assert 0 <= duty <= lim["max_duty_pct"]
            if self.latched or not self.inputs.get("armed"):
                assert duty == 0
            if lim["tank_input"] and not self.inputs.get(lim["tank_input"]):
                assert duty == 0

    @invariant()
    def pumps_obey_dry_input_and_estop(self) -> None:
        if self.latched or not self.inputs.get("water"):
            assert self.hardware["pump"] == 0
        assert self.hardware["pump"] in (0, 1)

    @invariant()
    def nothing_runs_in_safe_mode(self) -> None:
        if self.disabled:
            assert not any(self.hardware.values())

    @invariant()
    def failsafe_leaves_only_local_runs(self) -> None:
        if self.down_since is None or self.t - self.down_since < LIMITS["failsafe_s"] * 1000:
            return
        for name, value in self.hardware.items():
            if value:
                assert self.holder[name].startswith("local "), (name, self.holder)


SafetyMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_safety_invariants = SafetyMachine.TestCase
