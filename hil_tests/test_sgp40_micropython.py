"""The SGP40 driver, our VOC index algorithm and its state file under the real `micropython`
interpreter: the same numbers as under CPython, the same behaviour against the emulated chip,
and the algorithm's heap footprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sensornode.voc_index import VocIndex
from sensornode.voc_state import decode

from hil_tests.target import run_micropython
from tests.test_voc_index import BLACKOUT, max_diff, run_oracle, synthetic_trace

REPO = Path(__file__).resolve().parent.parent

# Runs the algorithm over the trace file argv[1], saves its state with VocStateStore to
# argv[2], and prints one JSON line: indices, final state, heap figures.
ALGORITHM_SCRIPT = r"""
import gc, json, sys
from sensornode.voc_index import VocIndex
from sensornode.voc_state import VocStateStore

with open(sys.argv[1]) as f:
    trace = [int(line) for line in f]
indices = [0] * len(trace)
gc.collect()
before = gc.mem_alloc()
algorithm = VocIndex()
gc.collect()
object_bytes = gc.mem_alloc() - before
for i in range(len(trace) - 100):
    indices[i] = algorithm.process(trace[i])
gc.collect()
gc.disable()  # count what 100 samples allocate (all of it garbage: boxed floats)
start = gc.mem_alloc()
for i in range(len(trace) - 100, len(trace)):
    indices[i] = algorithm.process(trace[i])
per_sample = (gc.mem_alloc() - start) / 100
gc.enable()
gc.collect()
steady_bytes = gc.mem_alloc() - before  # the object with its learned state
VocStateStore(sys.argv[2]).save(algorithm, 1700000000.0)
resumed = VocIndex()
resumed.set_state(algorithm.get_state(), True)
print(json.dumps({"indices": indices, "state": list(algorithm.get_state()),
                  "object_bytes": object_bytes, "steady_bytes": steady_bytes,
                  "alloc_per_sample": per_sample,
                  "resumed_equal": resumed.get_state() == algorithm.get_state()}))
"""

# The driver against the emulated chip on the shared fake bus; every check asserts, the last
# line is "PASSED <n>".
DRIVER_SCRIPT = r"""
import asyncio, errno, time
from devices import sgp40 as model
from sensornode.drivers.errors import CRCError, NotReady, SensorError
from sensornode.drivers.sgp40 import SGP40, crc8, rh_ticks, t_ticks
from testkit.fake_i2c import FakeI2C, FakeWorld

passed = 0
def check(cond, what):
    global passed
    if not cond:
        raise AssertionError(what)
    passed += 1

def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("no %s from %r" % (exc.__name__, fn))

AIR = {"voc_ppb": 100.0, "air_humidity_pct": 50.0, "air_temperature_c": 25.0}
check(crc8(b"\xbe\xef") == 0x92, "crc vector")
check(model.crc8(b"\xbe\xef") == 0x92, "model crc vector")
check((rh_ticks(50), t_ticks(25), rh_ticks(100), t_ticks(-45)) == (0x8000, 0x6666, 65535, 0),
      "ticks")

world = FakeWorld(AIR)
world.t = 1000.0
chip = model.Device(world)
bus = FakeI2C({0x59: chip}, world)
sensor = SGP40(bus, clock=world.ticks_ms)

def measure(rh=50.0, t=25.0):
    wait = sensor.start_measurement(rh, t)
    world.advance(wait / 1000)
    result = sensor.read_measurement()
    world.advance(1.0 - wait / 1000)
    return result

check(sensor.start_measurement() == 30, "30 ms")
check(bus.log[-1] == ("write", 0x59, bytes((0x26, 0x0F, 0x80, 0x00, 0xA2, 0x66, 0x66, 0x93))),
      "measure frame")
world.advance(0.029)
raises(NotReady, sensor.read_measurement)
e = raises(OSError, bus.readfrom, 0x59, 3)
check(e.errno == errno.EIO, "chip NACKs an early read")
world.advance(0.001)
first = sensor.read_measurement()
check(list(first) == ["voc_raw"] and 20000 < first["voc_raw"] < 40000, "first reading")
world.advance(1.0)
readings = [measure() for _ in range(45)]
check(all("voc_index" not in r for r in readings), "blackout: no voc_index")
readings = [measure() for _ in range(200)]
check(all(1 <= r["voc_index"] <= 500 for r in readings), "voc_index after blackout")
world.set(voc_ppb=3000.0)
check(measure()["voc_raw"] < readings[-1]["voc_raw"] - 1000, "SRAW falls with VOC")
world.set(voc_ppb=100.0)

