"""The gateway's own I2C sensors: Adafruit's real drivers on a fake bus of register models."""

from __future__ import annotations

import errno
import math
from collections.abc import Iterator
from pathlib import Path

import adafruit_bme680
import adafruit_sgp40
import adafruit_sht4x
import pytest
from devices import bme680, sgp40
from sensornode import protocol

from edge_gateway.localhw import (
    LocalSensors,
    NotOnAPiError,
    SensorConfig,
    SensorHealthChange,
    fault_event,
    open_i2c,
    telemetry,
)
from edge_gateway.localhw.sensors import fix_bme680_calibration
from edge_gateway.store import Store
from testkit.fake_blinka_i2c import (
    FakeBlinkaI2C,
    FakeWorld,
    bme680_model,
    sgp40_model,
    sht4x_model,
    virtual_time,
)

AIR = {"air_temperature_c": 23.4, "air_humidity_pct": 61.5, "pressure_hpa": 987.6,
       "voc_ppb": 150.0}
SHT, BME, SGP = (SensorConfig("sht4x", 0x44, "air"), SensorConfig("bme680", 0x77, "bme"),
                 SensorConfig("sgp40", 0x59, "voc"))


@pytest.fixture
def world() -> Iterator[FakeWorld]:
    world = FakeWorld(AIR)
    with virtual_time(world):
        yield world


@pytest.fixture
def bus(world: FakeWorld) -> FakeBlinkaI2C:
    return FakeBlinkaI2C({0x44: sht4x_model(world, name="air"),
                          0x77: bme680_model(world, name="bme"),
                          0x59: sgp40_model(world, name="voc")}, world)


def expected_gas_ohm(bus: FakeBlinkaI2C, world: FakeWorld) -> float:
    model = bus.devices[0x77]
    plate_c = bme680.heater_target_c(model.cal, model.regs[0x5A], world.value("air_temperature_c"))
    ohm = 200000.0 / (1.0 + world.value("voc_ppb") / 50.0) ** 0.6
    return ohm * math.exp((320.0 - plate_c) / 80.0)


# ---- the real drivers on the fake bus ------------------------------------------------------

def test_sht4x_driver_reads_the_model(bus: FakeBlinkaI2C, world: FakeWorld) -> None:
    sensor = adafruit_sht4x.SHT4x(bus)
    assert sensor.serial_number == 0x0C0FFEE0 + 0x44
    temperature, humidity = sensor.measurements
    assert temperature == pytest.approx(23.4, abs=0.003)  # one raw step is 0.0027 degC
    assert humidity == pytest.approx(61.5, abs=0.002)
    world.set(air_temperature_c=-5.0, air_humidity_pct=99.0)
    assert sensor.measurements == pytest.approx((-5.0, 99.0), abs=0.003)


def test_bme680_driver_reads_the_model(bus: FakeBlinkaI2C, world: FakeWorld) -> None:
    sensor = adafruit_bme680.Adafruit_BME680_I2C(bus, refresh_rate=1)
    assert sensor.temperature == pytest.approx(23.4, abs=0.01)
    assert sensor.pressure == pytest.approx(987.6, abs=0.01)
    # The driver as published decodes par_h1/par_h2 with the nibbles of 0xE2 swapped, and
    # range_sw_err as unsigned (the part's -1 becomes 15) ...
    assert abs(sensor.relative_humidity - 61.5) > 1.0
    assert sensor.gas < expected_gas_ohm(bus, world) * 0.99
    # ... corrected once (and only once), it reads what the model holds.
    assert fix_bme680_calibration(sensor) is True
    assert fix_bme680_calibration(sensor) is False
    world.advance(1.0)  # past the driver's refresh interval: a new measurement
    assert sensor.relative_humidity == pytest.approx(61.5, abs=0.05)
    assert sensor.gas == pytest.approx(expected_gas_ohm(bus, world), rel=0.002)


def test_sgp40_driver_reads_the_model(bus: FakeBlinkaI2C, world: FakeWorld) -> None:
    sensor = adafruit_sgp40.SGP40(bus)
    raw = sensor.measure_raw(temperature=23.4, relative_humidity=61.5)
    assert raw == pytest.approx(sgp40.sraw_for(150.0, 61.5, 23.4, 61.5, 23.4), abs=3)
    # told the datasheet defaults in humid air, the chip sees "more VOC" (a lower SRAW)
    uncompensated = sensor.measure_raw()  # 25 degC, 50 %RH
    assert uncompensated == pytest.approx(sgp40.sraw_for(150.0, 61.5, 23.4), abs=3)
    assert uncompensated < raw - 50


def test_bus_behaves_like_linux_i2c(bus: FakeBlinkaI2C, world: FakeWorld) -> None:
    with pytest.raises(RuntimeError, match="lock"):
        bus.writeto(0x44, b"\x94")
    assert bus.try_lock() and not bus.try_lock()
    assert bus.scan() == [0x44, 0x59, 0x77]
    world.inject("voc", "absent")
    assert bus.scan() == [0x44, 0x77]
    with pytest.raises(OSError) as missing:
        bus.writeto(0x59, b"")
    assert missing.value.errno == errno.EREMOTEIO
    bus.writeto(0x44, b"\xfd")
    with pytest.raises(OSError) as busy:  # the SHT4x NACKs until its measurement is done
        bus.readfrom_into(0x44, bytearray(6))
    assert busy.value.errno == errno.EIO
    bus.unlock()
    with pytest.raises(ValueError, match="No I2C device at address: 0x59"):
        adafruit_sgp40.SGP40(bus)


