"""BME680 driver: its integer compensation against an independent floating-point formulation
of the datasheet formulas, worked numbers, and byte-level runs against the emulated chip
(boards/emulated/devices/bme680.py) through a fake I2C bus: round trips, heater flags,
timing, faults, a missing chip."""

from __future__ import annotations

import asyncio
import errno
import math
import time
from types import SimpleNamespace
from typing import Any

import pytest
from devices import bme680 as model
from sensornode.drivers import bme680 as drv
from sensornode.drivers.errors import CRCError, NotReady, SensorError

from testkit.fake_i2c import FakeI2C, FakeWorld

# A second, made-up part whose coefficients take the signed paths the modelled one does not
# (negative par_t3/par_h3, positive range_sw_err, a negative res_heat_val, range 2).
OTHER_PART = dict(model.CALIBRATION, t1=25900, t2=26700, t3=-2, p1=36500, p2=-10100, p3=85,
                  p4=7100, p5=-120, p6=28, p7=33, p8=-900, p9=-3000, p10=29, h1=800, h2=995,
                  h3=-8, h4=47, h5=18, h6=125, h7=-95, g1=-45, g2=-6000, g3=20,
                  res_heat_val=-20, res_heat_range=2, range_sw_err=3)

# The datasheet's floating-point gas-range tables.
K1 = (1, 1, 1, 1, 1, 0.99, 1, 0.992, 1, 1, 0.998, 0.995, 1, 0.99, 1, 1)
K2 = (8e6, 4e6, 2e6, 1e6, 499500.4995, 248262.1648, 125000, 63004.03226, 31281.28128, 15625,
      7812.5, 3906.25, 1953.125, 976.5625, 488.28125, 244.140625)


def decoded(cal: dict[str, int]) -> drv.Calibration:
    regs = model.calibration_registers(cal)
    return drv.Calibration(bytes(regs[r] for r in range(0x89, 0xA2)),
                           bytes(regs[r] for r in range(0xE1, 0xF1)), regs[0x00], regs[0x02],
                           regs[0x04])


# ---- the floating-point oracle (datasheet float formulas, written out independently) ------

def f_temperature(c: Any, adc: float) -> tuple[float, float]:
    t_fine = (c.t2 * (adc / 16384 - c.t1 / 1024)
              + 16 * c.t3 * (adc / 131072 - c.t1 / 8192) ** 2)
    return t_fine, t_fine / 5120


def f_pressure(c: Any, adc: float, t_fine: float) -> float:
    v1 = t_fine / 2 - 64000
    v2 = (v1 ** 2 * c.p6 / 131072 + 2 * v1 * c.p5) / 4 + c.p4 * 65536
    scale = c.p1 * (1 + (c.p3 * v1 ** 2 / 16384 + c.p2 * v1) / 524288 / 32768)
    p = (1048576 - adc - v2 / 4096) * 6250 / scale
    return p + (c.p9 * p ** 2 / 2 ** 31 + p * c.p8 / 32768
                + (p / 256) ** 3 * c.p10 / 131072 + c.p7 * 128) / 16


def f_humidity(c: Any, adc: float, t: float) -> float:
    x = adc - (16 * c.h1 + c.h3 / 2 * t)
    y = x * c.h2 / 262144 * (1 + c.h4 * t / 16384 + c.h5 * t * t / 1048576)
    return y + (c.h6 / 16384 + c.h7 * t / 2097152) * y * y


def f_gas(c: Any, adc: int, rng: int) -> float:
    k = (1340 + 5 * c.range_sw_err) * K1[rng]
    return k * K2[rng] / (adc - 512 + k)


def f_heater(c: Any, target: float, ambient: float) -> float:
    plate = (c.g1 / 16 + 49) * (1 + (c.g2 / 32768 * 0.0005 + 0.00235) * target)
    plate += c.g3 / 1024 * ambient
    return 3.4 * (plate * 4 / (4 + c.res_heat_range) / (1 + 0.002 * c.res_heat_val) - 25)


# ---- calibration and compensation -----------------------------------------------------------

def test_calibration_decoding() -> None:
    cal = decoded(model.CALIBRATION)
    for name, value in model.CALIBRATION.items():
        assert getattr(cal, name) == value, name
    other = decoded(OTHER_PART)
    assert (other.t3, other.h3, other.range_sw_err, other.res_heat_val,
            other.res_heat_range) == (-2, -8, 3, -20, 2)
    # 12-bit humidity words share register 0xE2: h2 = E1<<4 | E2>>4, h1 = E3<<4 | E2&0x0F.
    cal1 = bytes(25)
    cal2 = bytes([0x3F, 0x45, 0x31]) + bytes(5) + bytes([0x19, 0x66]) + bytes(6)
    hand = drv.Calibration(bytearray(b"\x00\x01\x01" + cal1[3:5] + b"\x01\x01" + cal1[7:]),
                           cal2, 0xD6, 0xFF, 0x7F)
    assert (hand.h2, hand.h1, hand.t1) == (0x3F4, 0x315, 0x6619)
    assert (hand.res_heat_val, hand.res_heat_range, hand.range_sw_err) == (-42, 3, 7)


