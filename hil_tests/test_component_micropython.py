"""Filters, the component lifecycle and the MQ-135 / float switch / diffuser / status LED drivers
under the real MicroPython interpreter on the emulated board (from source and from the .mpy
files we ship), with a fake clock: one fault event per break and per recovery, warm-up without
a fault, a debounced tank switch following the world."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil_tests.target import compiled_firmware, run_micropython

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import asyncio
import errno
import gc
import sys

import emu


class Clock:
    def __init__(self):
        self.ms = 1000

    def __call__(self):
        return self.ms


clock = Clock()
emu.configure({"wiring": {"mq135": 35, "tank_switch_1": 18},
               "conditions": {"adc_noise_raw": 0, "mq135_heated_s": 0, "ventilation_per_s": 0,
                              "tank_slosh_ml": 0, "tank_level_ml_1": 50}}, None, clock)
import machine

gc.collect()
heap0 = gc.mem_alloc()
from sensornode.component import Component, run_all
from sensornode.drivers.diffuser import Diffuser
from sensornode.drivers.errors import CRCError, NotReady
from sensornode.drivers.float_switch import FloatSwitch
from sensornode.drivers.mq135 import MQ135
from sensornode.drivers.status_led import StatusLed
from sensornode.filters import FilterChain, FilterConfigError

gc.collect()
print("HEAP import=%d" % (gc.mem_alloc() - heap0))
failures = 0


def check(name, ok, got=None):
    global failures
    if not ok:
        failures += 1
    print("CHECK", name, "ok" if ok else "FAIL %r" % (got,))


def cycle(comp):
    clock.ms += comp.ms_until_due(clock.ms)
    return asyncio.run(comp.run_once(clock.ms))


# ---- filters ------------------------------------------------------------------------------
chain = FilterChain([{"median": 3}, {"delta": 1, "heartbeat_s": 60}])
out = [chain.push(v, i * 1000) for i, v in enumerate([10, 10.2, 50, 10.4, 12, 12])]
out.append(chain.push(12, 70000))
check("filters", out == [10, None, None, None, 12, None, 12], out)
try:
    FilterChain([{"outlier": {"max_jump": -1}}])
    check("filter config error", False)
except FilterConfigError as exc:
    check("filter config error", "filters[0].outlier.max_jump" in str(exc), str(exc))

# ---- a sensor that breaks, recovers, gets stuck ---------------------------------------------
events = []


class Flaky:
    def __init__(self, script):
        self.script = script

    async def read(self):
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


script = [{"air_temperature": 20.0}, OSError(errno.ENODEV), CRCError("crc"), OSError(errno.ENODEV),
          OSError(errno.ENODEV), {"air_temperature": 21.0}] + [{"air_temperature": 22.0}] * 4
comp = Component("flaky", Flaky(script), interval_s=10, fail_after=3, stuck_after=3,
                 on_fault=lambda n, s, d: events.append((n, s, d)), clock=clock)
states = []
for _ in range(10):
    cycle(comp)
    states.append(comp.state)
check("states", states == ["ok", "warning", "warning", "failed", "failed", "ok", "ok", "ok",
                           "warning", "warning"], states)
check("events", events == [("flaky", "warning", "OSError ENODEV (errno 19)"),
                           ("flaky", "ok", "recovered"),
                           ("flaky", "warning", "stuck: same reading for 3 updates")], events)

# ---- MQ-135 on the emulated ADC: warm-up is not a fault ----------------------------------------
c = emu.get().world.conditions
adc = machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB)
mq = MQ135(adc, rl_ohm=c["mq135_rl_kohm"] * 1000, vc=c["mq135_vc_v"],
           divider_ratio=c["mq135_divider_ratio"], warmup_s=60, clock=clock)
try:
    mq.calibrate_r0()
    check("mq135 warm-up", False)
except NotReady:
    check("mq135 warm-up", True)
clock.ms += 60000
mq.calibrate_r0()
events = []
gas = Component("mq135", mq, interval_s=5, filters={"mq135_ppm": [{"median": 3}]},
                on_fault=lambda n, s, d: events.append((n, s, d)), clock=clock)
first = cycle(gas)
check("mq135 clean air", abs(first["mq135_ratio"] - 3.6) < 0.01, first)
emu.get().set_world(voc_ppb=20000)
cycle(gas)
later = cycle(gas)
check("mq135 follows aroma", later["mq135_ppm"] > 3 * first["mq135_ppm"], later)
check("mq135 no fault", events == [] and gas.state == "ok", events)

# ---- float switch: the tank runs low, the switch opens after debounce -----------------------
pin = machine.Pin(18, machine.Pin.IN, machine.Pin.PULL_UP)
switch = FloatSwitch(pin, active_low=True, debounce_ms=50, channel=1, clock=clock)
for _ in range(11):
    switch.update()
    clock.ms += 5
check("tank ok", switch.read_measurement() == {"tank_ok_1": 1})
emu.get().set_world(tank_level_ml_1=1.0)
switch.update()
check("tank debouncing", switch.values() == {"tank_ok_1": 1})
clock.ms += 50
check("tank low", switch.read_measurement() == {"tank_ok_1": 0})

# ---- diffuser: cap, ramp, immediate off --------------------------------------------------------
pwm = machine.PWM(machine.Pin(25), freq=1000, duty_u16=0)
d = Diffuser(pwm, freq_hz=25000, max_duty_pct=80, ramp_pct_per_s=20, channel=1, clock=clock)
d.set(100)
clock.ms += 2000
d.update()
check("diffuser ramp", abs(d.duty_pct - 40) < 1e-6 and pwm.duty_u16() == 26214, d.duty_pct)
clock.ms += 10000
d.update()
check("diffuser cap", d.duty_pct == 80 and pwm.duty_u16() == 52428, pwm.duty_u16())
d.off()
check("diffuser off", pwm.duty_u16() == 0 and d.values() == {"diffuser_duty_1": 0.0})

# ---- status LED ---------------------------------------------------------------------------------
led_pin = machine.Pin(2, machine.Pin.OUT, value=0)
led = StatusLed(led_pin, clock=clock)
led.set_pattern("connecting", now_ms=0)
seen = []
for t in (0, 249, 250, 500):
    led.update(t)
    seen.append(led_pin.value())
check("led", seen == [1, 1, 0, 1], seen)

# ---- the loop: bounded, concurrent ---------------------------------------------------------------
a = Component("a", Flaky([{"air_temperature": 1.0}] * 3), interval_s=0.001)
b = Component("b", Flaky([OSError(errno.EIO)] * 3), interval_s=0.001, fail_after=2,
              backoff_max_s=0.001)
asyncio.run(run_all([a, b], max_updates=3))
check("run_all", (a.state, b.state, a.updates, b.updates) == ("ok", "failed", 3, 3))

print("RESULT failures=%d" % failures)
"""


@pytest.mark.parametrize("build", ["source", "mpy"])
def test_component_and_drivers_under_micropython(build: str, tmp_path: Path) -> None:
    firmware = REPO / "firmware"
    if build == "mpy":
        firmware = compiled_firmware()
    script = tmp_path / "scenario.py"
    script.write_text(SCRIPT)
    output = run_micropython(script, path=[firmware, REPO / "boards/emulated"], cwd=tmp_path)
    checks = [line for line in output.splitlines() if line.startswith("CHECK ")]
    assert len(checks) == 16, output
    assert all(line.endswith(" ok") for line in checks), output
    assert "RESULT failures=0" in output, output
