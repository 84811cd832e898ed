"""The gateway Pi's status LED: one blink code for the site's health.

The codes, most urgent first (only the most urgent one shows):

    e-stop latched           double blink: on 0.15 s, off 0.15 s, on 0.15 s, off 1.05 s
    broker unreachable       fast blink:   on 0.1 s, off 0.1 s (5 per second)
    a node stale or faulty   slow blink:   on 1 s, off 1 s
    all well                 steady on
    gateway stopped          off

A blink code is a period of (lit, seconds) segments played in a loop by gpiozero's `source`
thread, one value per tick of `tick_s`; a new code starts from the beginning of its period and
replaces the old one at once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum

from gpiozero import LED, Factory

from edge_gateway.localhw.config import StatusLedConfig

TICK_S = 0.05


class LedCode(Enum):
    OFF = "off"
    OK = "ok"
    NODE_TROUBLE = "node_trouble"
    BROKER_DOWN = "broker_down"
    ESTOP = "estop"


# One period of each code: (lit, seconds) segments. OFF and OK are steady: no period.
PATTERNS: dict[LedCode, tuple[tuple[bool, float], ...]] = {
    LedCode.ESTOP: ((True, 0.15), (False, 0.15), (True, 0.15), (False, 1.05)),
    LedCode.BROKER_DOWN: ((True, 0.1), (False, 0.1)),
    LedCode.NODE_TROUBLE: ((True, 1.0), (False, 1.0)),
}


@dataclass(frozen=True)
class Health:
    broker_connected: bool = True
    nodes_in_trouble: int = 0  # nodes stale (no report, no LWT) or with an open fault
    estop_latched: bool = False


def led_code(health: Health) -> LedCode:
    """The code the LED shows for this health: the most urgent problem wins."""
    if health.estop_latched:
        return LedCode.ESTOP
    if not health.broker_connected:
        return LedCode.BROKER_DOWN
    if health.nodes_in_trouble > 0:
        return LedCode.NODE_TROUBLE
    return LedCode.OK


def pattern_ticks(code: LedCode, tick_s: float = TICK_S) -> tuple[bool, ...]:
    """One period of a blinking code as one value per tick (empty for a steady code)."""
    ticks: list[bool] = []
    for lit, seconds in PATTERNS.get(code, ()):
        ticks.extend([lit] * max(1, round(seconds / tick_s)))
    return tuple(ticks)


class StatusLed:
    def __init__(self, config: StatusLedConfig, pin_factory: Factory,
                 tick_s: float = TICK_S) -> None:
        self._tick_s = tick_s
        self._led = LED(config.pin, active_high=config.active_high, initial_value=False,
                        pin_factory=pin_factory)
        self._led.source_delay = tick_s
        self._code = LedCode.OFF

    @property
    def code(self) -> LedCode:
        return self._code

    def show(self, health: Health) -> LedCode:
        """Show the code for `health`; a code already showing keeps its rhythm."""
        self.show_code(led_code(health))
        return self._code

    def show_code(self, code: LedCode) -> None:
        if code == self._code:
            return
        self._led.source = None  # stops the previous code's thread before the new one starts
        self._code = code
        ticks = pattern_ticks(code, self._tick_s)
        if ticks:
            self._led.source = itertools.cycle(ticks)
        elif code == LedCode.OK:
            self._led.on()
        else:
            self._led.off()

    def close(self) -> None:
        self.show_code(LedCode.OFF)
        self._led.close()
