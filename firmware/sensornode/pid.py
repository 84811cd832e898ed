# A PID controller for the node's closed loops (aroma per diffuser channel): pure arithmetic,
# the caller passes each measurement with the seconds since the previous one.
#
#   pid = PID(kp=0.5, ki=0.02, kd=2.0, out_min=0, out_max=80, d_filter_s=5)
#   pid.setpoint = 200
#   duty = pid.update(measured, dt_s)
#
# Output = P + I + D, clamped to [out_min, out_max]:
#   P = kp * (sp_weight * setpoint - measurement)   sp_weight (b, 0..1): how much of a setpoint
#                                                   step reaches the output at once; b = 0
#                                                   makes setpoint changes fully bumpless
#   I = sum of ki * error * dt                      kept in output units, so retuning ki never
#                                                   makes the output jump
#   D = -kd * d(measurement)/dt, low-pass filtered  on the measurement, not the error: a
#                                                   setpoint step never kicks the output
# Anti-windup by conditional integration: a step of the integral that would push the output
# further into the limit it already sits at is skipped, and the integral itself stays within
# the output range, so the loop recovers from saturation (a tank refilled, a cap raised)
# without a long overshoot. set_limits() moves the clamp at run time (a safety layer's cap).
#
# MicroPython subset: no typing at runtime.
try:
    from typing import Any, Optional  # noqa: F401  (used in type comments)
except ImportError:
    pass


def _number(field: str, value: "Any") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or not -1e30 < value < 1e30:
        raise ValueError("%s: must be a finite number, got %r" % (field, value))
    return float(value)


class PID:
    def __init__(self, kp: float, ki: float = 0.0, kd: float = 0.0, out_min: float = 0.0,
                 out_max: float = 100.0, d_filter_s: float = 0.0, sp_weight: float = 1.0,
                 setpoint: float = 0.0) -> None:
        self.kp = _number("kp", kp)
        self.ki = _number("ki", ki)
        self.kd = _number("kd", kd)
        self.d_filter_s = _number("d_filter_s", d_filter_s)
        if self.d_filter_s < 0:
            raise ValueError("d_filter_s: must be >= 0 s (0: no filter), got %r" % (d_filter_s,))
        self.sp_weight = _number("sp_weight", sp_weight)
        if not 0 <= self.sp_weight <= 1:
            raise ValueError("sp_weight: must be 0..1, got %r" % (sp_weight,))
        self.out_min = 0.0
        self.out_max = 0.0
        self.set_limits(out_min, out_max)
        self.setpoint = _number("setpoint", setpoint)
        self.reset()

    def set_limits(self, out_min: float, out_max: float) -> None:
        """Move the output clamp; the integral is pulled inside it at once."""
        low = _number("out_min", out_min)
        high = _number("out_max", out_max)
        if low > high:
            raise ValueError("out_min: must be <= out_max, got %r > %r" % (out_min, out_max))
        self.out_min = low
        self.out_max = high
        if hasattr(self, "integral"):
            self.integral = self._clamp(self.integral)

    def reset(self, output: float = 0.0) -> None:
        """Forget the history; the next update() continues from `output` (bumpless start:
        pass the output that is being applied now, e.g. a manual duty)."""
        self.integral = self._clamp(_number("output", output))
        self.derivative = 0.0
        self.output = self.integral
        self._last_measurement = None  # type: Optional[float]
        self.p_term = 0.0
        self.d_term = 0.0

    def tune(self, kp: float, ki: float, kd: float) -> None:
        """New gains without a bump: the integral absorbs the change of the P and D terms."""
        kp = _number("kp", kp)
        ki = _number("ki", ki)
        kd = _number("kd", kd)
        if self._last_measurement is not None:
            new_p = kp * (self.sp_weight * self.setpoint - self._last_measurement)
            new_d = -kd * self.derivative
            self.integral = self._clamp(self.output - new_p - new_d)
        self.kp, self.ki, self.kd = kp, ki, kd

    def _clamp(self, value: float) -> float:
        if value > self.out_max:
            return self.out_max
        if value < self.out_min:
            return self.out_min
        return value

    def update(self, measurement: float, dt_s: float) -> float:
        """The output for this measurement, dt_s seconds after the previous one. The first
        update after reset() has no derivative and does not integrate; dt_s <= 0 returns the
        previous output unchanged (no time passed, nothing to learn)."""
        pv = _number("measurement", measurement)
        dt = _number("dt_s", dt_s)
        last = self._last_measurement
        if last is not None and dt <= 0:
            return self.output
        error = self.setpoint - pv
        self.p_term = self.kp * (self.sp_weight * self.setpoint - pv)
        if last is not None:
            rate = (pv - last) / dt
            if self.d_filter_s > 0:
                self.derivative += (rate - self.derivative) * dt / (self.d_filter_s + dt)
            else:
                self.derivative = rate
            self.d_term = -self.kd * self.derivative
            step = self.ki * error * dt
            unclamped = self.p_term + self.integral + step + self.d_term
            # Conditional integration: never wind further into the limit being hit.
            if not ((unclamped > self.out_max and step > 0)
                    or (unclamped < self.out_min and step < 0)):
                self.integral = self._clamp(self.integral + step)
        self._last_measurement = pv
        self.output = self._clamp(self.p_term + self.integral + self.d_term)
        return self.output