def test_blank_calibration_is_rejected() -> None:
    with pytest.raises(SensorError, match="blank"):
        drv.Calibration(bytes(25), bytes(16), 0, 0, 0)


@pytest.mark.parametrize("part", [model.CALIBRATION, OTHER_PART], ids=["modelled", "other"])
def test_integer_compensation_agrees_with_float(part: dict[str, int]) -> None:
    cal, c = decoded(part), SimpleNamespace(**part)
    checked = 0
    for t_adc in range(280000, 720001, 23500):
        t_fine, t_x100 = drv.compensate_temperature(cal, t_adc)
        f_fine, f_t = f_temperature(c, t_adc)
        assert t_x100 / 100 == pytest.approx(f_t, abs=0.011)
        assert t_fine == pytest.approx(f_fine, abs=12)  # 0.002 degC
        for p_adc in range(200000, 560001, 20000):
            f_p = f_pressure(c, p_adc, f_fine)
            if 30000 <= f_p <= 110000:
                assert drv.compensate_pressure(cal, p_adc, t_fine) == pytest.approx(f_p, abs=10)
                checked += 1
        for h_adc in range(10000, 42001, 2000):
            f_h = min(100.0, max(0.0, f_humidity(c, h_adc, f_t)))
            assert drv.compensate_humidity(cal, h_adc, t_x100) / 1000 == pytest.approx(
                f_h, abs=0.1)
    assert checked > 100
    for rng in range(16):
        for adc in (0, 100, 512, 900, 1023):
            assert drv.gas_resistance(cal, adc, rng) == pytest.approx(f_gas(c, adc, rng),
                                                                      rel=2e-4, abs=1)


def test_worked_numbers() -> None:
    """Hand-checked values for the modelled part (the float formula, rounded)."""
    cal = decoded(model.CALIBRATION)
    # temp_adc 497815: var1 = (30.3842 - 25.5244) * 26335 = 127986; 5120 * 25.00 = 128000.
    assert drv.compensate_temperature(cal, 497815)[1] == 2500
    # gas range 0 at mid-scale: (1340 - 5) * 8e6 / (512 - 512 + 1335) = 8 MOhm exactly.
    assert drv.gas_resistance(cal, 512, 0) == 8000000
    assert drv.gas_resistance(cal, 512, 9) == 15625
    # Heater at 320 degC in 25 degC air: (-30/16 + 49) * (1 + 0.00218643 * 320) = 80.0964,
    # + 18/1024 * 25 = 80.5359; 3.4 * (80.5359 * 4/5 / 1.084 - 25) = 117.08 -> 117.
    assert drv.heater_resistance_code(cal, 320, 25) == 117 == int(
        f_heater(SimpleNamespace(**model.CALIBRATION), 320, 25))
    assert drv.heater_resistance_code(cal, 1000, 25) == drv.heater_resistance_code(cal, 400, 25)
    assert model.heater_target_c(model.CALIBRATION, 117.08, 25) == pytest.approx(320, abs=0.1)


@pytest.mark.parametrize("ms, code, back", [(0, 0x00, 0), (63, 0x3F, 63), (64, 0x50, 64),
                                            (100, 0x59, 100), (150, 0x65, 148),
                                            (1000, 0xBE, 992), (4032, 0xFF, 4032),
                                            (9000, 0xFF, 4032)])
def test_gas_wait_encoding(ms: int, code: int, back: int) -> None:
    assert drv.gas_wait_code(ms) == code
    assert drv.gas_wait_ms(code) == back


def test_measurement_time_estimate() -> None:
    # 14 samples * 1.963 ms + 4.293 ms = 31.775 -> 32, + 1 ms wake-up, + heater.
    assert drv.measurement_ms(8, 4, 2, 148) == 181
    assert drv.measurement_ms(1, 1, 1) == 12  # 10.182 -> 11, + 1


# ---- against the emulated chip --------------------------------------------------------------

@pytest.fixture
def world() -> FakeWorld:
    return FakeWorld({"air_temperature_c": 22.0, "air_humidity_pct": 40.0,
                      "pressure_hpa": 1005.0, "voc_ppb": 0.0})


@pytest.fixture
def bus(world: FakeWorld) -> FakeI2C:
    return FakeI2C({0x77: model.Device(world, 0x77)}, world)


