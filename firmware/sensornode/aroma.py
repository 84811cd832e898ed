# Closed-loop aroma for one diffuser channel: holds a target VOC index (SGP40, 1..500, 100 =
# the learned typical air) or gas-resistance ratio (BME680: clean-air resistance / resistance
# now, 1.0 = clean air, rising with VOC) with a PID, and produces the duty the channel should
# run at. Pure: the caller passes each reading with its ticks_ms time and sends the duty
# through the safety layer, which may refuse or cap it; pass the cap it reports back as
# `allowed_max_pct` so the integral never winds up against a limit (tank empty, disarmed,
# e-stop: 0).
#
#   loop = AromaLoop(channel=1, max_duty_pct=80)
#   loop.set_target(200)                  # setpoint from the gateway; None: off
#   duty = loop.update(voc_index, now_ms, allowed_max_pct=cap_now)  # the safety layer's cap
#   safety.request("diffuser_1", duty, "rule aroma_1", seconds)
#
# No reading (None, or the index's 0 during its blackout): the last duty is held for at most
# stale_s, then the duty is 0 and the loop starts afresh with the next reading.
#
# Default gains are tuned on the emulated world (boards/emulated/world_drone.py: emission of
# 50 ppb/s at 100 % duty, ventilation 0.01/s; the SGP40 model's signal through our VocIndex
# with a learned clean-air baseline, one sample per second; the Diffuser driver's 80 % cap and
# 50 %/s ramp). There the index is very sensitive (1 % duty holds about 240, 2 % about 355),
# so the gains are small. tests/test_aroma_loop.py drives that world and prints what it
# measures. Stated bounds, for target steps between 100 and 300 (up from clean air with the
# diffuser off, and down):
#   voc_index: settling time to within +/-5 index points at most 180 s, overshoot at most
#              8 index points (measured: 95..125 s, 0..3 points; a step down is paced by the
#              room's ventilation, the diffuser can only stop)
#   gas_ratio (BME680, one sample per 3 s): a step from 1.0 to 2.0 settles to within +/-0.05
#              in at most 180 s with at most 0.06 overshoot (measured: ~75 s, ~0.01)
# A stronger or weaker diffuser, or a draughtier room, changes the loop gain: retune with
# tune(kp, ki, kd) (e.g. from the gateway's config).
#
# MicroPython subset: no typing at runtime.
from sensornode.compat import ticks_diff
from sensornode.pid import PID

try:
    from typing import Any, Dict, Optional
except ImportError:
    pass

# quantity: (lowest target, highest target, kp, ki, kd, d_filter_s)
QUANTITIES = {
    "voc_index": (1.0, 500.0, 0.04, 0.0002, 0.5, 10.0),
    "gas_ratio": (0.1, 100.0, 24.0, 0.3, 0.0, 0.0),
}


def _kinds() -> str:
    return ", ".join(sorted(QUANTITIES))


class AromaLoop:
    def __init__(self, channel: int, quantity: str = "voc_index", max_duty_pct: float = 100.0,
                 stale_s: float = 30.0, kp: "Optional[float]" = None,
                 ki: "Optional[float]" = None, kd: "Optional[float]" = None,
                 d_filter_s: "Optional[float]" = None) -> None:
        if quantity not in QUANTITIES:
            raise ValueError("aroma.quantity: must be one of %s, got %r" % (_kinds(), quantity))
        if isinstance(max_duty_pct, bool) or not isinstance(max_duty_pct, (int, float)) \
                or not 0 <= max_duty_pct <= 100:
            raise ValueError("aroma.max_duty_pct: must be a percentage 0..100, got %r"
                             % (max_duty_pct,))
        if isinstance(stale_s, bool) or not isinstance(stale_s, (int, float)) \
                or not 0 < stale_s <= 3600:
            raise ValueError("aroma.stale_s: must be seconds in (0, 3600], got %r" % (stale_s,))
        low, high, dkp, dki, dkd, dfilter = QUANTITIES[quantity]
        self.channel = channel
        self.quantity = quantity
        self.target_min = low
        self.target_max = high
        self.max_duty_pct = float(max_duty_pct)
        self.stale_ms = int(stale_s * 1000)
        self.pid = PID(dkp if kp is None else kp, dki if ki is None else ki,
                       dkd if kd is None else kd, 0.0, self.max_duty_pct,
                       dfilter if d_filter_s is None else d_filter_s)
        self.target = None  # type: Optional[float]
        self.duty_pct = 0.0
        self.last_value = None  # type: Optional[float]
        self.stale = False
        self._last_ms = None  # type: Optional[int]

    def set_target(self, target: "Optional[float]") -> None:
        """Hold `target` from now on; None switches the loop (and the duty) off. Changing the
        target keeps the integral, so the duty moves on from where it is."""
        if target is None:
            self.target = None
            self._restart()
            return
        if isinstance(target, bool) or not isinstance(target, (int, float)) \
                or not self.target_min <= target <= self.target_max:
            raise ValueError("aroma.target: %s must be %g..%g, got %r"
                             % (self.quantity, self.target_min, self.target_max, target))
        self.target = float(target)
        self.pid.setpoint = self.target

    def tune(self, kp: float, ki: float, kd: float) -> None:
        self.pid.tune(kp, ki, kd)

    def _restart(self) -> None:
        self.pid.reset(0.0)
        self.duty_pct = 0.0
        self._last_ms = None

    def _valid(self, value: "Any") -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return False
        if self.quantity == "voc_index":
            return 1 <= value <= 500  # 0: the index's blackout, not a reading
        return 0 < value < 1e6

    def update(self, value: "Any", now_ms: int,
               allowed_max_pct: "Optional[float]" = None) -> float:
        """The duty (0..max_duty_pct, and never above allowed_max_pct) for this reading."""
        cap = self.max_duty_pct
        if allowed_max_pct is not None and allowed_max_pct < cap:
            cap = max(0.0, float(allowed_max_pct))
        self.pid.set_limits(0.0, cap)
        if self.target is None:
            self.duty_pct = 0.0
            return 0.0
        if not self._valid(value):
            if self._last_ms is not None and ticks_diff(now_ms, self._last_ms) > self.stale_ms:
                self.stale = True
                self._restart()
            self.duty_pct = min(self.duty_pct, cap)
            return self.duty_pct
        self.stale = False
        self.last_value = float(value)
        if self._last_ms is not None and ticks_diff(now_ms, self._last_ms) > self.stale_ms:
            self._restart()  # a long gap: the history says nothing about now
        dt_s = 0.0 if self._last_ms is None else ticks_diff(now_ms, self._last_ms) / 1000
        self._last_ms = now_ms
        self.duty_pct = self.pid.update(self.last_value, dt_s)
        return self.duty_pct

    def status(self) -> "Dict[str, Any]":
        """What the loop is doing, for telemetry: {"channel", "quantity", "target", "value",
        "duty_pct", "stale"}."""
        return {"channel": self.channel, "quantity": self.quantity, "target": self.target,
                "value": self.last_value, "duty_pct": round(self.duty_pct, 1),
                "stale": self.stale}
