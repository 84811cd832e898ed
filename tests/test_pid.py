"""The PID controller (firmware/sensornode/pid.py) on a first-order-plus-dead-time plant: step
response, recovery from saturation without windup, no derivative kick on a setpoint change,
bumpless retuning and restarts."""

from __future__ import annotations

import math
from collections import deque

import pytest
from sensornode.pid import PID

DT = 0.5


class Fopdt:
    """y' = (gain * u(t - dead) - y) / tau, stepped exactly for a constant input."""

    def __init__(self, gain: float = 2.0, tau: float = 20.0, dead_s: float = 3.0) -> None:
        self.gain, self.tau = gain, tau
        self.y = 0.0
        self.queue: deque[float] = deque([0.0] * round(dead_s / DT))

    def step(self, u: float) -> float:
        self.queue.append(u)
        delayed = self.queue.popleft()
        target = self.gain * delayed
        self.y = target + (self.y - target) * math.exp(-DT / self.tau)
        return self.y


def simulate(pid: PID, plant: Fopdt, seconds: float, setpoint: float | None = None,
             cap: float | None = None) -> list[tuple[float, float]]:
    if setpoint is not None:
        pid.setpoint = setpoint
    if cap is not None:
        pid.set_limits(pid.out_min, cap)
    out = []
    for _ in range(round(seconds / DT)):
        u = pid.update(plant.y, DT)
        out.append((plant.step(u), u))
    return out


def settling(trace: list[tuple[float, float]], target: float, band: float) -> float:
    last_out = 0
    for i, (y, _) in enumerate(trace):
        if abs(y - target) > band:
            last_out = i + 1
    return last_out * DT


def tuned() -> PID:
    # SIMC-style PI for gain 2, tau 20, dead time 3: kp = tau / (gain * (tc + dead)).
    return PID(kp=1.5, ki=1.5 / 20, kd=2.0, out_min=0, out_max=100, d_filter_s=2.0)


def test_step_response_settles_without_much_overshoot() -> None:
    pid, plant = tuned(), Fopdt()
    trace = simulate(pid, plant, 200, setpoint=50)
    peak = max(y for y, _ in trace)
    settle = settling(trace, 50, 1.0)
    print(f"pid FOPDT step 0 -> 50: settling {settle:.1f} s (+/-1), overshoot {peak - 50:.2f}")
    assert trace[-1][0] == pytest.approx(50, abs=0.1)
    assert peak - 50 <= 5
    assert settle <= 60


def test_no_windup_after_a_long_saturation() -> None:
    """The output is capped at 10 (the plant can reach only 20) for 10 minutes while the
    target is 50; when the cap goes, the loop reaches 50 about as well as from a fresh start."""
    pid, plant = tuned(), Fopdt()
    trace = simulate(pid, plant, 600, setpoint=50, cap=10)
    assert all(u <= 10 for _, u in trace)
    assert pid.integral <= 10
    trace = simulate(pid, plant, 300, cap=100)
    peak = max(y for y, _ in trace)
    print(f"pid after 600 s saturated: overshoot {max(0.0, peak - 50):.2f}, "
          f"settling {settling(trace, 50, 1.0):.1f} s")
    assert peak - 50 <= 5
    assert settling(trace, 50, 1.0) <= 60


def test_windup_would_have_overshot_without_conditional_integration() -> None:
    """The same scenario with a naive integral (integrated in spite of the clamp) overshoots a
    lot: the recovery test above would notice a broken anti-windup."""
    plant = Fopdt()
    integral = 0.0
    for _ in range(round(600 / DT)):
        integral += 1.5 / 20 * (50 - plant.y) * DT
        plant.step(min(10.0, 1.5 * (50 - plant.y) + integral))
    peak = 0.0
    for _ in range(round(300 / DT)):
        integral += 1.5 / 20 * (50 - plant.y) * DT
        peak = max(peak, plant.step(min(100.0, max(0.0, 1.5 * (50 - plant.y) + integral))))
    assert peak - 50 > 20


