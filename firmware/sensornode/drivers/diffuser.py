# One PWM "flavor diffuser" channel (ultrasonic atomizer or fan behind a MOSFET).
#
# - Boots at 0 % duty: the constructor writes duty 0 before anything else. (Give it a PWM
#   built with duty_u16=0 so not even the instant before the constructor drives the load.)
# - Duty cap: max_duty_pct is never exceeded, whatever set() asks; lowering the cap cuts the
#   output at once.
# - Ramp: with ramp_pct_per_s > 0, set() only moves the target; the output moves toward it by
#   at most that rate, stepped by update(now_ms) (call it from a loop, or run the run() task).
#   0 = no ramp: set() applies at once.
# - off() is immediate: a stop never ramps.
# The channel holds no policy: a safety layer (tank empty, e-stop, max on-time) sits in front
# and calls set()/off()/set_cap(); every write to the PWM goes through _write(), which clamps.
import asyncio

from sensornode.compat import const, ticks_diff, ticks_ms
from sensornode.drivers.float_switch import quantity_key

try:
    from typing import Any, Callable, Dict, Optional
except ImportError:
    pass

FREQ_MIN_HZ = const(10)
FREQ_MAX_HZ = const(40000)  # 25 kHz fans fit; ESP32 LEDC and RP2040 PWM both reach this
RAMP_MAX_PCT_PER_S = 10000.0
_U16 = const(65535)


def _pct(field: str, value: "Any") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ValueError("%s: must be a percentage 0..100, got %r" % (field, value))
    return float(value)


class Diffuser:
    def __init__(self, pwm: "Any", freq_hz: int = 1000, max_duty_pct: float = 100.0,
                 ramp_pct_per_s: float = 0.0, channel: "Optional[int]" = None,
                 clock: "Callable[[], int]" = ticks_ms) -> None:
        self.key = quantity_key("diffuser_duty", channel)
        self._cap = _pct("max_duty_pct", max_duty_pct)
        if isinstance(ramp_pct_per_s, bool) or not isinstance(ramp_pct_per_s, (int, float)) \
                or not 0 <= ramp_pct_per_s <= RAMP_MAX_PCT_PER_S:
            raise ValueError("ramp_pct_per_s: must be a number 0..%d (%%/s; 0 = no ramp), got %r"
                             % (RAMP_MAX_PCT_PER_S, ramp_pct_per_s))
        self._rate = float(ramp_pct_per_s)
        self._pwm = pwm
        self._clock = clock
        self._actual = 0.0
        self._target = 0.0
        self._written = -1
        self._last_ms = clock()
        self._write(0.0)  # boot at 0 before touching the frequency
        self._freq = 0
        self.set_freq(freq_hz)

    # ---- state --------------------------------------------------------------------------

    @property
    def duty_pct(self) -> float:
        """The duty the PWM is driving now, in %."""
        return self._actual

    @property
    def target_pct(self) -> float:
        """Where the ramp is heading (already capped)."""
        return self._target

    @property
    def max_duty_pct(self) -> float:
        return self._cap

    @property
    def freq_hz(self) -> int:
        return self._freq

    @property
    def ramping(self) -> bool:
        return self._actual != self._target

    @property
    def duty_u16(self) -> int:
        """The raw value last written to the PWM."""
        return self._written

    # ---- commands -----------------------------------------------------------------------

    def set_freq(self, freq_hz: int) -> None:
        if isinstance(freq_hz, bool) or not isinstance(freq_hz, int) \
                or not FREQ_MIN_HZ <= freq_hz <= FREQ_MAX_HZ:
            raise ValueError("freq_hz: must be a whole number of Hz %d..%d, got %r"
                             % (FREQ_MIN_HZ, FREQ_MAX_HZ, freq_hz))
        self._pwm.freq(freq_hz)
        self._freq = freq_hz

    def set_cap(self, max_duty_pct: float) -> None:
        """New duty cap; output and target above it are cut at once (no ramp)."""
        self._cap = _pct("max_duty_pct", max_duty_pct)
        if self._target > self._cap:
            self._target = self._cap
        if self._actual > self._cap:
            self._write(self._cap)

    def set(self, duty_pct: float, now_ms: "Optional[int]" = None) -> float:
        """Head for duty_pct (0..100, capped); returns the target accepted."""
        duty = _pct("duty_pct", duty_pct)
        self.update(now_ms)  # account the ramp up to now at the old target
        self._target = min(duty, self._cap)
        if self._rate == 0:
            self._write(self._target)
        return self._target

    def off(self) -> None:
        """Stop now: target and output 0, no ramp."""
        self._target = 0.0
        self._write(0.0)
        self._last_ms = self._clock()

    def update(self, now_ms: "Optional[int]" = None) -> float:
        """Step the ramp to `now_ms`; returns the duty now driven."""
        if now_ms is None:
            now_ms = self._clock()
        elapsed = ticks_diff(now_ms, self._last_ms)
        self._last_ms = now_ms
        if self._actual == self._target or elapsed <= 0:
            return self._actual
        step = self._rate * elapsed / 1000.0 if self._rate else 100.0
        if self._target > self._actual:
            duty = min(self._target, self._actual + step)
        else:
            duty = max(self._target, self._actual - step)
        self._write(duty)
        return self._actual

    def _write(self, duty: float) -> None:
        duty = min(max(duty, 0.0), self._cap)
        raw = int(duty * _U16 / 100)  # rounds down: never above the cap
        if raw != self._written:
            self._pwm.duty_u16(raw)
            self._written = raw
        self._actual = duty

    async def run(self, period_ms: int = 50) -> None:
        """Step the ramp every period_ms until cancelled."""
        while True:
            self.update()
            await asyncio.sleep(period_ms / 1000)

    # ---- driver API (reports diffuser_duty) ---------------------------------------------

    def values(self) -> "Dict[str, float]":
        return {self.key: round(self._actual, 1)}

    def start_measurement(self) -> int:
        return 0

    def read_measurement(self) -> "Dict[str, float]":
        self.update()
        return self.values()

    async def read(self) -> "Dict[str, float]":
        return self.read_measurement()
