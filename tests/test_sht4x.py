"""SHT4x driver: datasheet CRC and conversion vectors, and byte-level runs against the emulated
chip (boards/emulated/devices/sht4x.py) through a fake I2C bus."""

from __future__ import annotations

import asyncio
import errno
import time

import pytest
from devices import sht4x as model
from sensornode.drivers.errors import CRCError, NotReady, SensorError
from sensornode.drivers.sht4x import (
    MEASURE,
    SHT4x,
    check_words,
    crc8,
    humidity_pct,
    temperature_c,
)

from testkit.fake_i2c import FakeI2C, FakeWorld


def reference_crc(data: bytes) -> int:
    """CRC-8/poly 0x31/init 0xFF as polynomial long division over the whole message."""
    value = int.from_bytes(data, "big") ^ (0xFF << (8 * (len(data) - 1)))
    value <<= 8
    for bit in range(8 * len(data) + 7, 7, -1):
        if value >> bit & 1:
            value ^= 0x131 << (bit - 8)
    return value


@pytest.fixture
def world() -> FakeWorld:
    return FakeWorld({"air_temperature_c": 21.5, "air_humidity_pct": 45.25})


@pytest.fixture
def bus(world: FakeWorld) -> FakeI2C:
    return FakeI2C({0x44: model.Device(world, 0x44)}, world)


def sensor(bus: FakeI2C, world: FakeWorld, precision: str = "high") -> SHT4x:
    return SHT4x(bus, 0x44, precision, clock=world.ticks_ms)


def measure(s: SHT4x, world: FakeWorld) -> dict[str, float]:
    world.advance(s.start_measurement() / 1000)
    return s.read_measurement()


# ---- datasheet vectors ----------------------------------------------------------------------

def test_crc_datasheet_vector() -> None:
    assert crc8(b"\xbe\xef") == 0x92 == reference_crc(b"\xbe\xef")
    assert crc8(b"\x00\xbe\xef\x00", 1, 3) == 0x92


@pytest.mark.parametrize("word", [b"\x00\x00", b"\xff\xff", b"\x66\x66", b"\x80\x00", b"\x12\x34"])
def test_crc_matches_polynomial_division(word: bytes) -> None:
    assert crc8(word) == reference_crc(word) == model.crc8(word)


def test_conversion_formulas() -> None:
    assert temperature_c(0) == -45.0
    assert temperature_c(65535) == 130.0
    assert temperature_c(0x6666) == pytest.approx(25.0, abs=1e-9)  # 175 * 0.4 - 45
    assert humidity_pct(0x8000) == pytest.approx(-6 + 125 * 32768 / 65535)
    # RH is cropped to 0..100 %RH, as the datasheet asks.
    assert humidity_pct(0) == 0.0
    assert humidity_pct(65535) == 100.0
    assert humidity_pct(round(6 * 65535 / 125)) == pytest.approx(0.0, abs=0.002)


def test_frame_words_and_crc_errors() -> None:
    frame = bytes([0x66, 0x66, crc8(b"\x66\x66"), 0x80, 0x00, crc8(b"\x80\x00")])
    assert check_words(frame) == (0x6666, 0x8000)
    for bad in (2, 5):
        broken = bytearray(frame)
        broken[bad] ^= 0x01
        with pytest.raises(CRCError) as info:
            check_words(bytes(broken))
        assert isinstance(info.value, SensorError) and isinstance(info.value, OSError)
    with pytest.raises(CRCError):
        check_words(frame[:5])


# ---- against the emulated chip --------------------------------------------------------------

@pytest.mark.parametrize("t_c, rh", [(-40.0, 0.0), (-10.3, 20.0), (21.5, 45.25), (60.0, 95.5),
                                     (85.0, 100.0), (0.0, 3.1)])
def test_round_trip_follows_the_world(bus: FakeI2C, world: FakeWorld, t_c: float,
                                      rh: float) -> None:
    world.set(air_temperature_c=t_c, air_humidity_pct=rh)
    reading = measure(sensor(bus, world), world)
    assert reading["air_temperature"] == pytest.approx(t_c, abs=0.01)
    assert reading["air_humidity"] == pytest.approx(rh, abs=0.01)
    assert set(reading) == {"air_temperature", "air_humidity"}


