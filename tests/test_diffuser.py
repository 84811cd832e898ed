"""PWM diffuser channel on the emulated PWM: boots at 0, frequency range, duty cap never exceeded,
ramp stepped by update(now), immediate off, cap cuts at once."""

from __future__ import annotations

import asyncio
import itertools
import math
import re

import machine
import pytest
from sensornode.drivers.diffuser import Diffuser

from testkit.emulated import FakeClock, emulated_board, fresh_emulation  # noqa: F401

pytestmark = pytest.mark.usefixtures("fresh_emulation")
PIN = 25


@pytest.fixture
def clock() -> FakeClock:
    clock = FakeClock(0)
    emulated_board("emulated", {"adc_noise_raw": 0}, clock)
    return clock


def pwm() -> machine.PWM:
    return machine.PWM(machine.Pin(PIN), freq=1000, duty_u16=0)


def duties() -> list[int]:
    return [e["duty_u16"] for e in machine.Pin(PIN).history if e["mode"] == "pwm"]


def test_boots_at_zero_duty_and_sets_the_frequency(clock: FakeClock) -> None:
    d = Diffuser(pwm(), freq_hz=25000, channel=1, clock=clock)
    assert d.duty_pct == 0 and d.target_pct == 0 and d.freq_hz == 25000
    assert set(duties()) == {0}
    assert machine.Pin(PIN).history[-1]["freq"] == 25000
    assert d.values() == {"diffuser_duty_1": 0.0}


def test_a_pwm_left_running_is_stopped_before_anything_else() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []

        def freq(self, hz: int) -> None:
            self.calls.append(("freq", hz))

        def duty_u16(self, value: int) -> None:
            self.calls.append(("duty_u16", value))

    rec = Recorder()
    Diffuser(rec, freq_hz=500, clock=FakeClock())
    assert rec.calls == [("duty_u16", 0), ("freq", 500)]


@pytest.mark.parametrize("hz", [0, 9, 40001, 1000.5, True])
def test_frequency_out_of_range_is_refused(clock: FakeClock, hz: object) -> None:
    with pytest.raises(ValueError, match=r"freq_hz: must be a whole number of Hz 10\.\.40000"):
        Diffuser(pwm(), freq_hz=hz, clock=clock)  # type: ignore[arg-type]


def test_no_ramp_applies_at_once_with_exact_u16(clock: FakeClock) -> None:
    p = pwm()
    d = Diffuser(p, clock=clock)
    assert d.set(50) == 50
    assert d.duty_pct == 50 and p.duty_u16() == 32767  # floor(50 * 65535 / 100)
    d.set(100)
    assert p.duty_u16() == 65535
    d.set(0)
    assert p.duty_u16() == 0


def test_the_cap_is_never_exceeded_whatever_is_asked(clock: FakeClock) -> None:
    p = pwm()
    d = Diffuser(p, max_duty_pct=60, ramp_pct_per_s=10, clock=clock)
    assert d.set(100) == 60
    for _ in range(200):
        clock.advance(0.1)
        d.update()
    assert d.duty_pct == 60
    assert max(duties()) == 39321 == math.floor(60 * 65535 / 100)
    for bad in (-1, 100.1, math.nan, "50", None, True):
        with pytest.raises(ValueError, match=r"duty_pct: must be a percentage 0\.\.100"):
            d.set(bad)  # type: ignore[arg-type]
    assert d.target_pct == 60


def test_ramp_moves_at_most_rate_per_second_both_ways(clock: FakeClock) -> None:
    p = pwm()
    d = Diffuser(p, ramp_pct_per_s=20, clock=clock)
    d.set(50)
    assert d.duty_pct == 0 and d.ramping
    clock.advance(1)
    assert d.update() == pytest.approx(20)
    clock.advance(0.5)
    assert d.update() == pytest.approx(30)
    clock.advance(10)  # a late update does not overshoot
    assert d.update() == 50 and not d.ramping
    d.set(40)
    clock.advance(0.25)
    assert d.update() == pytest.approx(45)
    clock.advance(1)
    assert d.update() == 40
    seen = duties()
    assert all(b - a <= 20 * 65535 // 100 + 1 for a, b in itertools.pairwise(seen))


def test_retargeting_mid_ramp_accounts_the_time_so_far(clock: FakeClock) -> None:
    d = Diffuser(pwm(), ramp_pct_per_s=10, clock=clock)
    d.set(80)
    clock.advance(2)
    d.set(10)  # the ramp reached 20 % before turning around
    assert d.duty_pct == pytest.approx(20)
    clock.advance(0.5)
    assert d.update() == pytest.approx(15)


def test_off_is_immediate_even_while_ramping(clock: FakeClock) -> None:
    p = pwm()
    d = Diffuser(p, ramp_pct_per_s=5, clock=clock)
    d.set(100)
    clock.advance(10)
    d.update()
    assert d.duty_pct == pytest.approx(50)
    d.off()
    assert d.duty_pct == 0 and d.target_pct == 0 and p.duty_u16() == 0
    clock.advance(5)
    assert d.update() == 0


def test_lowering_the_cap_cuts_at_once(clock: FakeClock) -> None:
    p = pwm()
    d = Diffuser(p, ramp_pct_per_s=1, clock=clock)
    d.set(80)
    clock.advance(70)
    d.update()
    d.set_cap(30)
    assert d.duty_pct == 30 and d.target_pct == 30 and p.duty_u16() == 19660
    d.set_cap(90)  # raising the cap does not raise the target by itself
    assert d.target_pct == 30


def test_ramp_task_steps_until_cancelled(clock: FakeClock) -> None:
    d = Diffuser(pwm(), ramp_pct_per_s=100, clock=clock)
    d.set(30)

    async def scenario() -> None:
        task = asyncio.create_task(d.run(period_ms=0))  # period 0: yields, no real time
        for _ in range(5):
            clock.advance(0.1)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert d.duty_pct == 30


def test_read_reports_the_actual_duty_after_stepping(clock: FakeClock) -> None:
    d = Diffuser(pwm(), ramp_pct_per_s=10, channel=3, clock=clock)
    d.set(25)
    clock.advance(1.5)
    assert asyncio.run(d.read()) == {"diffuser_duty_3": 15.0}
    assert d.start_measurement() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_duty_pct": 120}, "max_duty_pct: must be a percentage 0..100"),
     ({"ramp_pct_per_s": -1}, "ramp_pct_per_s: must be a number 0..10000"),
     ({"channel": 0}, "channel: must be a whole number 1..8")],
)
def test_bad_settings_name_the_field(clock: FakeClock, kwargs: dict[str, object],
                                     message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Diffuser(pwm(), clock=clock, **kwargs)  # type: ignore[arg-type]
