"""SGP40 driver (firmware/sensornode/drivers/sgp40.py) against datasheet values and against
the emulated chip (boards/emulated/devices/sgp40.py) on a fake I2C bus, under CPython."""

from __future__ import annotations

import asyncio
import errno
import itertools
import time

import pytest
from devices import sgp40 as model  # boards/emulated, on pytest's pythonpath
from sensornode.drivers.errors import CRCError, NotReady, SensorError
from sensornode.drivers.sgp40 import (
    ADDRESS,
    MEASURE_MS,
    SELF_TEST_MS,
    SGP40,
    crc8,
    rh_ticks,
    t_ticks,
)
from sensornode.voc_index import VocIndex

from testkit.fake_i2c import FakeI2C, FakeWorld

AIR = {"voc_ppb": 100.0, "air_humidity_pct": 50.0, "air_temperature_c": 25.0}


@pytest.fixture
def world() -> FakeWorld:
    w = FakeWorld(AIR)
    w.t = 1000.0
    return w


@pytest.fixture
def chip(world: FakeWorld) -> model.Device:
    return model.Device(world)


@pytest.fixture
def bus(world: FakeWorld, chip: model.Device) -> FakeI2C:
    return FakeI2C({ADDRESS: chip}, world)


@pytest.fixture
def sensor(bus: FakeI2C, world: FakeWorld) -> SGP40:
    return SGP40(bus, clock=world.ticks_ms)


def measure(sensor: SGP40, world: FakeWorld, rh: float | None = None,
            t: float | None = None) -> dict[str, int]:
    wait_ms = sensor.start_measurement(rh, t)
    world.advance(wait_ms / 1000)
    result = sensor.read_measurement()
    world.advance(1.0 - wait_ms / 1000)  # one sample per second, as the VOC index expects
    return result


def mean_raw(sensor: SGP40, world: FakeWorld, n: int = 20, rh: float | None = None,
             t: float | None = None) -> float:
    return sum(measure(sensor, world, rh, t)["voc_raw"] for _ in range(n)) / n


# ---- datasheet values ----------------------------------------------------------------------


def test_crc8_datasheet_vectors() -> None:
    assert crc8(b"\xbe\xef") == 0x92
    assert crc8(b"\x80\x00") == 0xA2  # the default humidity argument ...
    assert crc8(b"\x66\x66") == 0x93  # ... and temperature argument of the measure command
    assert crc8(b"\x00\xbe\xef\x00", 1, 3) == 0x92
    assert model.crc8(b"\xbe\xef") == 0x92


@pytest.mark.parametrize(("rh", "ticks"), [(0, 0), (50, 0x8000), (100, 0xFFFF), (25, 16384),
                                           (-5, 0), (120, 0xFFFF), (33.3, 21823)])
def test_humidity_ticks(rh: float, ticks: int) -> None:
    assert rh_ticks(rh) == ticks


@pytest.mark.parametrize(("t", "ticks"), [(-45, 0), (25, 0x6666), (130, 0xFFFF), (0, 16852),
                                          (-60, 0), (150, 0xFFFF), (21.7, 24978)])
def test_temperature_ticks(t: float, ticks: int) -> None:
    assert t_ticks(t) == ticks


