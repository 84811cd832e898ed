"""The node's control logic under the real MicroPython interpreter (from source and from the
.mpy files we ship): the PID on a first-order plant, the aroma loop, garden autonomy through a
dry spell with a budget and a reboot, and the boot guard's files across simulated reboots -
the same answers as the CPython tests, on the interpreter that runs on the node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hil_tests.target import compiled_firmware, run_micropython

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json
import math

from sensornode.aroma import AromaLoop
from sensornode.autonomy import GardenAutonomy
from sensornode.bootguard import BootGuard, LoopWatchdog
from sensornode.pid import PID

out = {}

# PID on y' = (2 u - y) / 20, 0.5 s steps, capped at 10 for a while, then free.
pid = PID(kp=1.5, ki=0.075, kd=2.0, out_min=0, out_max=100, d_filter_s=2.0, setpoint=50)
y = 0.0
decay = math.exp(-0.5 / 20)
pid.set_limits(0, 10)
for _ in range(600):
    u = pid.update(y, 0.5)
    y = 2 * u + (y - 2 * u) * decay
out["capped_y"] = y
out["capped_integral"] = pid.integral
pid.set_limits(0, 100)
peak = 0.0
for _ in range(600):
    u = pid.update(y, 0.5)
    y = 2 * u + (y - 2 * u) * decay
    peak = max(peak, y)
out["final_y"] = y
out["peak"] = peak

# Aroma: a reading, a blackout reading, a cap from the safety layer.
loop = AromaLoop(1, max_duty_pct=80, stale_s=10)
loop.set_target(200)
out["aroma"] = [loop.update(100, 1000), loop.update(0, 5000), loop.update(120, 6000, 0.5),
                loop.update(None, 17000)]

# Autonomy: dry soil, gateway gone, a budget of 5 l at 2 l/min, a reboot in the middle.
profile = {"name": "tomatoes", "moisture_low": 30, "moisture_high": 45, "soak_s": 600,
           "max_run_s": 60, "budget_l_per_day": 5, "flow_l_per_min": 2, "takeover_s": 120}
auto = GardenAutonomy(profile)
requests = []
for t in range(0, 4000, 30):
    if t == 2000:
        auto = GardenAutonomy(profile, json.loads(json.dumps(auto.to_state())))
    r = auto.tick(t, 10, t < 60)
    if r:
        requests.append([t, r[0], r[1]])
out["requests"] = requests
out["report"] = auto.report()
auto.reported(2)
out["left_after_ack"] = len(auto.report())

# Boot guard: three watchdog resets in a row, a clear, then an explained deep-sleep wake.
events = []
for cause in ("watchdog", "watchdog", "watchdog"):
    events.append(BootGuard("boots.json").boot(cause, 0))
guard = BootGuard("boots.json")
events.append(guard.boot("power_on", 0))
guard.clear()
guard = BootGuard("boots.json")
events.append(guard.boot("deepsleep", 0))
out["healthy"] = guard.mark_healthy(200)
out["boots"] = events
dog = LoopWatchdog(5, 0)
out["feed"] = [dog.should_feed(4000), dog.should_feed(6000)]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("build", ["source", "mpy"])
def test_control_logic_under_micropython(build: str, tmp_path: Path) -> None:
    firmware = compiled_firmware() if build == "mpy" else REPO / "firmware"
    script = tmp_path / "control.py"
    script.write_text(SCRIPT)
    output = run_micropython(script, path=[firmware], cwd=tmp_path, heap="64K")
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, output
    result = json.loads(lines[0].removeprefix("RESULT "))

    assert result["capped_y"] == pytest.approx(20, abs=0.01)
    assert result["capped_integral"] <= 10
    assert result["final_y"] == pytest.approx(50, abs=0.1)
    assert result["peak"] - 50 <= 5

    first, blackout, capped, stale = result["aroma"]
    assert 0 < first <= 80 and blackout == first
    assert capped <= 0.5 and stale == 0.0

    # Takeover 120 s after the gateway went (at 60 s); 60 s runs + 600 s soak; 5 l budget.
    assert result["requests"] == [[180, "local tomatoes", 60], [840, "local tomatoes", 60],
                                  [1500, "local tomatoes", 30]]
    assert [(e["start_s"], e["litres"], e["result"]) for e in result["report"]] == [
        (180, 2.0, "ran"), (840, 2.0, "ran"), (1500, 1.0, "ran")]
    assert result["left_after_ack"] == 1

    boots = result["boots"]
    assert [b["unexplained"] for b in boots] == [1, 2, 3, 4, 0]
    assert [b["safe_mode"] for b in boots] == [False, False, True, True, False]
    assert boots[4]["explained"] == "deepsleep"
    assert result["healthy"] is True
    assert result["feed"] == [True, False]
    saved = json.loads((tmp_path / "boots.json").read_text())
    assert saved["safe_mode"] is False and saved["boots"][-1]["healthy"] is True
