"""Drivers and the board bridge against the emulated machine, under CPython."""

from __future__ import annotations

import json
from typing import Any

import emu
import machine
import pytest
from sensornode.board import Board
from sensornode.drivers.relay import Relay
from sensornode.drivers.soil_moisture import CapacitiveSoilMoisture

from edge_gateway.boards import BOARDS_DIR
from testkit.emulated import FakeClock, emulated_board, fresh_emulation  # noqa: F401

pytestmark = pytest.mark.usefixtures("fresh_emulation")


def profile(name: str) -> dict[str, Any]:
    data = json.loads((BOARDS_DIR / name / "garden.json").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def clock() -> FakeClock:
    clock = FakeClock()
    emulated_board("emulated", {"adc_noise_raw": 0, "soil_moisture": 50,
                                "evaporation_pct_per_s": 0}, clock)
    return clock


def states(pin_id: int | str) -> list[tuple[str, int | None]]:
    return [(e["mode"], e["level"]) for e in machine.Pin(pin_id).history]


# ---- relay ----------------------------------------------------------------------------------


def test_active_low_relay_boots_off_without_a_glitch(clock: FakeClock) -> None:
    board = Board(profile("emulated"))
    relay = Relay(board.pump_relay_pin(), active_low=True)
    assert not relay.is_on
    # Released, then straight to the inactive (high) level: never low, not even briefly.
    assert states(26) == [("in", None), ("out", 1)]
    assert emu.get().world.actuators()["pump"] is False


def test_relay_drives_the_active_level_when_on(clock: FakeClock) -> None:
    relay = Relay(machine.Pin(26, machine.Pin.OUT, value=1), active_low=True)
    relay.on()
    assert relay.is_on and emu.get().world.actuators()["pump"] is True
    relay.set(False)
    assert not relay.is_on
    relay.set(True)
    relay.off()
    assert states(26) == [("in", None), ("out", 1), ("out", 0), ("out", 1), ("out", 0),
                          ("out", 1)]
    assert relay.active_low


def test_active_high_relay(clock: FakeClock) -> None:
    relay = Relay(machine.Pin(27, machine.Pin.OUT, value=0))
    relay.on()
    assert machine.Pin(27).value() == 1
    relay.off()
    assert states(27) == [("in", None), ("out", 0), ("out", 1), ("out", 0)]


def test_relay_forces_the_inactive_level_on_a_pin_left_active(clock: FakeClock) -> None:
    pin = machine.Pin(26, machine.Pin.OUT, value=0)  # someone left it energized
    Relay(pin, active_low=True)
    assert pin.value() == 1


# ---- soil moisture --------------------------------------------------------------------------


@pytest.mark.parametrize("moisture", [0, 12.5, 50, 87.5, 100])
def test_soil_moisture_reads_the_world(clock: FakeClock, moisture: float) -> None:
    emu.get().set_world(soil_moisture=moisture)
    sensor = CapacitiveSoilMoisture(Board(profile("emulated")).soil_adc(), 50000, 24000)
    percent, raw = sensor.read()
    assert raw == round(50000 - 260 * moisture)
    assert percent == pytest.approx(moisture, abs=0.05)


def test_soil_moisture_averages_noisy_samples(clock: FakeClock) -> None:
    emu.get().set_world(soil_moisture=40, adc_noise_raw=500)
    sensor = CapacitiveSoilMoisture(Board(profile("emulated")).soil_adc(), 50000, 24000,
                                    samples=32)
    percent, raw = sensor.read()
    assert abs(raw - 39600) <= 500
    assert percent == pytest.approx(40, abs=2)


class FixedAdc:
    def __init__(self, *values: int) -> None:
        self.values = list(values)
        self.reads = 0

    def read_u16(self) -> int:
        value = self.values[self.reads % len(self.values)]
        self.reads += 1
        return value


def test_soil_moisture_calibration_is_two_point_and_clamped() -> None:
    def read(raw: int) -> tuple[float, int]:
        result: tuple[float, int] = CapacitiveSoilMoisture(FixedAdc(raw), 40000, 20000).read()
        return result

    assert read(40000) == (0.0, 40000)
    assert read(20000) == (100.0, 20000)
    assert read(30000) == (50.0, 30000)
    assert read(45000) == (0.0, 45000)  # drier than the dry calibration: clamped
    assert read(100) == (100.0, 100)


def test_soil_moisture_takes_the_rounded_mean_of_its_samples() -> None:
    adc = FixedAdc(30000, 30001, 30002, 30003)
    sensor = CapacitiveSoilMoisture(adc, 40000, 20000, samples=4)
    assert sensor.read_raw() == 30002  # 30001.5 rounds up
    assert adc.reads == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [((50000, 50000), "dry_raw, wet_raw: both are 50000"),
     ((24000, 50000), "wet_raw: 50000 is above dry_raw 24000.*swapped"),
     ((70000, 24000), r"dry_raw: must be an ADC reading \(integer 0..65535\), got 70000"),
     ((50000, -1), "wet_raw: must be an ADC reading"),
     ((50000.0, 24000), "dry_raw: must be an ADC reading"),
     ((50000, 24000, 0), "samples: must be an integer 1..64, got 0")],
)
def test_soil_moisture_rejects_bad_calibration(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CapacitiveSoilMoisture(FixedAdc(1), *args)


# ---- board bridge ---------------------------------------------------------------------------


def test_board_builds_hardware_from_the_profile(clock: FakeClock) -> None:
    board = Board(profile("emulated"))
    assert board.name == "emulated"
    assert board.adc_samples == 8
    led = board.status_led_pin()
    assert led is not None and states(2) == [("in", None), ("out", 0)]
    assert board.soil_adc().read_u16() == 37000  # 11 dB attenuation was set
    assert board.unique_id() == machine.unique_id().hex()
    assert len(board.unique_id()) == 12
    assert board.reset_cause() == "power_on"


def test_board_on_pico_w() -> None:
    emulated_board("pico_w", {"adc_noise_raw": 0, "soil_moisture": 100}, FakeClock())
    board = Board(profile("pico_w"))
    assert board.soil_adc().read_u16() == 24000
    relay = Relay(board.pump_relay_pin(), board.relay_active_low)
    relay.on()
    assert states(15) == [("in", None), ("out", 0), ("out", 1)]
    board.status_led_pin()
    assert states("LED") == [("in", None), ("out", 0)]


def test_board_wifi_is_non_blocking(clock: FakeClock) -> None:
    board = Board(profile("emulated"))
    assert board.wlan_status() == "idle"
    board.wlan_connect("garden", "secret")
    assert not board.wlan_connected()
    assert board.wlan_status() == "connecting"
    clock.advance(0.25)
    assert board.wlan_connected()
    assert board.wlan_status() == "got_ip"
    assert board.wlan_ip().startswith("10.42.")
    board.wlan_disconnect()
    assert board.wlan_status() == "idle"


def test_board_without_a_status_led_and_missing_roles(clock: FakeClock) -> None:
    data = profile("emulated")
    del data["pins"]["status_led"]
    board = Board(data)
    assert board.status_led_pin() is None
    del data["pins"]["pump_relay"]
    with pytest.raises(ValueError, match=r"pins\.pump_relay is not set"):
        board.pump_relay_pin()


def test_board_reset_and_watchdog(clock: FakeClock) -> None:
    board = Board(profile("emulated"))
    board.watchdog(3000).feed()
    with pytest.raises(SystemExit):
        board.reset()