world.inject("sgp40", "crc")
e = raises(CRCError, measure)
check(isinstance(e, SensorError) and isinstance(e, OSError), "CRCError is a SensorError")
world.inject("sgp40", "stuck")
stuck = measure()["voc_raw"]
world.set(voc_ppb=9000.0)
check(measure()["voc_raw"] == stuck, "stuck value")
sensor.start_self_test()
world.advance(0.32)
check(sensor.read_self_test() is False, "stuck chip fails its self-test")
world.inject("sgp40", None)
check(measure()["voc_raw"] < stuck - 1500, "recovered")
sensor.start_self_test()
world.advance(0.32)
check(sensor.read_self_test() is True, "self-test passes")
world.inject("sgp40", "absent")
e = raises(OSError, sensor.start_measurement)
check(e.errno == errno.ENODEV, "missing chip: ENODEV")
world.inject("sgp40", None)

real = FakeWorld(AIR, clock=lambda: time.ticks_ms() / 1000)
live = SGP40(FakeI2C({0x59: model.Device(real)}, real), clock=real.ticks_ms)
check(live.serial_number() == model.SERIAL, "serial number")

async def main():
    out = []  # MicroPython: no await inside a comprehension
    for _ in range(3):
        out.append(await live.read(50.0, 25.0))
    return out

check([list(r) for r in asyncio.run(main())] == [["voc_raw"]] * 3, "async read")
print("PASSED", passed)
"""


def run_script(script: str, *args: str, tmp_path: Path) -> str:
    path = tmp_path / "script.py"
    path.write_text(script)
    return run_micropython(path, *args, path=[REPO / "firmware", REPO / "boards/emulated", REPO])


@pytest.fixture(scope="module")
def trace() -> list[int]:
    return synthetic_trace(hours=2.0, seed=5)


@pytest.fixture(scope="module")
def micropython_run(trace: list[int], tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp_path = tmp_path_factory.mktemp("voc")
    trace_file = tmp_path / "trace.txt"
    trace_file.write_text("\n".join(str(s) for s in trace) + "\n")
    state_file = tmp_path / "voc.bin"
    out = run_script(ALGORITHM_SCRIPT, str(trace_file), str(state_file), tmp_path=tmp_path)
    result = json.loads(out.strip().splitlines()[-1])
    result["state_file"] = state_file.read_bytes()
    return result


def test_voc_index_under_micropython_gives_cpythons_numbers(
    trace: list[int], micropython_run: Any
) -> None:
    cpython = VocIndex()
    expected = [cpython.process(s) for s in trace]
    assert micropython_run["indices"] == expected
    assert micropython_run["state"] == pytest.approx(list(cpython.get_state()), rel=1e-12)
    assert micropython_run["indices"][:BLACKOUT] == [0] * BLACKOUT
    assert max_diff(micropython_run["indices"], run_oracle(trace)) <= 1
    assert micropython_run["resumed_equal"]


def test_a_state_file_written_by_micropython_reads_back_in_cpython(micropython_run: Any) -> None:
    state, saved_at = decode(micropython_run["state_file"])
    assert saved_at == 1700000000.0
    assert list(state) == micropython_run["state"]  # bit for bit: struct doubles
    restored = VocIndex()
    restored.set_state(state)
    assert restored.mean == pytest.approx(state[4] + state[5])


def test_voc_index_heap_footprint(micropython_run: Any) -> None:
    # 64-bit unix port: a 32-bit MCU needs roughly half. Printed for the report / make bench.
    print(
        f"\nVOC index heap: object {micropython_run['object_bytes']} B, "
        f"after 2 h {micropython_run['steady_bytes']} B, "
        f"{micropython_run['alloc_per_sample']:.0f} B garbage per sample"
    )
    assert micropython_run["object_bytes"] < 2048
    assert micropython_run["steady_bytes"] < 2048
    assert micropython_run["alloc_per_sample"] < 4096


def test_sgp40_driver_under_micropython(tmp_path: Path) -> None:
    out = run_script(DRIVER_SCRIPT, tmp_path=tmp_path)
    last = out.strip().splitlines()[-1]
    assert last.startswith("PASSED ") and int(last.split()[1]) >= 18, out