# ---- LocalSensors --------------------------------------------------------------------------

def test_poll_gives_protocol_quantities_first_listed_sensor_wins(
    bus: FakeBlinkaI2C, world: FakeWorld
) -> None:
    sensors = LocalSensors([SGP, SHT, BME], bus, sampling_interval_s=30)
    poll = sensors.poll()
    assert poll.changes == ()
    assert set(poll.values) == {"air_temperature", "air_humidity", "pressure",
                                "gas_resistance", "voc_raw"}
    assert all(protocol.known_quantity(q) for q in poll.values)
    assert poll.values["air_temperature"] == pytest.approx(23.4, abs=0.003)
    assert poll.values["air_humidity"] == pytest.approx(61.5, abs=0.002)
    assert poll.values["pressure"] == pytest.approx(987.6, abs=0.01)
    assert poll.values["gas_resistance"] == pytest.approx(expected_gas_ohm(bus, world),
                                                          rel=0.002)
    # the SGP40 is read last, compensated with the air the SHT4x measured
    assert poll.values["voc_raw"] == pytest.approx(
        sgp40.sraw_for(150.0, 61.5, 23.4, 61.5, 23.4), abs=3)
    # the VOC index comes after its 45 s blackout (two 30 s samples)
    for _ in range(2):
        world.advance(30)
        poll = sensors.poll()
    assert 1 <= poll.values["voc_index"] <= 500


def test_failing_sensor_reported_once_each_way_others_keep_reading(
    bus: FakeBlinkaI2C, world: FakeWorld, caplog: pytest.LogCaptureFixture
) -> None:
    sensors = LocalSensors([SHT, BME], bus, sampling_interval_s=30)
    assert sensors.poll().changes == ()
    world.inject("air", "crc")
    polls = [sensors.poll() for _ in range(3)]
    assert polls[0].changes == (
        SensorHealthChange("air", "failed", "RuntimeError: Invalid CRC calculated"),)
    assert [p.changes for p in polls[1:]] == [(), ()]
    assert sensors.failed == ["air"]
    # the BME680 stands in for the SHT4x's quantities meanwhile
    assert polls[2].values["air_temperature"] == pytest.approx(23.4, abs=0.01)
    assert polls[2].values["air_humidity"] == pytest.approx(61.5, abs=0.05)
    world.inject("air", "absent")
    assert sensors.poll().changes == ()
    world.inject("air", None)
    back = sensors.poll()
    assert back.changes == (SensorHealthChange("air", "ok", ""),)
    assert sensors.poll().changes == ()
    assert sensors.failed == []
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("localhw.sensors")]
    assert lines == ["local sensor air (sht4x at 0x44) failed: "
                     "RuntimeError: Invalid CRC calculated", "local sensor air is back"]


def test_sensor_missing_at_start_is_a_fault_until_it_appears(
    world: FakeWorld,
) -> None:
    bus = FakeBlinkaI2C({0x44: sht4x_model(world, name="air")}, world)
    sensors = LocalSensors([SHT, BME], bus, sampling_interval_s=30)
    first = sensors.poll()
    assert first.changes == (SensorHealthChange(
        "bme", "failed", "ValueError: No I2C device at address: 0x77"),)
    assert set(first.values) == {"air_temperature", "air_humidity"}
    bus.attach(0x77, bme680_model(world, name="bme"))
    later = sensors.poll()
    assert later.changes == (SensorHealthChange("bme", "ok", ""),)
    assert later.values["pressure"] == pytest.approx(987.6, abs=0.01)


def test_poll_becomes_store_rows(bus: FakeBlinkaI2C, tmp_path: Path) -> None:
    poll = LocalSensors([SHT], bus, sampling_interval_s=30).poll()
    change = SensorHealthChange("air", "failed", "OSError: [Errno 121] Remote I/O error")
    with Store(tmp_path / "gw.db") as store:
        store.write([telemetry("home", "gateway", 7, 1_790_000_000.0, poll.values, 1_790_000_001.0),
                     fault_event("home", "gateway", 8, 1_790_000_002.0, change, 1_790_000_003.0)])
        rows = store.readings("gateway")
        events = store.events("gateway")
    assert [(r.seq, r.quantity) for r in rows] == [(7, "air_humidity"), (7, "air_temperature")]
    assert rows[1].value == pytest.approx(23.4, abs=0.003)
    assert [(e.seq, e.kind, e.name, e.state, e.detail) for e in events] == [
        (8, "fault", "air", "failed", "OSError: [Errno 121] Remote I/O error")]


# ---- the hardware factory ------------------------------------------------------------------

def test_open_i2c_refuses_a_machine_that_is_not_a_pi(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Generic x86 PC\0")
    with pytest.raises(NotOnAPiError, match="this is Generic x86 PC"):
        open_i2c(model)
    with pytest.raises(NotOnAPiError, match="not a Raspberry Pi"):
        open_i2c(tmp_path / "missing")