def test_a_setpoint_step_does_not_kick_the_derivative() -> None:
    pid = PID(kp=1.0, ki=0.0, kd=50.0, out_min=-1000, out_max=1000)
    pid.setpoint = 10
    assert pid.update(4, 1.0) == 6
    assert pid.update(4, 1.0) == 6
    pid.setpoint = 20
    assert pid.update(4, 1.0) == 16  # only P moved: 1 * 10; no 50 * 10 derivative spike
    assert pid.update(5, 1.0) == pytest.approx(15 - 50)  # the measurement's rate does


def test_setpoint_weight_zero_makes_setpoint_changes_bumpless() -> None:
    pid = PID(kp=2.0, ki=0.5, out_min=0, out_max=100, sp_weight=0.0, setpoint=10)
    pid.reset(40)
    first = pid.update(10, 1.0)
    pid.setpoint = 30
    second = pid.update(10, 1.0)
    assert second - first == pytest.approx(0.5 * 20 * 1.0)  # just one integral step


def test_reset_to_an_output_and_tune_are_bumpless() -> None:
    pid = PID(kp=2.0, ki=0.2, kd=1.0, out_min=0, out_max=100, setpoint=20)
    pid.reset(37)
    assert pid.output == 37
    out = pid.update(20, 1.0)
    assert out == pytest.approx(37)  # on target: continues from the applied output
    pid.update(19, 1.0)
    before = pid.output
    pid.tune(4.0, 0.1, 0.0)
    assert pid.update(19, 1e-9) == pytest.approx(before, abs=1e-3)


def test_derivative_filter_smooths_noise() -> None:
    raw = PID(kp=0, kd=10, out_min=-1e6, out_max=1e6)
    filtered = PID(kp=0, kd=10, out_min=-1e6, out_max=1e6, d_filter_s=5)
    spread_raw, spread_filtered = [], []
    for i in range(100):
        value = 1.0 if i % 2 else -1.0
        spread_raw.append(raw.update(value, 0.5))
        spread_filtered.append(filtered.update(value, 0.5))
    assert max(map(abs, spread_filtered[50:])) < max(map(abs, spread_raw[50:])) / 5


def test_no_time_passed_changes_nothing() -> None:
    pid = PID(kp=1, ki=1, out_max=100, setpoint=10)
    pid.update(0, 1.0)
    before = (pid.output, pid.integral)
    assert pid.update(3, 0) == before[0]
    assert (pid.output, pid.integral) == before


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"kp": float("nan")}, "kp"),
    ({"kp": 1, "out_min": 5, "out_max": 1}, "out_min"),
    ({"kp": 1, "d_filter_s": -1}, "d_filter_s"),
    ({"kp": 1, "sp_weight": 2}, "sp_weight"),
])
def test_bad_settings_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PID(**kwargs)


def test_a_bad_measurement_is_refused() -> None:
    with pytest.raises(ValueError, match="measurement: must be a finite number"):
        PID(kp=1).update(float("inf"), 1.0)


def test_the_integral_stands_still_while_the_output_is_pinned_at_a_limit() -> None:
    """Conditional integration: a large error pins the output at its maximum through P alone,
    so integrating would only store up overshoot; the integral waits. As soon as the output
    leaves the limit, it integrates again."""
    pid = PID(kp=10, ki=1, out_min=0, out_max=100, setpoint=50)
    for _ in range(100):
        assert pid.update(0, 1.0) == 100
    assert pid.integral == 0
    pid.update(48, 1.0)  # P = 20: inside the range
    assert pid.integral == pytest.approx(2)
    pid.setpoint = 0
    for _ in range(100):
        assert pid.update(48, 1.0) == 0  # pinned at the bottom: no negative wind-up either
    assert pid.integral == pytest.approx(2)
