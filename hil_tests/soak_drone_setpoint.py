"""Soak (`make soak`, ~5 min): the closed aroma loop holds a setpoint on the emulated drone
under the real micropython, printing settling time and overshoot. `make test` runs the same
loop in simulated time (tests/test_drone_aroma.py); this is the real-time, real-interpreter run.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from devices.sgp40 import NOISE_TICKS, sraw_for  # type: ignore[import-not-found]
from sensornode import protocol
from sensornode.voc_index import VocIndex
from sensornode.voc_state import encode

from hil_tests.test_drone_safety import (  # noqa: F401  (fixtures)
    BAND,
    OVERSHOOT_BOUND,
    SETTLE_BOUND_S,
    TELEMETRY_TOPIC,
    Drone,
    drone,
)
from testkit.procs import wait_for


def learned_voc_state(path: Path) -> None:
    """What the node's flash holds after 4 h in this room: the VOC index's learned baseline."""
    rng = random.Random(3)
    index = VocIndex()
    for _ in range(4 * 3600):
        index.process(int(sraw_for(100.0, 50.0, 20.0, 50.0, 20.0)
                          + rng.uniform(-NOISE_TICKS, NOISE_TICKS) + 0.5))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(index.get_state(), 0.0))


def voc_trace(drone: Drone) -> list[tuple[float, float]]:  # noqa: F811
    out = []
    for payload in drone.watch.payloads(TELEMETRY_TOPIC):
        for entry in protocol.decode_telemetry(payload):
            if "voc_index" in entry["values"]:
                out.append((float(entry["ts"]), float(entry["values"]["voc_index"])))
    return out


@pytest.mark.timeout(420)  # the index's 45 s blackout, then 4 minutes of the real loop
@pytest.mark.parametrize("drone", [{"voc_ppb": 100.0, "voc_background_ppb": 100.0}],
                         indirect=True)
def test_a_setpoint_settles_the_voc_index(drone: Drone) -> None:  # noqa: F811
    learned_voc_state(drone.node.flash_dir / "voc_state.bin")
    drone.start()
    wait_for(lambda: any(v >= 90 for _, v in voc_trace(drone)), timeout=90,
             what=lambda: f"the VOC index after its blackout; {voc_trace(drone)[-3:]}")
    ack = drone.cmd("setpoint", channel=1, target=200.0, quantity="voc_index")
    assert ack["ok"] and ack["result"] == "done", ack
    start = time.time()
    wait_for(lambda: voc_trace(drone) and voc_trace(drone)[-1][0] > start + 240, timeout=300,
             what=lambda: f"4 minutes of the loop; {voc_trace(drone)[-3:]}")
    after = [(t - start, v) for t, v in voc_trace(drone) if t >= start]
    settled_at = 0.0
    for t, v in after:
        if abs(v - 200) > BAND:
            settled_at = t
    overshoot = max(0.0, *(v - 200 for _, v in after))
    print(f"drone aroma on the emulated board, voc_index 100 -> 200: settling {settled_at:.0f} s "
          f"(+/-{BAND:g}), overshoot {overshoot:.0f} index points")
    print("trace (s, index):", [(round(t), v) for t, v in after[::10]])
    print("diffuser_1:", drone.event_details("diffuser_1")[-5:])
    assert settled_at <= SETTLE_BOUND_S
    assert overshoot <= OVERSHOOT_BOUND
    assert "refused" not in [s for n, s in drone.events() if n == "diffuser_1"]
