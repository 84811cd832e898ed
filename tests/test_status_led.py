"""Status LED patterns on the emulated pin: levels over time from a fake clock, polarity, custom
patterns, no pin at all, and the task."""

from __future__ import annotations

import asyncio

import machine
import pytest
from sensornode.drivers.status_led import PATTERNS, StatusLed, check_pattern

from testkit.emulated import FakeClock, emulated_board, fresh_emulation  # noqa: F401

pytestmark = pytest.mark.usefixtures("fresh_emulation")
PIN = 2


@pytest.fixture
def clock() -> FakeClock:
    clock = FakeClock(0)
    emulated_board("emulated", {"adc_noise_raw": 0}, clock)
    return clock


def out_pin(active_low: bool = False) -> machine.Pin:
    return machine.Pin(PIN, machine.Pin.OUT, value=1 if active_low else 0)


def levels_at(led: StatusLed, times: list[int]) -> list[int]:
    out = []
    for t in times:
        led.update(t)
        out.append(1 if led.lit else 0)
    return out


def test_boots_dark_and_steady_patterns(clock: FakeClock) -> None:
    pin = out_pin()
    led = StatusLed(pin, clock=clock)
    assert led.pattern == "off" and not led.lit and pin.value() == 0
    led.set_pattern("on")
    assert pin.value() == 1
    assert led.update(50_000) == 100  # steady: the task just checks back later
    led.set_pattern("off")
    assert pin.value() == 0


def test_connecting_blinks_evenly_at_2_hz(clock: FakeClock) -> None:
    led = StatusLed(out_pin(), clock=clock)
    led.set_pattern("connecting", now_ms=1000)
    assert levels_at(led, [1000, 1249, 1250, 1499, 1500, 1750, 11_000]) == [1, 1, 0, 0, 1, 0, 1]


def test_online_is_a_short_blip_every_3_s(clock: FakeClock) -> None:
    led = StatusLed(out_pin(), clock=clock)
    led.set_pattern("online", now_ms=0)
    assert levels_at(led, [0, 99, 100, 2999, 3000, 3100, 6050]) == [1, 1, 0, 0, 1, 0, 1]


def test_fault_is_three_flashes_then_a_pause(clock: FakeClock) -> None:
    led = StatusLed(out_pin(), clock=clock)
    led.set_pattern("fault", now_ms=0)
    times = list(range(0, 1200, 100))
    assert levels_at(led, times) == [1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert levels_at(led, [1200, 1300]) == [1, 0]  # the cycle is 1.2 s


def test_update_returns_ms_until_the_next_change(clock: FakeClock) -> None:
    led = StatusLed(out_pin(), clock=clock)
    led.set_pattern("connecting", now_ms=0)
    assert led.update(0) == 250
    assert led.update(100) == 150
    assert led.update(260) == 240


def test_pin_writes_only_on_changes_and_active_low_inverts(clock: FakeClock) -> None:
    pin = out_pin(active_low=True)
    led = StatusLed(pin, active_low=True, clock=clock)
    assert pin.value() == 1  # dark
    led.set_pattern("connecting", now_ms=0)
    for t in range(0, 1000, 10):
        led.update(t)
    levels = [e["level"] for e in pin.history if e["mode"] == "out"]
    # inactive at boot, then lit (0) / dark (1) every 250 ms: 4 changes in 1 s, no repeats.
    assert levels == [1, 0, 1, 0, 1]


def test_setting_the_same_pattern_keeps_the_rhythm(clock: FakeClock) -> None:
    led = StatusLed(out_pin(), clock=clock)
    led.set_pattern("connecting", now_ms=0)
    led.set_pattern("connecting", now_ms=300)
    assert levels_at(led, [300]) == [0]  # not restarted at 300 (that would be lit)
    led.set_pattern("fault", now_ms=300)
    assert levels_at(led, [300, 450]) == [1, 0]


def test_rhythm_survives_a_ticks_wrap(clock: FakeClock) -> None:
    wrap = 1 << 30
    led = StatusLed(out_pin(), clock=clock)
    led.set_pattern("connecting", now_ms=wrap - 1000)  # 4 whole cycles before the wrap
    assert levels_at(led, [wrap - 1, 0, 249, 250, 500]) == [0, 1, 1, 0, 1]


def test_custom_patterns_and_errors(clock: FakeClock) -> None:
    led = StatusLed(out_pin(), clock=clock)
    led.set_pattern([(True, 30), (False, 70)], now_ms=0)
    assert led.pattern == "custom"
    assert levels_at(led, [0, 29, 30, 100]) == [1, 1, 0, 1]
    with pytest.raises(ValueError, match="pattern: 'blinky' is unknown; known: connecting"):
        led.set_pattern("blinky")
    with pytest.raises(ValueError, match=r"pattern\[1\]: must be \(lit, ms\) with ms 1..60000"):
        check_pattern([(True, 10), (False, 0)])
    with pytest.raises(ValueError, match="pattern: must be a non-empty list"):
        check_pattern([])
    assert set(PATTERNS) >= {"off", "on", "connecting", "online", "fault"}


def test_no_pin_keeps_the_logic_and_drives_nothing(clock: FakeClock) -> None:
    led = StatusLed(None, clock=clock)
    led.set_pattern("connecting", now_ms=0)
    assert levels_at(led, [0, 300]) == [1, 0]


def test_task_follows_the_clock_until_cancelled(clock: FakeClock) -> None:
    pin = out_pin()
    led = StatusLed(pin, clock=clock)
    led.set_pattern("connecting", now_ms=0)
    seen = []

    async def scenario() -> None:
        task = asyncio.create_task(led.run())
        for _ in range(4):
            await asyncio.sleep(0)
            seen.append(pin.value())
            clock.advance(0.25)
            led.update()  # what the task would do after its sleep
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert seen == [1, 0, 1, 0]