def ready(bus: FakeI2C, **kwargs: Any) -> drv.BME680:
    sensor = drv.BME680(bus, **kwargs)
    sensor.setup()
    return sensor


def measure(sensor: drv.BME680, world: FakeWorld) -> dict[str, float]:
    world.advance(sensor.start_measurement() / 1000)
    return sensor.read_measurement()


def expected_gas(voc_ppb: float) -> float:
    return 200000 / (1 + voc_ppb / 50) ** 0.6


@pytest.mark.parametrize("t_c, rh, hpa", [(-40.0, 0.0, 300.0), (-5.5, 30.0, 850.0),
                                          (20.0, 50.0, 1013.25), (35.2, 80.0, 1050.0),
                                          (85.0, 100.0, 1100.0)])
def test_round_trip_follows_the_world(bus: FakeI2C, world: FakeWorld, t_c: float, rh: float,
                                      hpa: float) -> None:
    world.set(air_temperature_c=t_c, air_humidity_pct=rh, pressure_hpa=hpa)
    sensor = ready(bus)
    measure(sensor, world)  # the first reading also updates the heater's ambient temperature
    reading = measure(sensor, world)
    assert reading["air_temperature"] == pytest.approx(t_c, abs=0.02)
    assert reading["air_humidity"] == pytest.approx(rh, abs=0.1)
    assert reading["pressure"] == pytest.approx(hpa, abs=0.1)
    assert reading["gas_resistance"] == pytest.approx(expected_gas(0), rel=0.1)
    assert sensor.gas_error is None


def test_gas_resistance_falls_as_voc_rises(bus: FakeI2C, world: FakeWorld) -> None:
    sensor = ready(bus)
    values = []
    for ppb in (0, 10, 100, 1000, 10000, 100000, 1000000):
        world.set(voc_ppb=float(ppb))
        values.append(measure(sensor, world)["gas_resistance"])
        assert values[-1] == pytest.approx(expected_gas(ppb), rel=0.1)
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values)


def test_heater_too_short_reports_no_gas(bus: FakeI2C, world: FakeWorld) -> None:
    sensor = ready(bus, heater_ms=5)  # the plate needs ~28 ms to reach 320 degC
    reading = measure(sensor, world)
    assert set(reading) == {"air_temperature", "air_humidity", "pressure"}
    assert isinstance(sensor.gas_error, NotReady) and "320" in str(sensor.gas_error)
    flags = bus.devices[0x77].regs[0x2B]
    assert flags & 0x20 and not flags & 0x10  # gas_valid_r set, heat_stab_r clear
    sensor.set_heater(320, 100)
    assert "gas_resistance" in measure(sensor, world) and sensor.gas_error is None


def test_heater_disabled(bus: FakeI2C, world: FakeWorld) -> None:
    sensor = ready(bus, heater_c=None)
    sensor.start_measurement()
    assert bus.devices[0x77].regs[0x1D] == 0x20  # measuring, no gas_measuring
    world.advance(0.05)
    assert set(sensor.read_measurement()) == {"air_temperature", "air_humidity", "pressure"}
    assert sensor.gas_error is None and not bus.devices[0x77].regs[0x2B] & 0x30


def test_heater_code_follows_ambient(bus: FakeI2C, world: FakeWorld) -> None:
    world.set(air_temperature_c=60.0)
    sensor = ready(bus)
    measure(sensor, world)
    sensor.start_measurement()
    assert bus.devices[0x77].regs[0x5A] == drv.heater_resistance_code(
        decoded(model.CALIBRATION), 320, 60.0)


def test_timing_reading_too_early(bus: FakeI2C, world: FakeWorld) -> None:
    sensor = ready(bus)
    wait = sensor.start_measurement()
    assert wait == 181
    chip = bus.devices[0x77]
    assert chip.regs[0x1D] & 0xE0 == 0x60  # measuring + gas_measuring, no new data
    # 14 samples * 1.963 ms + 1.908 ms + 2.385 ms gas ADC + 148 ms heater = 179.775 ms
    world.advance(0.1797)
    with pytest.raises(NotReady, match="running"):
        sensor.read_measurement()
    world.advance(0.0001)
    assert sensor.read_measurement()["pressure"] == pytest.approx(1005.0, abs=0.1)
    assert chip.regs[0x74] & 3 == 0  # back in sleep mode
    with pytest.raises(NotReady, match="no measurement"):
        sensor.read_measurement()


def test_not_set_up(bus: FakeI2C) -> None:
    with pytest.raises(NotReady, match="setup"):
        drv.BME680(bus).start_measurement()


