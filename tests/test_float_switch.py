"""Float switch: time-based debounce against bounce sequences on a fake clock, polarity, the
driver API, and a tank draining on the emulated board."""

from __future__ import annotations

import asyncio

import emu
import machine
import pytest
from sensornode.drivers.errors import NotReady
from sensornode.drivers.float_switch import FloatSwitch, quantity_key

from testkit.emulated import FakeClock, emulated_board, fresh_emulation  # noqa: F401


class FakePin:
    """An input whose level follows a script of (from_ms, level) against the clock."""

    def __init__(self, clock: FakeClock, level: int = 0) -> None:
        self.clock = clock
        self.level = level
        self.script: list[tuple[int, int]] = []
        self.step_ms = 0  # each read advances the clock (a polling loop's period)

    def value(self) -> int:
        level = self.level
        for at, scripted in self.script:
            if self.clock.ms >= at:
                level = scripted
        self.clock.ms += self.step_ms
        return level


def make(level: int = 0, **kwargs: object) -> tuple[FloatSwitch, FakePin, FakeClock]:
    clock = FakeClock(0)
    pin = FakePin(clock, level)
    args: dict[str, object] = {"debounce_ms": 50, "clock": clock}
    args.update(kwargs)
    return FloatSwitch(pin, **args), pin, clock  # type: ignore[arg-type]


def feed(switch: FloatSwitch, pin: FakePin, samples: list[tuple[int, int]]) -> list[bool | None]:
    """(time ms, level) samples in order -> the debounced state after each."""
    out = []
    for at, level in samples:
        pin.level = level
        switch.update(at)
        out.append(switch.state)
    return out


def test_first_state_is_known_only_after_debounce() -> None:
    switch, pin, _ = make(level=0)  # active low: 0 = float up = tank ok
    assert feed(switch, pin, [(0, 0), (20, 0), (49, 0)]) == [None, None, None]
    with pytest.raises(NotReady, match="not stable for 50 ms"):
        switch.values()
    assert feed(switch, pin, [(50, 0)]) == [True]
    assert switch.values() == {"tank_ok": 1}
    assert switch.changes == 0


def test_contact_bounce_never_changes_the_state() -> None:
    switch, pin, _ = make(level=0)
    feed(switch, pin, [(0, 0), (60, 0)])
    bounce = [(100, 1), (102, 0), (105, 1), (109, 0), (130, 1), (170, 0), (200, 0), (400, 0)]
    assert set(feed(switch, pin, bounce)) == {True}
    assert switch.changes == 0


def test_a_real_change_is_accepted_after_it_held_for_debounce_ms() -> None:
    switch, pin, _ = make(level=0)
    feed(switch, pin, [(0, 0), (60, 0)])
    # Tank runs dry: the contact opens with some chatter, then stays open.
    out = feed(switch, pin, [(1000, 1), (1003, 0), (1010, 1), (1030, 1), (1059, 1), (1060, 1)])
    assert out == [True, True, True, True, True, False]
    assert switch.values() == {"tank_ok": 0}
    assert switch.changes == 1


def test_a_blip_restarts_the_debounce_window() -> None:
    switch, pin, _ = make(level=1)
    feed(switch, pin, [(0, 1), (50, 1)])
    assert switch.state is False
    out = feed(switch, pin, [(100, 0), (140, 0), (141, 1), (142, 0), (191, 0), (192, 0)])
    assert out == [False, False, False, False, False, True]


def test_active_high_polarity() -> None:
    switch, pin, _ = make(level=1, active_low=False, debounce_ms=0)
    assert not switch.active_low
    switch.update(0)
    assert switch.values() == {"tank_ok": 1}
    pin.level = 0
    switch.update(1)
    assert switch.values() == {"tank_ok": 0}


def test_debounce_works_across_a_ticks_wrap() -> None:
    switch, pin, _ = make(level=0)
    wrap = 1 << 30
    assert feed(switch, pin, [(wrap - 30, 0), (wrap - 1, 0), (19, 0), (20, 0)]) == [
        None, None, None, True]


def test_start_and_read_measurement() -> None:
    switch, _, clock = make(level=0)
    assert switch.start_measurement() == 50
    clock.ms = 30
    assert switch.ms_to_settle() == 20
    clock.ms = 50
    assert switch.read_measurement() == {"tank_ok": 1}
    assert switch.start_measurement() == 0


def test_async_read_samples_until_settled() -> None:
    switch, pin, clock = make(level=0, poll_ms=0)
    pin.step_ms = 5
    assert asyncio.run(switch.read()) == {"tank_ok": 1}
    assert 50 <= clock.ms <= 60
    # Chatter that never settles: after 4 x debounce the last accepted state stands.
    pin.script = [(t, (t // 5) % 2) for t in range(clock.ms, clock.ms + 1000, 5)]
    start = clock.ms
    assert asyncio.run(switch.read()) == {"tank_ok": 1}
    assert clock.ms - start <= 4 * 50 + 10


def test_async_read_is_bounded_even_if_time_stands_still() -> None:
    switch, _, _ = make(level=0, poll_ms=0)
    with pytest.raises(NotReady):
        asyncio.run(switch.read())  # the clock never moves: no state can ever be accepted


def test_channel_keys_and_bad_settings() -> None:
    assert make(channel=2)[0].key == "tank_ok_2"
    assert quantity_key("tank_ok", None) == "tank_ok"
    with pytest.raises(ValueError, match=r"channel: must be a whole number 1\.\.8"):
        make(channel=9)
    with pytest.raises(ValueError, match=r"debounce_ms: must be a whole number 0\.\.60000"):
        make(debounce_ms=-1)
    with pytest.raises(ValueError, match="poll_ms"):
        make(poll_ms=2.5)


# ---- on the emulated board ------------------------------------------------------------------

SWITCH_PIN = 18


@pytest.mark.usefixtures("fresh_emulation")
def test_emulated_tank_switch_opens_when_the_tank_runs_low() -> None:
    clock = FakeClock()
    emulated_board("emulated", {"wiring": {"tank_switch_1": SWITCH_PIN},
                                "tank_level_ml_1": 50, "tank_slosh_ml": 0}, clock)
    pin = machine.Pin(SWITCH_PIN, machine.Pin.IN, machine.Pin.PULL_UP)
    switch = FloatSwitch(pin, active_low=True, debounce_ms=50, channel=1, clock=clock)
    for _ in range(11):
        switch.update()
        clock.advance(0.005)
    assert switch.values() == {"tank_ok_1": 1}
    emu.get().set_world(tank_level_ml_1=2.0)  # below the 10 ml threshold: contact opens
    switch.update()
    assert switch.values() == {"tank_ok_1": 1}  # not yet: debouncing
    clock.advance(0.05)
    switch.update()
    assert switch.values() == {"tank_ok_1": 0}