@pytest.mark.parametrize("precision", ["high", "medium", "low"])
def test_precision_command_and_wait(bus: FakeI2C, world: FakeWorld, precision: str) -> None:
    s = sensor(bus, world, precision)
    wait = s.start_measurement()
    command, tenths = MEASURE[precision]
    assert bus.log[-1] == ("write", 0x44, bytes([command]))
    assert wait == -(-tenths // 10)  # max duration rounded up to whole ms
    assert {"high": 9, "medium": 5, "low": 2}[precision] == wait
    world.advance(wait / 1000)
    assert s.read_measurement()["air_temperature"] == pytest.approx(21.5, abs=0.01)


def test_reading_too_early(bus: FakeI2C, world: FakeWorld) -> None:
    s = sensor(bus, world)
    s.start_measurement()
    world.advance(0.008)
    transfers = len(bus.log)
    with pytest.raises(NotReady):
        s.read_measurement()
    assert len(bus.log) == transfers  # the driver did not touch the bus
    # The chip itself NACKs a read before its 8.3 ms maximum duration...
    with pytest.raises(OSError) as info:
        bus.readfrom(0x44, 6)
    assert info.value.errno == errno.EIO
    # ...and the pending measurement is still there once it is done.
    world.advance(0.001)
    assert s.read_measurement()["air_humidity"] == pytest.approx(45.25, abs=0.01)


def test_chip_nacks_commands_while_busy_and_reads_without_result(bus: FakeI2C,
                                                                 world: FakeWorld) -> None:
    bus.writeto(0x44, b"\xfd")
    with pytest.raises(OSError) as busy:
        bus.writeto(0x44, b"\xfd")
    assert busy.value.errno == errno.EIO
    world.advance(0.0084)
    assert len(bus.readfrom(0x44, 6)) == 6
    with pytest.raises(OSError) as again:  # the result is read once
        bus.readfrom(0x44, 6)
    assert again.value.errno == errno.EIO
    with pytest.raises(OSError):  # unknown command
        bus.writeto(0x44, b"\x42")


def test_read_without_start_or_twice(bus: FakeI2C, world: FakeWorld) -> None:
    s = sensor(bus, world)
    with pytest.raises(NotReady):
        s.read_measurement()
    measure(s, world)
    with pytest.raises(NotReady):
        s.read_measurement()


def test_soft_reset_and_serial_number(bus: FakeI2C, world: FakeWorld) -> None:
    s = sensor(bus, world)
    assert s.serial_number() == bus.devices[0x44].serial
    assert s.soft_reset() == 1
    with pytest.raises(NotReady):
        s.start_measurement()  # the driver knows the chip is still resetting
    with pytest.raises(OSError):
        bus.writeto(0x44, b"\xfd")  # and the chip would NACK
    world.advance(0.001)
    assert measure(s, world)["air_temperature"] == pytest.approx(21.5, abs=0.01)


def test_fault_crc(bus: FakeI2C, world: FakeWorld) -> None:
    s = sensor(bus, world)
    world.inject("sht4x", "crc")
    with pytest.raises(CRCError):
        measure(s, world)
    with pytest.raises(CRCError):
        s.serial_number()
    world.inject("sht4x", None)
    assert measure(s, world)["air_temperature"] == pytest.approx(21.5, abs=0.01)


def test_fault_stuck(bus: FakeI2C, world: FakeWorld) -> None:
    s = sensor(bus, world)
    first = measure(s, world)
    world.inject("sht4x", "stuck")
    world.set(air_temperature_c=30.0, air_humidity_pct=80.0)
    assert measure(s, world) == first
    assert measure(s, world) == first
    world.inject("sht4x", None)
    assert measure(s, world)["air_temperature"] == pytest.approx(30.0, abs=0.01)


def test_fault_noise(bus: FakeI2C, world: FakeWorld) -> None:
    s = sensor(bus, world)
    world.inject("sht4x", "noise")
    readings = [measure(s, world) for _ in range(40)]
    temps = [r["air_temperature"] for r in readings]
    hums = [r["air_humidity"] for r in readings]
    assert len(set(temps)) > 10 and len(set(hums)) > 10
    assert all(abs(t - 21.5) <= model.Device.NOISE_C + 0.01 for t in temps)
    assert all(abs(h - 45.25) <= model.Device.NOISE_PCT + 0.01 for h in hums)


def test_missing_chip(world: FakeWorld) -> None:
    s = SHT4x(FakeI2C({}, world), 0x44, clock=world.ticks_ms)
    with pytest.raises(OSError) as info:
        s.start_measurement()
    assert info.value.errno == errno.ENODEV and not isinstance(info.value, SensorError)


def test_chip_goes_absent_and_returns(bus: FakeI2C, world: FakeWorld) -> None:
    s = sensor(bus, world)
    world.inject("sht4x", "absent")
    with pytest.raises(OSError) as info:
        s.start_measurement()
    assert info.value.errno == errno.ENODEV
    world.inject("sht4x", None)
    assert measure(s, world)["air_humidity"] == pytest.approx(45.25, abs=0.01)


def test_deadline_survives_tick_wrap(world: FakeWorld) -> None:
    ticks = [(1 << 30) - 3]
    s = SHT4x(FakeI2C({0x45: model.Device(world, 0x45)}), 0x45, clock=lambda: ticks[0])
    wait = s.start_measurement()
    ticks[0] = (ticks[0] + wait - 1) & ((1 << 30) - 1)
    with pytest.raises(NotReady):
        s.read_measurement()
    ticks[0] = (ticks[0] + 1) & ((1 << 30) - 1)
    world.advance(wait / 1000)
    assert s.read_measurement()["air_temperature"] == pytest.approx(21.5, abs=0.01)


def test_async_read_with_real_time() -> None:
    world = FakeWorld({"air_temperature_c": 18.0, "air_humidity_pct": 60.0},
                      clock=time.monotonic)
    s = SHT4x(FakeI2C({0x44: model.Device(world, 0x44)}), precision="low")
    reading = asyncio.run(s.read())
    assert reading == {"air_temperature": pytest.approx(18.0, abs=0.01),
                       "air_humidity": pytest.approx(60.0, abs=0.01)}


def test_bad_arguments_name_the_field(bus: FakeI2C) -> None:
    with pytest.raises(ValueError, match="address"):
        SHT4x(bus, 0x40)
    with pytest.raises(ValueError, match="precision"):
        SHT4x(bus, precision="ultra")