@pytest.mark.parametrize("bad", [None, "50", float("nan"), True])
def test_ticks_refuse_non_numbers(bad: object) -> None:
    with pytest.raises(ValueError, match="humidity_pct"):
        rh_ticks(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature_c"):
        t_ticks(bad)  # type: ignore[arg-type]


# ---- framing and timing ----------------------------------------------------------------------


def test_uncompensated_measure_command_is_the_datasheet_example(
        sensor: SGP40, bus: FakeI2C) -> None:
    assert sensor.start_measurement() == MEASURE_MS == 30
    assert bus.log == [("write", 0x59, bytes.fromhex("260F 8000A2 666693"))]


def test_compensated_measure_command_carries_rh_and_t_ticks(
        sensor: SGP40, bus: FakeI2C, world: FakeWorld) -> None:
    sensor.start_measurement(humidity_pct=40.0, temperature_c=30.0)
    rh, t = rh_ticks(40.0), t_ticks(30.0)
    assert (rh, t) == (26214, 28086)
    frame = bytes((0x26, 0x0F, rh >> 8, rh & 0xFF)) + bytes((crc8(rh.to_bytes(2, "big")),))
    frame += t.to_bytes(2, "big") + bytes((crc8(t.to_bytes(2, "big")),))
    assert bus.log[-1] == ("write", 0x59, frame)
    world.advance(0.030)
    assert sensor.read_measurement()["voc_raw"] > 0
    assert bus.log[-1][0:2] == ("read", 0x59) and len(bus.log[-1][2]) == 3


def test_reading_early_is_not_ready_without_touching_the_bus(
        sensor: SGP40, bus: FakeI2C, world: FakeWorld) -> None:
    sensor.start_measurement()
    world.advance(0.029)
    with pytest.raises(NotReady, match="busy for 1 ms"):
        sensor.read_measurement()
    with pytest.raises(NotReady):
        sensor.start_measurement()  # nor a new command while the chip measures
    assert len(bus.log) == 1
    world.advance(0.001)
    assert "voc_raw" in sensor.read_measurement()  # the measurement is still there


def test_the_chip_nacks_an_early_read(chip: model.Device, bus: FakeI2C,
                                      world: FakeWorld) -> None:
    bus.writeto(ADDRESS, bytes.fromhex("260F 8000A2 666693"))
    world.advance(0.0290)
    with pytest.raises(OSError) as caught:
        bus.readfrom(ADDRESS, 3)
    assert caught.value.errno == errno.EIO
    with pytest.raises(OSError):  # busy: a command is NACKed too
        bus.writeto(ADDRESS, bytes.fromhex("3682"))
    world.advance(0.0010)
    first = bus.readfrom(ADDRESS, 3)
    assert crc8(first, 0, 2) == first[2]
    with pytest.raises(OSError):  # an answer is read once
        bus.readfrom(ADDRESS, 3)
    assert [entry[0] for entry in chip.log] == ["w", "r"]


@pytest.mark.parametrize("frame", ["26", "260F", "260F 8000A2 6666", "260F 8000A3 666693",
                                   "260F 8000A2 666693 00", "1234", "3615 00"])
def test_the_chip_nacks_bad_commands(bus: FakeI2C, frame: str) -> None:
    with pytest.raises(OSError) as caught:
        bus.writeto(ADDRESS, bytes.fromhex(frame))
    assert caught.value.errno == errno.EIO


def test_a_long_read_is_padded_like_an_idle_bus(bus: FakeI2C, world: FakeWorld) -> None:
    bus.writeto(ADDRESS, bytes.fromhex("3682"))
    world.advance(0.001)
    data = bus.readfrom(ADDRESS, 12)
    assert data[9:] == b"\xff\xff\xff"


def test_read_without_start_is_not_ready(sensor: SGP40) -> None:
    with pytest.raises(NotReady, match="no measurement"):
        sensor.read_measurement()
    with pytest.raises(NotReady, match="no self-test"):
        sensor.read_self_test()


# ---- readings --------------------------------------------------------------------------------


def test_voc_index_is_absent_during_the_blackout_then_follows_the_air(
        sensor: SGP40, world: FakeWorld) -> None:
    readings = [measure(sensor, world, 50.0, 25.0) for _ in range(46)]
    assert all(set(r) == {"voc_raw"} for r in readings)
    readings = [measure(sensor, world, 50.0, 25.0) for _ in range(600)]
    assert all(set(r) == {"voc_raw", "voc_index"} for r in readings)
    assert 90 <= readings[-1]["voc_index"] <= 110  # typical air reads about 100
    world.set(voc_ppb=3000.0)
    event = [measure(sensor, world, 50.0, 25.0) for _ in range(120)]
    assert event[-1]["voc_raw"] < readings[-1]["voc_raw"] - 1000
    # In its first ~45 minutes the algorithm learns the mean within seconds (Sensirion's
    # start-up phase), so even a big event soon becomes the norm ...
    assert max(r["voc_index"] for r in event) > 300 and event[-1]["voc_index"] < 200


def test_voc_index_rises_with_voc_once_learned(bus: FakeI2C, world: FakeWorld) -> None:
    sensor = SGP40(bus, clock=world.ticks_ms)
    for _ in range(3600):  # ... after an hour it holds its baseline: events stand out
        measure(sensor, world, 50.0, 25.0)
    assert 95 <= measure(sensor, world, 50.0, 25.0)["voc_index"] <= 105
    world.set(voc_ppb=3000.0)
    event = [measure(sensor, world, 50.0, 25.0) for _ in range(120)]
    assert event[-1]["voc_index"] > 400
    world.set(voc_ppb=100.0)
    after = [measure(sensor, world, 50.0, 25.0) for _ in range(600)]
    assert 90 <= after[-1]["voc_index"] <= 130


def test_sraw_falls_as_voc_rises(sensor: SGP40, world: FakeWorld) -> None:
    levels = []
    for ppb in (0.0, 100.0, 1000.0, 10000.0, 100000.0):
        world.set(voc_ppb=ppb)
        levels.append(mean_raw(sensor, world))
    assert levels == sorted(levels, reverse=True)
    steps = [a - b for a, b in itertools.pairwise(levels[1:])]  # decade to decade
    assert all(1200 < s < 2000 for s in steps)  # log-like: about the same per decade


def test_humidity_is_compensated_with_the_values_the_driver_sends(
        sensor: SGP40, world: FakeWorld) -> None:
    world.set(air_humidity_pct=30.0, air_temperature_c=22.0)
    dry = mean_raw(sensor, world, rh=30.0, t=22.0)
    dry_default = mean_raw(sensor, world)
    world.set(air_humidity_pct=85.0, air_temperature_c=22.0)
    humid = mean_raw(sensor, world, rh=85.0, t=22.0)
    humid_default = mean_raw(sensor, world)
    assert abs(dry - humid) < 3  # told the truth, the chip cancels humidity
    assert humid_default < dry_default - 300  # told 50 %RH / 25 degC, humid air looks like VOC


def test_a_given_algorithm_is_used(bus: FakeI2C, world: FakeWorld) -> None:
    algorithm = VocIndex()
    algorithm.set_baseline(model.sraw_for(100.0, 50.0, 25.0) - 20000, 60.0)
    restored = SGP40(bus, algorithm=algorithm, clock=world.ticks_ms)
    assert restored.algorithm is algorithm
    readings = [measure(restored, world, 50.0, 25.0) for _ in range(47)]
    assert "voc_index" not in readings[-2]
    assert 95 <= readings[-1]["voc_index"] <= 105  # straight back to the learned baseline


# ---- faults ----------------------------------------------------------------------------------


def test_missing_chip_raises_enodev(world: FakeWorld) -> None:
    sensor = SGP40(FakeI2C({}, world), clock=world.ticks_ms)
    with pytest.raises(OSError) as caught:
        sensor.start_measurement()
    assert caught.value.errno == errno.ENODEV


def test_a_chip_that_vanishes_mid_measurement(sensor: SGP40, world: FakeWorld) -> None:
    sensor.start_measurement()
    world.inject("sgp40", "absent")
    world.advance(0.03)
    with pytest.raises(OSError) as caught:
        sensor.read_measurement()
    assert caught.value.errno == errno.ENODEV
    assert sensor.algorithm.in_blackout and sensor.algorithm.get_state()[0] == 0.0  # not fed
    world.inject("sgp40", None)
    assert "voc_raw" in measure(sensor, world)


def test_crc_fault_raises_crc_error_and_recovers(sensor: SGP40, world: FakeWorld) -> None:
    measure(sensor, world)
    world.inject("sgp40", "crc")
    for _ in range(3):
        with pytest.raises(CRCError, match="CRC mismatch") as caught:
            measure(sensor, world)
    assert isinstance(caught.value, SensorError) and isinstance(caught.value, OSError)
    with pytest.raises(CRCError):
        sensor.start_self_test()
        world.advance(SELF_TEST_MS / 1000)
        sensor.read_self_test()
    world.inject("sgp40", None)
    assert "voc_raw" in measure(sensor, world)
    assert sensor.algorithm.get_state()[0] == 2.0  # only the two good samples were processed


def test_stuck_fault_repeats_the_last_value_and_fails_the_self_test(
        sensor: SGP40, world: FakeWorld) -> None:
    before = measure(sensor, world)["voc_raw"]
    world.inject("sgp40", "stuck")
    world.set(voc_ppb=5000.0)
    assert {measure(sensor, world)["voc_raw"] for _ in range(10)} == {before}
    sensor.start_self_test()
    world.advance(0.32)
    assert sensor.read_self_test() is False
    world.inject("sgp40", None)
    assert measure(sensor, world)["voc_raw"] < before - 1500


def test_noise_fault_widens_the_spread(sensor: SGP40, world: FakeWorld) -> None:
    quiet = [measure(sensor, world)["voc_raw"] for _ in range(50)]
    world.inject("sgp40", "noise")
    noisy = [measure(sensor, world)["voc_raw"] for _ in range(50)]
    assert max(quiet) - min(quiet) <= 2 * model.NOISE_TICKS
    assert max(noisy) - min(noisy) > 200


# ---- maintenance commands --------------------------------------------------------------------


def test_self_test_passes_and_takes_320_ms(sensor: SGP40, bus: FakeI2C,
                                           world: FakeWorld) -> None:
    assert sensor.start_self_test() == 320
    assert bus.log[-1] == ("write", 0x59, b"\x28\x0e")
    world.advance(0.319)
    with pytest.raises(NotReady):
        sensor.read_self_test()
    world.advance(0.001)
    assert sensor.read_self_test() is True


def test_an_unknown_self_test_answer_is_a_sensor_error(
        sensor: SGP40, chip: model.Device, world: FakeWorld) -> None:
    sensor.start_self_test()
    world.advance(0.32)
    chip.answer = [0x1234]
    with pytest.raises(SensorError, match="0x1234"):
        sensor.read_self_test()


def test_serial_number_waits_out_its_millisecond() -> None:
    world = FakeWorld(AIR, clock=time.monotonic)  # serial_number() really sleeps 1 ms
    bus = FakeI2C({ADDRESS: model.Device(world)}, world)
    sensor = SGP40(bus, clock=world.ticks_ms)
    assert sensor.serial_number() == model.SERIAL == 0x2F3A91C4
    assert bus.log[0] == ("write", 0x59, b"\x36\x82") and len(bus.log[1][2]) == 9


def test_heater_off_idles_the_chip(sensor: SGP40, chip: model.Device, bus: FakeI2C,
                                   world: FakeWorld) -> None:
    measure(sensor, world)
    assert chip.heater_on
    sensor.heater_off()
    assert not chip.heater_on and bus.log[-1] == ("write", 0x59, b"\x36\x15")
    with pytest.raises(NotReady, match="no measurement"):
        sensor.read_measurement()
    with pytest.raises(NotReady):  # 1 ms to switch off
        sensor.start_measurement()
    world.advance(0.001)
    assert "voc_raw" in measure(sensor, world) and chip.heater_on


def test_async_read_waits_for_the_conversion() -> None:
    world = FakeWorld(AIR, clock=time.monotonic)
    sensor = SGP40(FakeI2C({ADDRESS: model.Device(world)}, world), clock=world.ticks_ms)

    async def main() -> list[dict[str, int]]:
        return [await sensor.read(50.0, 25.0) for _ in range(3)]

    readings = asyncio.run(main())
    assert [set(r) for r in readings] == [{"voc_raw"}] * 3
    assert asyncio.run(sensor.self_test()) is True
