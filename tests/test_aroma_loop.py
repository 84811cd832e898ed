"""The aroma loop (firmware/sensornode/aroma.py) holding a target on the emulated drone world:
world_drone's aroma model driven through the real Diffuser driver (80 % cap, 50 %/s ramp), read
back through the SGP40 model's signal and our VocIndex (one sample a second) or the BME680
model's gas resistance, exactly the numbers the firmware sees. Prints the settling time and
overshoot of each target step and asserts the bounds stated in aroma.py's docstring."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from devices.sgp40 import NOISE_TICKS, sraw_for
from sensornode.aroma import AromaLoop
from sensornode.drivers.diffuser import Diffuser
from sensornode.voc_index import VocIndex
from world import World

PIN = 25
BACKGROUND_PPB = 100.0
# Stated in aroma.py's docstring.
VOC_SETTLE_BOUND_S = 180.0
VOC_OVERSHOOT_BOUND = 8.0
VOC_BAND = 5.0
GAS_SETTLE_BOUND_S = 180.0
GAS_OVERSHOOT_BOUND = 0.06
GAS_BAND = 0.05


class WorldPwm:
    """A PWM output whose duty drives diffuser_1 of the world (what machine.PWM does)."""

    def __init__(self, world: World, clock: list[float]) -> None:
        self.world = world
        self.clock = clock

    def freq(self, hz: int | None = None) -> int:
        return 1000

    def duty_u16(self, value: int) -> None:
        duty = value / 65535
        self.world.pin_driven(PIN, "pwm" if 0 < duty < 1 else round(duty), self.clock[0], duty)


@dataclass
class Trace:
    t_s: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    duty: list[float] = field(default_factory=list)


class Rig:
    """World + diffuser + sensor path + loop, stepped in whole seconds of simulated time."""

    def __init__(self, quantity: str, seed: int = 1, **loop_args: float) -> None:
        self.rng = random.Random(seed)
        self.clock = [0.0]
        self.world = World({"diffuser_1": PIN},
                           {"voc_ppb": BACKGROUND_PPB, "voc_background_ppb": BACKGROUND_PPB,
                            "adc_noise_raw": 0}, 0.0)
        self.diffuser = Diffuser(WorldPwm(self.world, self.clock), max_duty_pct=80,
                                 ramp_pct_per_s=50, clock=self.now_ms)
        self.quantity = quantity
        self.period_s = 1 if quantity == "voc_index" else 3
        self.loop = AromaLoop(1, quantity, max_duty_pct=80, **loop_args)
        self.voc = VocIndex()
        self.trace = Trace()
        if quantity == "voc_index":
            # A node that has run in this room for 4 h: the index has learned its clean air.
            for _ in range(4 * 3600):
                self.voc.process(self.sraw())

    def now_ms(self) -> int:
        return round(self.clock[0] * 1000)

    def sraw(self) -> int:
        voc = self.world.conditions["voc_ppb"]
        noise = self.rng.uniform(-NOISE_TICKS, NOISE_TICKS)
        return int(sraw_for(voc, 50.0, 25.0) + noise + 0.5)

    def gas_ratio(self) -> float:
        # The BME680 model: R = 200 kOhm / (1 + ppb / 50) ** 0.6 (boards/emulated/devices).
        def ohm(ppb: float) -> float:
            return 200000.0 / (1.0 + ppb / 50.0) ** 0.6

        noise = 1 + self.rng.uniform(-0.002, 0.002)
        return ohm(BACKGROUND_PPB) / (ohm(self.world.conditions["voc_ppb"]) * noise)

    def run(self, seconds: float) -> None:
        ticks = 0
        for _ in range(round(seconds * 10)):  # 100 ms steps: the ramp task's pace
            self.clock[0] = round(self.clock[0] + 0.1, 3)
            self.world.step(self.clock[0])
            self.diffuser.update(self.now_ms())
            ticks += 1
            if ticks % (10 * self.period_s):
                continue
            if self.quantity == "voc_index":
                value: float = self.voc.process(self.sraw())
            else:
                value = self.gas_ratio()
            duty = self.loop.update(value, self.now_ms())
            self.diffuser.set(duty, self.now_ms())
            self.trace.t_s.append(self.clock[0])
            self.trace.value.append(value)
            self.trace.duty.append(self.diffuser.duty_pct)


def step_response(trace: Trace, start_s: float, end_s: float, before: float, target: float,
                  band: float) -> tuple[float, float]:
    """(settling time, overshoot) of a target step at start_s, looked at until end_s."""
    points = [(t, v) for t, v in zip(trace.t_s, trace.value, strict=True) if start_s < t <= end_s]
    settled_at = start_s
    for t, v in points:
        if abs(v - target) > band:
            settled_at = t
    rising = target > before
    beyond = [v - target if rising else target - v for _, v in points]
    return settled_at - start_s, max(0.0, *beyond)


@pytest.mark.parametrize(("steps", "seed"), [
    ([200.0], 1),
    ([250.0], 2),
    ([200.0, 150.0], 3),
    ([150.0, 300.0], 4),
])
def test_voc_index_loop_settles_within_the_stated_bounds(steps: list[float], seed: int) -> None:
    rig = Rig("voc_index", seed)
    rig.run(60)
    before = 100.0
    assert abs(rig.trace.value[-1] - before) <= 3, "the index learned its clean air"
    for target in steps:
        start = rig.clock[0]
        rig.loop.set_target(target)
        rig.run(600)
        settle_s, overshoot = step_response(rig.trace, start, rig.clock[0], before, target,
                                            VOC_BAND)
        print(f"aroma voc_index {before:g} -> {target:g}: settling {settle_s:.0f} s "
              f"(+/-{VOC_BAND:g}), overshoot {overshoot:.1f} index points, "
              f"duty now {rig.trace.duty[-1]:.1f} %")
        assert settle_s <= VOC_SETTLE_BOUND_S
        assert overshoot <= VOC_OVERSHOOT_BOUND
        assert abs(rig.trace.value[-1] - target) <= VOC_BAND
        before = target


def test_gas_ratio_loop_settles_within_the_stated_bounds() -> None:
    rig = Rig("gas_ratio", 4)
    rig.run(30)
    start = rig.clock[0]
    rig.loop.set_target(2.0)
    rig.run(900)
    settle_s, overshoot = step_response(rig.trace, start, rig.clock[0], 1.0, 2.0, GAS_BAND)
    print(f"aroma gas_ratio 1 -> 2: settling {settle_s:.0f} s (+/-{GAS_BAND:g}), "
          f"overshoot {overshoot:.3f}")
    assert settle_s <= GAS_SETTLE_BOUND_S
    assert overshoot <= GAS_OVERSHOOT_BOUND


def test_an_empty_tank_does_not_wind_the_loop_up() -> None:
    """The safety layer caps the duty at 0 for 5 minutes (tank empty): once refilled, the loop
    comes back to its target without a long overshoot."""
    rig = Rig("voc_index", 5)
    rig.loop.set_target(200)
    rig.run(400)
    original = rig.loop.update

    def capped(value: float, now_ms: int, allowed_max_pct: float | None = None) -> float:
        return original(value, now_ms, 0.0)

    rig.loop.update = capped  # type: ignore[method-assign]
    rig.run(300)
    assert rig.trace.duty[-1] == 0.0
    assert rig.loop.pid.integral == 0.0
    rig.loop.update = original  # type: ignore[method-assign]
    start = rig.clock[0]
    rig.run(600)
    settle_s, overshoot = step_response(rig.trace, start, rig.clock[0], 100.0, 200.0, VOC_BAND)
    print(f"aroma voc_index after a 300 s empty tank: settling {settle_s:.0f} s, "
          f"overshoot {overshoot:.1f}")
    assert settle_s <= VOC_SETTLE_BOUND_S
    assert overshoot <= VOC_OVERSHOOT_BOUND


def test_a_target_of_none_stops_the_diffuser_and_stale_readings_drop_the_duty() -> None:
    loop = AromaLoop(2, max_duty_pct=60, stale_s=10)
    loop.set_target(300)
    assert loop.update(100, 1000) > 0
    held = loop.update(None, 5000)
    assert held == loop.duty_pct > 0
    assert loop.update(0, 12000) == 0.0  # blackout reading, 11 s after the last real one
    assert loop.stale and loop.status()["stale"] is True
    assert 0 < loop.update(100, 13000) <= 60
    assert loop.update(100, 14000, allowed_max_pct=5) <= 5
    loop.set_target(None)
    assert loop.update(100, 15000) == 0.0


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"aroma\.quantity"):
        AromaLoop(1, "smell")
    with pytest.raises(ValueError, match=r"aroma\.max_duty_pct"):
        AromaLoop(1, max_duty_pct=120)
    loop = AromaLoop(1)
    with pytest.raises(ValueError, match=r"aroma.target: voc_index must be 1..500"):
        loop.set_target(900)
    assert loop.target is None
