"""E-stop button, status LED and master valve on gpiozero's MockFactory pins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from edge_gateway.localhw import (
    EstopButton,
    EstopButtonConfig,
    Health,
    LedCode,
    MasterValve,
    MasterValveConfig,
    StatusLed,
    StatusLedConfig,
    led_code,
    open_local_hardware,
    parse_local_hardware,
)
from edge_gateway.localhw.status_led import PATTERNS, pattern_ticks
from testkit.procs import wait_for

ESTOP, LED, VALVE = 17, 27, 22


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    pins = MockFactory(pin_class=MockPWMPin)
    yield pins
    pins.reset()


def states(factory: MockFactory, pin: int) -> list[bool]:
    return [bool(state.state) for state in factory.pin(pin).states]


# ---- e-stop ---------------------------------------------------------------------------------

def test_press_latches_once_and_bounces_do_not_retrigger(factory: MockFactory) -> None:
    calls: list[str] = []
    button = EstopButton(EstopButtonConfig(ESTOP), factory, lambda: calls.append("estop"))
    pin = factory.pin(ESTOP)
    assert not button.latched and calls == []
    for _ in range(5):  # a bouncing contact: press, release, press ...
        pin.drive_low()
        pin.drive_high()
    assert button.latched
    assert calls == ["estop"]
    # the history starts floating low, then the pull-up; each bounce is a low and a high
    assert states(factory, ESTOP) == [False, True] + [False, True] * 5


def test_reset_clears_the_latch_and_a_new_press_triggers_again(factory: MockFactory) -> None:
    calls: list[str] = []
    button = EstopButton(EstopButtonConfig(ESTOP), factory, lambda: calls.append("estop"))
    pin = factory.pin(ESTOP)
    pin.drive_low()
    assert button.held
    assert button.reset() is False  # still held down: stays latched
    assert button.latched
    pin.drive_high()
    assert button.reset() is True
    assert not button.latched and calls == ["estop"]
    pin.drive_low()
    assert button.latched and calls == ["estop", "estop"]


def test_pull_down_button_is_pressed_when_high(factory: MockFactory) -> None:
    calls: list[str] = []
    button = EstopButton(EstopButtonConfig(ESTOP, pull_up=False), factory,
                         lambda: calls.append("estop"))
    factory.pin(ESTOP).drive_high()
    assert button.latched and calls == ["estop"]


class HeldDownPin(MockPWMPin):
    """A pin whose button is held down: the contact to ground beats the pull-up."""

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        self.drive_low()


def test_button_held_at_start_latches_at_once() -> None:
    factory = MockFactory(pin_class=HeldDownPin)
    calls: list[str] = []
    button = EstopButton(EstopButtonConfig(ESTOP), factory, lambda: calls.append("estop"))
    assert button.latched and calls == ["estop"]
    assert button.reset() is False
    factory.reset()


def test_failing_broadcast_keeps_the_latch(factory: MockFactory) -> None:
    def broken() -> None:
        raise ConnectionError("broker down")

    button = EstopButton(EstopButtonConfig(ESTOP), factory, broken)
    factory.pin(ESTOP).drive_low()
    assert button.latched


# ---- status LED -----------------------------------------------------------------------------

@pytest.mark.parametrize(("health", "code"), [
    (Health(), LedCode.OK),
    (Health(nodes_in_trouble=2), LedCode.NODE_TROUBLE),
    (Health(broker_connected=False, nodes_in_trouble=2), LedCode.BROKER_DOWN),
    (Health(broker_connected=False, nodes_in_trouble=1, estop_latched=True), LedCode.ESTOP),
    (Health(estop_latched=True), LedCode.ESTOP),
])
def test_most_urgent_problem_picks_the_code(health: Health, code: LedCode) -> None:
    assert led_code(health) == code


def test_patterns_in_ticks() -> None:
    assert pattern_ticks(LedCode.BROKER_DOWN, 0.05) == (True, True, False, False)
    assert pattern_ticks(LedCode.ESTOP, 0.05) == (True,) * 3 + (False,) * 3 + (True,) * 3 \
        + (False,) * 21
    assert pattern_ticks(LedCode.NODE_TROUBLE, 0.5) == (True, True, False, False)
    assert pattern_ticks(LedCode.OK) == pattern_ticks(LedCode.OFF) == ()
    for code, period in PATTERNS.items():  # fast < double < slow, as documented
        assert sum(seconds for _, seconds in period) == {
            LedCode.BROKER_DOWN: 0.2, LedCode.ESTOP: 1.5, LedCode.NODE_TROUBLE: 2.0}[code]


def test_steady_codes_and_active_low_led(factory: MockFactory) -> None:
    led = StatusLed(StatusLedConfig(LED, active_high=False), factory)
    assert led.show(Health()) == LedCode.OK
    led.show(Health())  # the same code again changes nothing
    led.close()
    # active low: off is high; OK drives it low; close switches it off (high), then
    # releases the pin, which the mock then reads low
    assert states(factory, LED) == [False, True, False, True, False]


def test_blink_code_plays_its_pattern_and_switches(factory: MockFactory) -> None:
    led = StatusLed(StatusLedConfig(LED), factory)
    pin = factory.pin(LED)
    led.show(Health(broker_connected=False))  # fast blink, 0.2 s per period
    wait_for(lambda: len(pin.states) >= 1 + 2 * 3, 10, "three periods of the fast blink")
    led.show(Health())
    seen = states(factory, LED)
    count = len(seen)
    # from off: on, off, on, off ... and then steady on (the last off -> on, or simply on)
    assert seen == [False] + [True, False] * ((count - 1) // 2) + [True] * ((count - 1) % 2)
    assert seen[-1] is True
    led.show(Health(nodes_in_trouble=1))
    led.close()
    # the slow blink had no time to go off before close switched the LED off
    assert states(factory, LED)[count:] == [False]


def test_double_blink_timing(factory: MockFactory) -> None:
    led = StatusLed(StatusLedConfig(LED), factory)
    pin = factory.pin(LED)
    led.show_code(LedCode.ESTOP)
    wait_for(lambda: len(pin.states) >= 6, 10, "one period of the double blink")
    led.close()
    # a state's duration is the next state's timestamp: on 0.15, off 0.15, on 0.15, off 1.05
    lasted = [pin.states[i + 1].timestamp for i in range(1, 5)]
    assert [state.state for state in pin.states[1:6]] == [True, False, True, False, True]
    assert lasted == pytest.approx([0.15, 0.15, 0.15, 1.05], abs=0.1)


# ---- master valve ---------------------------------------------------------------------------

def test_valve_opens_while_any_node_irrigates_and_closes_after_delay(
    factory: MockFactory,
) -> None:
    with MasterValve(MasterValveConfig(VALVE, close_delay_s=0.05), factory) as valve:
        assert not valve.is_open  # closed at start
        valve.set_irrigating({"bed-1"})
        valve.set_irrigating({"bed-1", "bed-2"})
        valve.set_irrigating({"bed-2"})
        assert valve.is_open
        valve.set_irrigating(set())
        assert valve.is_open  # the delay runs
        wait_for(lambda: not valve.is_open, 5, "the valve closing after its delay")
    assert states(factory, VALVE) == [False, True, False]


def test_node_starting_within_the_delay_keeps_it_open(factory: MockFactory) -> None:
    with MasterValve(MasterValveConfig(VALVE, close_delay_s=0.2), factory) as valve:
        valve.set_irrigating({"bed-1"})
        valve.set_irrigating(())
        valve.set_irrigating({"bed-2"})
        valve.set_irrigating(())
        wait_for(lambda: not valve.is_open, 5, "the valve closing")
    assert states(factory, VALVE) == [False, True, False]


def test_active_low_relay_and_close_on_exit(factory: MockFactory) -> None:
    with MasterValve(MasterValveConfig(VALVE, active_high=False, close_delay_s=60),
                     factory) as valve:
        valve.set_irrigating({"bed-1"})
        assert valve.is_open
    # active low: closed = high; opened = low; closed again on exit, without the delay; then
    # the pin is released (an input, which the mock reads low)
    assert states(factory, VALVE) == [False, True, False, True, False]
    assert factory.pin(VALVE).function == "input"


def test_valve_never_left_open_on_an_exception(factory: MockFactory) -> None:
    valve = MasterValve(MasterValveConfig(VALVE, close_delay_s=60), factory)
    valve.set_irrigating({"bed-1"})
    with pytest.raises(TypeError):
        valve.set_irrigating(42)  # type: ignore[arg-type]
    assert not valve.is_open
    with pytest.raises(RuntimeError), valve:
        valve.set_irrigating({"bed-1"})
        raise RuntimeError("daemon crashed")
    assert states(factory, VALVE) == [False, True, False, True, False]
    with pytest.raises(RuntimeError, match="after close"):
        valve.set_irrigating({"bed-1"})


def test_lock_out_closes_and_release_reopens(factory: MockFactory) -> None:
    with MasterValve(MasterValveConfig(VALVE, close_delay_s=60), factory) as valve:
        valve.set_irrigating({"bed-1"})
        valve.lock_out()
        assert not valve.is_open
        valve.set_irrigating({"bed-1", "bed-2"})
        assert not valve.is_open
        valve.release()
        assert valve.is_open
    assert states(factory, VALVE) == [False, True, False, True, False]


# ---- all of it ------------------------------------------------------------------------------

def test_estop_press_locks_the_valve_until_reset(factory: MockFactory) -> None:
    config = parse_local_hardware({
        "estop_button": {"pin": ESTOP}, "status_led": {"pin": LED},
        "master_valve": {"pin": VALVE, "close_delay_s": 60},
    })
    broadcasts: list[str] = []
    hardware = open_local_hardware(config, factory, lambda: broadcasts.append("estop"))
    assert hardware.valve is not None and hardware.led is not None
    hardware.valve.set_irrigating({"bed-1"})
    hardware.show(broker_connected=True, nodes_in_trouble=0)
    assert hardware.led.code == LedCode.OK
    factory.pin(ESTOP).drive_low()
    assert broadcasts == ["estop"] and hardware.estop_latched
    assert not hardware.valve.is_open
    hardware.show(broker_connected=True, nodes_in_trouble=0)
    assert hardware.led.code == LedCode.ESTOP
    assert hardware.reset_estop() is False  # still pressed
    factory.pin(ESTOP).drive_high()
    assert hardware.reset_estop() is True
    assert hardware.valve.is_open  # bed-1 is still irrigating
    hardware.close()
    assert states(factory, VALVE) == [False, True, False, True, False]
    assert states(factory, LED)[-1] is False


def test_failed_part_closes_what_was_built(factory: MockFactory) -> None:
    config = parse_local_hardware({
        "master_valve": {"pin": VALVE}, "sensors": [{"type": "sht4x"}],
    })

    def no_bus() -> object:
        raise OSError(2, "No such file or directory: '/dev/i2c-1'")

    with pytest.raises(OSError, match="i2c-1"):
        open_local_hardware(config, factory, lambda: None, i2c_factory=no_bus)
    # the relay was released: its pin is an input again and can be claimed anew
    MasterValve(MasterValveConfig(VALVE), factory).close()
