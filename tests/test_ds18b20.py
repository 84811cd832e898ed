"""DS18B20 over 1-Wire under CPython: datasheet vectors (CRC-8, temperature encoding), the
emulated platform bus (boards/emulated/onewire.py) and chip model (devices/ds18b20.py) at the
bit level, and our driver (sensornode.drivers.ds18b20) against them. Fake clock; no sleeps
except the async read, which waits the real 94 ms of a 9-bit conversion."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import devices
import emu
import machine
import onewire
import pytest
from devices import ds18b20 as chip
from sensornode.drivers import ds18b20 as driver
from sensornode.drivers.errors import CRCError, NotReady, SensorError

from testkit.emulated import FakeClock, emulated_board, fresh_emulation  # noqa: F401

pytestmark = pytest.mark.usefixtures("fresh_emulation")

PIN = 4  # the emulated garden profile's onewire pin
# ROMs chosen so the search forks at bit 8 (serial byte 0), bit 9 and bit 55 (serial byte 5).
ROM_A = "28010000000000"
ROM_B = "28020000000000"
ROM_C = "28030000000000"
ROM_D = "28010000000080"


def rom(prefix: str) -> bytes:
    return devices.parse_rom("test", prefix, 0x28)


def board(clock: FakeClock, probes: list[dict[str, Any]] | None = None,
          **conditions: object) -> Any:
    if probes is None:
        probes = [{"rom": ROM_A, "name": "p1", "probe": 1},
                  {"rom": ROM_B, "name": "p2", "probe": 2},
                  {"rom": ROM_C, "name": "p3", "probe": 3}]
    world = {"adc_noise_raw": 0, "soil_temperature_c": 21.0, "soil_temperature_lag_s": 10000000,
             "air_temperature_c": 21.0, "soil_temperature_offset_c_2": -1.5,
             "soil_temperature_offset_c_3": 2.25, "onewire": probes, **conditions}
    return emulated_board("emulated", world, clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def bus() -> Any:
    return onewire.OneWire(machine.Pin(PIN))


def probes(clock: FakeClock, resolution: int = 12) -> driver.DS18B20:
    return driver.DS18B20(bus(), resolution=resolution, clock=clock)


def measure(sensor: driver.DS18B20, clock: FakeClock) -> dict[str, float]:
    clock.advance(sensor.start_measurement() / 1000)
    return sensor.read_measurement()


# ---- datasheet vectors ----------------------------------------------------------------------

# Maxim application note 27's ROM example (family 0x02, serial 0x000001B81C, CRC 0xA2) and the
# DS18B20's power-on scratchpad (+85 degC, TH 75, TL 70, 12 bits, CRC 0x1C).
CRC_VECTORS = [(bytes.fromhex("021cb801000000"), 0xA2),
               (bytes.fromhex("5005"
                              "4b467fff0c10"), 0x1C),
               (b"", 0x00)]


@pytest.mark.parametrize(("data", "crc"), CRC_VECTORS)
def test_crc8_vectors_in_driver_chip_and_platform(data: bytes, crc: int) -> None:
    for crc8 in (driver.crc8, devices.crc8, onewire.crc8):
        assert crc8(data) == crc
        assert crc8(data + bytes([crc])) == 0  # a block followed by its CRC checks to 0


# The datasheet's temperature/data relationship table (12 bits).
TEMPERATURES = [(125.0, 0x07D0), (85.0, 0x0550), (25.0625, 0x0191), (10.125, 0x00A2),
                (0.5, 0x0008), (0.0, 0x0000), (-0.5, 0xFFF8), (-10.125, 0xFF5E),
                (-25.0625, 0xFE6F), (-55.0, 0xFC90)]


@pytest.mark.parametrize(("celsius", "raw"), TEMPERATURES)
def test_temperature_encoding_both_ways(celsius: float, raw: int) -> None:
    assert chip.encode_temperature(celsius) == raw
    assert driver.decode_temperature(raw & 0xFF, raw >> 8) == celsius


def test_lower_resolutions_leave_their_low_bits_undefined() -> None:
    # 25.0625 degC: 0x0191 at 12 bits; 9 bits have 0.5 degC steps, 10 bits 0.25, 11 bits 0.125.
    assert [chip.encode_temperature(25.0625, bits) for bits in (9, 10, 11, 12)] == \
        [0x0190, 0x0190, 0x0190, 0x0191]
    assert [chip.encode_temperature(-10.125, bits) for bits in (9, 10, 11)] == \
        [0xFF58, 0xFF5C, 0xFF5E]  # -10.5, -10.25, -10.125: the undefined bits cleared
    # The driver ignores undefined bits even when a chip leaves garbage in them.
    assert driver.decode_temperature(0x97, 0x01, 9) == 25.0
    assert driver.decode_temperature(0x5F, 0xFF, 10) == -10.25
    assert chip.encode_temperature(200.0) == 0x07D0  # the range ends at +125 ...
    assert chip.encode_temperature(-80.0) == 0xFC90  # ... and -55 degC


def test_config_byte_and_conversion_time_by_resolution() -> None:
    assert [chip.config_for(bits) for bits in (9, 10, 11, 12)] == [0x1F, 0x3F, 0x5F, 0x7F]
    assert [driver.resolution_of(c) for c in (0x1F, 0x3F, 0x5F, 0x7F)] == [9, 10, 11, 12]
    assert chip.CONVERSION_S == {9: 0.09375, 10: 0.1875, 11: 0.375, 12: 0.75}
    assert driver.CONVERSION_MS == {9: 94, 10: 188, 11: 375, 12: 750}


# ---- the platform bus and the chip model -----------------------------------------------------


def test_onewire_makes_the_pin_open_drain_and_senses_presence(clock: FakeClock) -> None:
    board(clock, probes=[])
    ow = bus()
    assert [(e["mode"], e["level"]) for e in machine.Pin(PIN).history][-1] == ("od", None)
    assert ow.reset() is False  # nobody on the line
    assert ow.readbit() == 1 and ow.readbyte() == 0xFF  # the pull-up
    with pytest.raises(onewire.OneWireError):
        ow.reset(required=True)
    board(clock, probes=[{"rom": ROM_A}])
    assert bus().reset(required=True) is True
    with pytest.raises(ValueError, match="can only be input"):
        onewire.OneWire(machine.Pin(34))  # a 1-Wire master must pull the line low


def test_chips_sit_on_the_wired_pin_only(clock: FakeClock) -> None:
    board(clock, probes=[{"rom": ROM_A}, {"rom": ROM_B, "pin": 5}])
    assert [bytes(r) for r in bus().scan()] == [rom(ROM_A)]
    assert [bytes(r) for r in onewire.OneWire(machine.Pin(5)).scan()] == [rom(ROM_B)]
    assert onewire.OneWire(machine.Pin(13)).reset() is False


def test_read_rom_and_scratchpad_at_power_on(clock: FakeClock) -> None:
    board(clock, probes=[{"rom": ROM_A}])
    ow = bus()
    assert ow.reset()
    ow.writebyte(0x33)  # READ ROM: only one chip may be on the line
    buf = bytearray(8)
    ow.readinto(buf)
    assert bytes(buf) == rom(ROM_A)
    ow.writebyte(0xBE)  # READ ROM selected it: a function command follows
    pad = bytearray(9)
    ow.readinto(pad)
    assert bytes(pad) == bytes.fromhex("50054b467fff0c101c")  # +85 degC until a conversion


def test_convert_t_answers_busy_until_the_conversion_time(clock: FakeClock) -> None:
    board(clock, probes=[{"rom": ROM_A}])
    ow = bus()
    ow.select_rom(rom(ROM_A))
    ow.writebyte(0x44)
    assert [ow.readbit() for _ in range(3)] == [0, 0, 0]
    clock.advance(0.749)
    assert ow.readbit() == 0
    ow.select_rom(rom(ROM_A))
    ow.writebyte(0xBE)
    assert ow.readbyte() | ow.readbyte() << 8 == 0x0550  # before it ends: still +85 degC
    clock.advance(0.001)
    ow.select_rom(rom(ROM_A))
    ow.writebyte(0xBE)
    assert ow.readbyte() | ow.readbyte() << 8 == 21 * 16
    device = emu.get().buses.device("ds18b20_1")
    assert device.conversions == 1
    assert ("rom", 0x55) in device.log and ("func", 0x44) in device.log


def test_match_rom_selects_one_chip_and_the_others_stay_silent(clock: FakeClock) -> None:
    board(clock)
    ow = bus()
    ow.select_rom(rom(ROM_B))
    ow.writebyte(0xB4)  # READ POWER SUPPLY: only the selected chip answers
    assert ow.readbit() == 1
    ow.select_rom(rom(ROM_B)[:7] + b"\x00")  # nobody has this ROM
    ow.writebyte(0xBE)
    assert bytes(ow.readbyte() for _ in range(9)) == b"\xff" * 9


def test_write_copy_recall_and_alarm_search(clock: FakeClock) -> None:
    board(clock)
    ow = bus()
    ow.select_rom(rom(ROM_C))
    ow.write(bytes([0x4E, 20, 0xF6, 0x00]))  # TH +20, TL -10, config 0 -> 9 bits
    device = emu.get().buses.device("p3")
    assert (device.th, device.tl, device.config, device.resolution) == (20, 0xF6, 0x1F, 9)
    ow.select_rom(rom(ROM_C))
    ow.writebyte(0x48)  # COPY SCRATCHPAD: busy for 10 ms
    assert ow.readbit() == 0
    clock.advance(0.01)
    assert ow.readbit() == 1
    assert device.eeprom == [20, 0xF6, 0x1F]
    device.th = 99
    ow.select_rom(rom(ROM_C))
    ow.writebyte(0xB8)  # RECALL E2
    assert ow.readbit() == 1 and device.th == 20
    ow.select_rom(rom(ROM_C))
    ow.write(bytes([0x4E, 30, 10, 0x1F]))  # p3: alarm above 30 or at/below 10 degC
    ow.reset()
    ow.write(b"\xcc\x44")
    clock.advance(0.75)
    # p3 at 23.25 degC is inside its limits; p1, p2 (21, 19.5) are at/below the factory TL 70.
    assert sorted(driver.search_roms(ow, alarm_only=True)) == [rom(ROM_A), rom(ROM_B)]
    ow.select_rom(rom(ROM_A))
    ow.write(bytes([0x4E, 30, 10, 0x7F]))
    ow.select_rom(rom(ROM_B))
    ow.write(bytes([0x4E, 30, 10, 0x7F]))
    assert driver.search_roms(ow, alarm_only=True) == []  # present, none in alarm


# ---- our driver -----------------------------------------------------------------------------


def test_search_finds_three_probes_in_rom_order(clock: FakeClock) -> None:
    board(clock, probes=[{"rom": ROM_C, "probe": 3}, {"rom": ROM_A, "probe": 1},
                         {"rom": ROM_B, "probe": 2}])
    found = driver.search_roms(bus())
    assert sorted(found) == sorted([rom(ROM_A), rom(ROM_B), rom(ROM_C)])
    sensor = probes(clock)
    assert sensor.scan() == sorted([rom(ROM_A), rom(ROM_B), rom(ROM_C)])
    assert sensor.keys() == ["soil_temperature", "soil_temperature_2", "soil_temperature_3"]
    device = emu.get().buses.device("ds18b20_1")
    assert ("rom", 0xF0) in device.log  # a real search, not the platform's scan()


def test_search_walks_deep_forks_and_agrees_with_the_platform_scan(clock: FakeClock) -> None:
    roms = [ROM_A, ROM_B, ROM_C, ROM_D, "28ffffffffffff"]
    board(clock, probes=[{"rom": r, "probe": 1} for r in roms])
    found = driver.search_roms(bus())
    assert sorted(found) == sorted(rom(r) for r in roms)
    assert sorted(bytes(r) for r in bus().scan()) == sorted(found)


def test_search_without_probes_is_enodev(clock: FakeClock) -> None:
    board(clock, probes=[])
    with pytest.raises(OSError) as info:
        probes(clock).scan()
    assert info.value.errno == errno.ENODEV


def test_each_probe_reads_its_own_depth_in_rom_order(clock: FakeClock) -> None:
    board(clock)
    sensor = probes(clock)
    assert measure(sensor, clock) == {"soil_temperature": 21.0, "soil_temperature_2": 19.5,
                                      "soil_temperature_3": 23.25}


@pytest.mark.parametrize(("bits", "wait", "value"),
                         [(9, 94, 21.0), (10, 188, 21.25), (11, 375, 21.25), (12, 750, 21.3125)])
def test_resolution_sets_config_wait_and_steps(clock: FakeClock, bits: int, wait: int,
                                               value: float) -> None:
    board(clock, probes=[{"rom": ROM_A}], soil_temperature_c=21.3)
    sensor = driver.DS18B20(bus(), resolution=bits, roms=[rom(ROM_A).hex()], clock=clock)
    assert sensor.start_measurement() == wait
    device = emu.get().buses.device("ds18b20_1")
    assert device.resolution == bits and (device.th, device.tl) == (75, 70)  # TH/TL kept
    clock.advance((wait - 1) / 1000)
    with pytest.raises(NotReady, match="still running"):
        sensor.read_measurement()
    clock.advance(0.001)
    assert sensor.read_measurement() == {"soil_temperature": value}
    with pytest.raises(NotReady, match="start_measurement"):
        sensor.read_measurement()  # every reading comes from its own conversion


def test_set_resolution_persists_to_eeprom_across_a_power_cycle(clock: FakeClock) -> None:
    sim = board(clock, probes=[{"rom": ROM_A, "name": "p1"}])
    sensor = probes(clock)
    sensor.set_resolution(10, persist=True)
    device = sim.buses.device("p1")
    assert device.eeprom == [75, 70, 0x3F]
    sim.set_world(faults={"p1": "absent"})
    sim.set_world(faults={"p1": None})
    assert bus().reset() and device.resolution == 10  # recalled from EEPROM at power-up
    with pytest.raises(ValueError, match="9, 10, 11 or 12"):
        sensor.set_resolution(13)


def test_a_probe_that_lost_power_reads_85_then_is_configured_again(clock: FakeClock) -> None:
    sim = board(clock, probes=[{"rom": ROM_A, "name": "p1"}, {"rom": ROM_B, "name": "p2"}])
    sensor = probes(clock, resolution=9)
    assert measure(sensor, clock)["soil_temperature"] == 21.0
    sim.set_world(faults={"p1": "absent"})
    sensor.start_measurement()
    sim.set_world(faults={"p1": None})  # back, at 12 bits and +85 degC, missed the CONVERT T
    clock.advance(0.1)
    with pytest.raises(NotReady, match="85 degC power-on value"):
        sensor.read_measurement()
    assert measure(sensor, clock) == {"soil_temperature": 21.0, "soil_temperature_2": 19.5}
    assert sim.buses.device("p1").resolution == 9


def test_crc_fault_is_a_crc_error_for_that_probe_only(clock: FakeClock) -> None:
    sim = board(clock, faults={"p2": "crc"})
    sensor = probes(clock)
    clock.advance(sensor.start_measurement() / 1000)
    values, errors = sensor.read_probes()
    assert values == {"soil_temperature": 21.0, "soil_temperature_3": 23.25}
    assert isinstance(errors["soil_temperature_2"], CRCError)
    clock.advance(sensor.start_measurement() / 1000)
    with pytest.raises(CRCError, match="fails its CRC"):
        sensor.read_measurement()
    sim.set_world(faults={"p2": None})
    assert measure(sensor, clock)["soil_temperature_2"] == 19.5


def test_absent_probes_are_enodev(clock: FakeClock) -> None:
    sim = board(clock)
    sensor = probes(clock)
    sensor.scan()
    sim.set_world(faults={"p1": "absent"})
    clock.advance(sensor.start_measurement() / 1000)
    values, errors = sensor.read_probes()
    assert sorted(values) == ["soil_temperature_2", "soil_temperature_3"]
    assert errors["soil_temperature"].errno == errno.ENODEV
    sim.set_world(faults={"p2": "absent", "p3": "absent"})
    with pytest.raises(OSError) as info:
        sensor.start_measurement()  # no presence pulse at all
    assert info.value.errno == errno.ENODEV


def test_stuck_and_noise_faults(clock: FakeClock) -> None:
    sim = board(clock, probes=[{"rom": ROM_A, "name": "p1"}])
    sensor = probes(clock)
    assert measure(sensor, clock) == {"soil_temperature": 21.0}
    sim.set_world(faults={"p1": "stuck"}, soil_temperature_c=30.0)
    assert measure(sensor, clock) == {"soil_temperature": 21.0}
    sim.set_world(faults={"p1": "noise"})
    readings = {measure(sensor, clock)["soil_temperature"] for _ in range(20)}
    assert len(readings) > 3 and all(29.0 <= r <= 31.0 for r in readings)
    sim.set_world(faults={"p1": None})
    assert measure(sensor, clock) == {"soil_temperature": 30.0}


def test_soil_temperature_follows_the_air_with_a_lag(clock: FakeClock) -> None:
    board(clock, probes=[{"rom": ROM_A}], soil_temperature_lag_s=100, air_temperature_c=31.0,
          soil_temperature_c=21.0)
    sensor = probes(clock)
    clock.advance(100 - 0.75)
    # After one time constant the soil is 1 - 1/e of the way: 21 + 10 * 0.632 = 27.32 degC.
    assert measure(sensor, clock)["soil_temperature"] == pytest.approx(27.32, abs=0.07)


def test_power_supply_mode_is_read(clock: FakeClock) -> None:
    board(clock, probes=[{"rom": ROM_A}])
    assert probes(clock).externally_powered() is True
    board(clock, probes=[{"rom": ROM_A}, {"rom": ROM_B, "parasite": True}])
    assert probes(clock).externally_powered() is False


class StuckLowBus:
    """A line held low (shorted): every reset sees 'presence', every bit reads 0."""

    def reset(self) -> bool:
        return True

    def readbit(self) -> int:
        return 0

    def writebyte(self, value: int) -> None:
        pass

    def write(self, buf: bytes) -> None:
        pass

    def readinto(self, buf: bytearray) -> None:
        buf[:] = bytes(len(buf))


def test_a_line_held_low_is_not_mistaken_for_a_reading() -> None:
    # All zeros has a valid CRC (0); the fixed bits of the config byte give it away.
    sensor = driver.DS18B20(StuckLowBus(), roms=[rom(ROM_A)])
    with pytest.raises(SensorError, match="not a DS18B20's"):
        sensor.read_scratchpad(rom(ROM_A))


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="resolution"):
        driver.DS18B20(StuckLowBus(), resolution=8)
    with pytest.raises(CRCError, match="fails its CRC"):
        driver.DS18B20(StuckLowBus(), roms=["2801000000000000"])
    many = [rom(f"28{n:012x}").hex() for n in range(9)]
    with pytest.raises(ValueError, match="at most 8"):
        driver.DS18B20(StuckLowBus(), roms=many)
    other = devices.crc8(bytes.fromhex("10010000000000"))
    sensor = driver.DS18B20(StuckLowBus(), roms=[f"10010000000000{other:02x}", rom(ROM_B)])
    assert sensor.roms == [rom(ROM_B)]  # a DS18S20 (family 0x10) is not ours to decode


def test_async_read_waits_for_the_conversion() -> None:
    emulated_board("emulated", {"soil_temperature_c": 12.5, "soil_temperature_lag_s": 10000000,
                                "onewire": [{"rom": ROM_A}]})  # the real clock
    sensor = driver.DS18B20(bus(), resolution=9)
    assert asyncio.run(sensor.read()) == {"soil_temperature": 12.5}