def test_register_writes_are_pairs(bus: FakeI2C, world: FakeWorld) -> None:
    sensor = ready(bus)
    measure(sensor, world)
    writes = [entry[2] for entry in bus.log if entry[0] == "write"]
    assert writes and all(len(data) in (1, 2) for data in writes)
    chip = bus.devices[0x77]
    bus.writeto(0x77, bytes([0x72, 0x05, 0x75, 0x08]))  # two pairs in one transfer
    assert (chip.regs[0x72], chip.regs[0x75]) == (0x05, 0x08)
    bus.writeto_mem(0x77, 0x89, b"\x00")  # calibration NVM is read-only
    assert chip.regs[0x89] == model.calibration_registers(model.CALIBRATION)[0x89]


def test_soft_reset_restores_defaults(bus: FakeI2C, world: FakeWorld) -> None:
    sensor = ready(bus)
    measure(sensor, world)
    bus.writeto_mem(0x77, 0xE0, b"\xb6")
    data = bus.readfrom_mem(0x77, 0x1D, 15)
    assert data[0] == 0 and data[2] == 0x80 and data[5] == 0x80
    assert bus.readfrom_mem(0x77, 0xD0, 1) == b"\x61"


def test_fault_crc(bus: FakeI2C, world: FakeWorld) -> None:
    sensor = ready(bus)
    world.inject("bme680", "crc")
    for _ in range(5):
        with pytest.raises(CRCError):
            measure(sensor, world)
    world.inject("bme680", None)
    assert measure(sensor, world)["air_temperature"] == pytest.approx(22.0, abs=0.02)


def test_fault_stuck(bus: FakeI2C, world: FakeWorld) -> None:
    sensor = ready(bus)
    first = measure(sensor, world)
    world.inject("bme680", "stuck")
    world.set(air_temperature_c=30.0, pressure_hpa=990.0, voc_ppb=500.0)
    assert measure(sensor, world) == first
    world.inject("bme680", None)
    reading = measure(sensor, world)
    assert reading["pressure"] == pytest.approx(990.0, abs=0.1)
    assert reading["gas_resistance"] < first["gas_resistance"]


def test_fault_noise(bus: FakeI2C, world: FakeWorld) -> None:
    sensor = ready(bus)
    world.inject("bme680", "noise")
    readings = [measure(sensor, world) for _ in range(30)]
    noise = model.Device.NOISE
    for key, center, spread in (("air_temperature", 22.0, noise["t"] + 0.02),
                                ("air_humidity", 40.0, noise["rh"] + 0.1),
                                ("pressure", 1005.0, noise["hpa"] + 0.1)):
        values = [r[key] for r in readings]
        assert len(set(values)) > 10, key
        assert all(abs(v - center) <= spread for v in values), key
    gas = [r["gas_resistance"] for r in readings]
    assert len(set(gas)) > 10
    assert all(math.isclose(g, expected_gas(0), rel_tol=0.25) for g in gas)


def test_missing_chip(world: FakeWorld) -> None:
    sensor = drv.BME680(FakeI2C({}, world), 0x76)
    with pytest.raises(OSError) as info:
        sensor.setup()
    assert info.value.errno == errno.ENODEV and not isinstance(info.value, SensorError)


def test_chip_goes_absent_after_setup(bus: FakeI2C, world: FakeWorld) -> None:
    sensor = ready(bus)
    world.inject("bme680", "absent")
    with pytest.raises(OSError) as info:
        sensor.start_measurement()
    assert info.value.errno == errno.ENODEV
    world.inject("bme680", None)
    assert "gas_resistance" in measure(sensor, world)


def test_wrong_chip_id(bus: FakeI2C) -> None:
    bus.devices[0x77].regs[0xD0] = 0x60
    with pytest.raises(SensorError, match="chip id"):
        drv.BME680(bus).setup()


def test_async_read_with_real_time() -> None:
    world = FakeWorld({"air_temperature_c": 24.0, "pressure_hpa": 1000.0}, clock=time.monotonic)
    sensor = drv.BME680(FakeI2C({0x76: model.Device(world, 0x76)}), 0x76, temperature_os=1,
                        pressure_os=1, humidity_os=1, heater_ms=40)
    sensor.setup()
    reading = asyncio.run(sensor.read())
    assert reading["air_temperature"] == pytest.approx(24.0, abs=0.02)
    assert reading["pressure"] == pytest.approx(1000.0, abs=0.1)
    assert "gas_resistance" in reading


@pytest.mark.parametrize("kwargs, field", [({"address": 0x78}, "address"),
                                           ({"temperature_os": 3}, "temperature_os"),
                                           ({"humidity_os": 0}, "humidity_os"),
                                           ({"heater_c": 500}, "heater_c"),
                                           ({"heater_ms": 0}, "heater_ms")])
def test_bad_arguments_name_the_field(bus: FakeI2C, kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        drv.BME680(bus, **kwargs)
