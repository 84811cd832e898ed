"""The SHT4x and BME680 drivers against their emulated chips, byte for byte through the fake
I2C bus, under the real `micropython` interpreter (dicts unordered, no typing, its own int and
float behaviour): round trips, gas versus VOC, heater flags, faults, a missing chip, timing,
and the asyncio read()."""

from __future__ import annotations

from pathlib import Path

from hil_tests.target import run_micropython

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import asyncio
import errno
import time

from devices import bme680 as bme_model
from devices import sht4x as sht_model
from sensornode.drivers.bme680 import BME680
from sensornode.drivers.errors import CRCError, NotReady
from sensornode.drivers.sht4x import SHT4x, crc8
from testkit.fake_i2c import FakeI2C, FakeWorld

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print("%s %s %s" % ("OK" if ok else "FAIL", name, detail))


def raises(kind, fn, *args):
    try:
        fn(*args)
    except kind as exc:
        return exc
    return None


def near(a, b, tol):
    return abs(a - b) <= tol


world = FakeWorld({"air_temperature_c": 21.5, "air_humidity_pct": 45.25,
                   "pressure_hpa": 1005.0, "voc_ppb": 0.0})
bus = FakeI2C({0x44: sht_model.Device(world, 0x44), 0x77: bme_model.Device(world, 0x77)}, world)
sht = SHT4x(bus, 0x44, clock=world.ticks_ms)
bme = BME680(bus, 0x77)


def sht_measure():
    world.advance(sht.start_measurement() / 1000)
    return sht.read_measurement()


def bme_measure():
    world.advance(bme.start_measurement() / 1000)
    return bme.read_measurement()


check("crc8 0xBEEF", crc8(b"\xbe\xef") == 0x92)
for t_c, rh in ((-40.0, 0.0), (-10.3, 20.0), (21.5, 45.25), (85.0, 100.0)):
    world.set(air_temperature_c=t_c, air_humidity_pct=rh)
    r = sht_measure()
    check("sht4x round trip %s %s" % (t_c, rh),
          near(r["air_temperature"], t_c, 0.01) and near(r["air_humidity"], rh, 0.01), r)

sht.start_measurement()
world.advance(0.008)
check("sht4x too early -> NotReady", raises(NotReady, sht.read_measurement) is not None)
e = raises(OSError, bus.readfrom, 0x44, 6)
check("sht4x chip NACKs early read", e is not None and e.errno == errno.EIO)
world.advance(0.001)
check("sht4x read after 9 ms", near(sht.read_measurement()["air_temperature"], 85.0, 0.01))

world.inject("sht4x", "crc")
check("sht4x crc fault -> CRCError", raises(CRCError, sht_measure) is not None)
world.inject("sht4x", "stuck")
first = sht_measure()
world.set(air_temperature_c=0.0)
check("sht4x stuck", sht_measure() == first)
world.inject("sht4x", "noise")
temps = [sht_measure()["air_temperature"] for _ in range(20)]
check("sht4x noise", len(set(temps)) > 5 and all(near(t, 0.0, 0.51) for t in temps), temps[:3])
world.inject("sht4x", None)
check("sht4x recovers", near(sht_measure()["air_temperature"], 0.0, 0.01))
check("sht4x serial", sht.serial_number() == bus.devices[0x44].serial)

world.set(air_temperature_c=22.0, air_humidity_pct=40.0)
bme.setup()
for t_c, rh, hpa in ((-40.0, 0.0, 300.0), (20.0, 50.0, 1013.25), (85.0, 100.0, 1100.0)):
    world.set(air_temperature_c=t_c, air_humidity_pct=rh, pressure_hpa=hpa)
    bme_measure()
    r = bme_measure()
    check("bme680 round trip %s %s %s" % (t_c, rh, hpa),
          near(r["air_temperature"], t_c, 0.02) and near(r["air_humidity"], rh, 0.1)
          and near(r["pressure"], hpa, 0.1) and "gas_resistance" in r, r)

world.set(air_temperature_c=22.0, air_humidity_pct=40.0, pressure_hpa=1005.0)
gas = []
for ppb in (0.0, 100.0, 10000.0, 1000000.0):
    world.set(voc_ppb=ppb)
    gas.append(bme_measure()["gas_resistance"])
check("bme680 gas falls as VOC rises", gas == sorted(gas, reverse=True) and len(set(gas)) == 4,
      gas)
check("bme680 clean-air gas ~200 kOhm", near(gas[0], 200000, 20000), gas[0])

bme.start_measurement()
world.advance(0.1)
check("bme680 too early -> NotReady", raises(NotReady, bme.read_measurement) is not None)
world.advance(0.1)
check("bme680 read after wait", near(bme.read_measurement()["pressure"], 1005.0, 0.1))

bme.set_heater(320, 5)
r = bme_measure()
check("bme680 heater unstable -> no gas, T/P/H kept",
      "gas_resistance" not in r and isinstance(bme.gas_error, NotReady)
      and near(r["air_temperature"], 22.0, 0.02), r)
bme.set_heater(320, 150)
world.inject("bme680", "crc")
check("bme680 crc fault -> CRCError", raises(CRCError, bme_measure) is not None)
world.inject("bme680", "stuck")
first = bme_measure()
world.set(pressure_hpa=990.0)
check("bme680 stuck", bme_measure() == first)
world.inject("bme680", None)
check("bme680 recovers", near(bme_measure()["pressure"], 990.0, 0.1))

e = raises(OSError, BME680(bus, 0x76).setup)
check("bme680 missing chip -> ENODEV", e is not None and e.errno == errno.ENODEV)
world.inject("sht4x", "absent")
e = raises(OSError, sht.start_measurement)
check("sht4x absent -> ENODEV", e is not None and e.errno == errno.ENODEV)
world.inject("sht4x", None)


async def both():
    real = FakeWorld({"air_temperature_c": 18.0, "pressure_hpa": 1000.0},
                     clock=lambda: time.ticks_ms() / 1000)
    rbus = FakeI2C({0x44: sht_model.Device(real, 0x44), 0x76: bme_model.Device(real, 0x76)})
    s = SHT4x(rbus, 0x44)
    b = BME680(rbus, 0x76, temperature_os=1, pressure_os=1, humidity_os=1, heater_ms=30)
    b.setup()
    return await s.read(), await b.read()


s_r, b_r = asyncio.run(both())
check("async read() with real time", near(s_r["air_temperature"], 18.0, 0.01)
      and near(b_r["pressure"], 1000.0, 0.1) and "gas_resistance" in b_r, (s_r, b_r))

print("PASSED %d FAILED %d" % (results.count(True), results.count(False)))
"""


def test_air_sensor_drivers_under_micropython(tmp_path: Path) -> None:
    script = tmp_path / "air_sensors.py"
    script.write_text(SCRIPT)
    output = run_micropython(script, path=[REPO / "firmware", REPO / "boards/emulated", REPO])
    last = output.strip().splitlines()[-1]
    assert last.startswith("PASSED ") and last.endswith(" FAILED 0"), output
    assert int(last.split()[1]) >= 27, output
