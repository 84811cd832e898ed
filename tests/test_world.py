"""The world model (boards/emulated/world.py) and the control channel (boards/emulated/emu.py),
in-process under CPython with a fake clock: no sleeps."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import devices
import emu
import machine
import pytest
from world import CONDITIONS, World, check_condition, normalize_wiring

from edge_gateway.emulated_world import EMULATED_DIR, world_config
from testkit.emulated import FakeClock, emulated_board, fresh_emulation  # noqa: F401

pytestmark = pytest.mark.usefixtures("fresh_emulation")

WIRING = {"soil_probe": 34, "pump_relay": {"pin": 26, "active_low": True},
          "status_led": {"pin": 2, "active_low": False}}
QUIET = {"adc_noise_raw": 0}


def make_world(**conditions: object) -> World:
    return World(WIRING, {**QUIET, **conditions}, 0.0)


# ---- physics --------------------------------------------------------------------------------


def test_defaults_are_the_documented_conditions() -> None:
    world = World()
    for name, spec in CONDITIONS.items():
        assert world.conditions[name] == spec[0]
    assert world.actuators() == {}


def test_soil_dries_by_evaporation_over_time() -> None:
    world = make_world(soil_moisture=50, evaporation_pct_per_s=0.5)
    world.step(10.0)
    assert world.soil_moisture == pytest.approx(45.0)


def test_pump_wets_the_soil_only_while_energized_at_the_active_level() -> None:
    world = make_world(soil_moisture=40, evaporation_pct_per_s=0.1, pump_flow_pct_per_s=2.0)
    world.pin_driven(26, 1, 0.0)  # active-low relay: high is off
    world.step(5.0)
    assert world.soil_moisture == pytest.approx(39.5)
    assert world.actuators()["pump"] is False
    assert world.pin_driven(26, 0, 5.0) is True  # low energizes it; pin 26 is an actuator
    assert world.actuators()["pump"] is True
    world.step(10.0)
    assert world.soil_moisture == pytest.approx(39.5 + 5 * (2.0 - 0.1))
    world.pin_driven(26, None, 10.0)  # released: the module's pull-up keeps it off
    assert world.actuators()["pump"] is False


def test_moisture_is_clamped_to_0_and_100() -> None:
    world = make_world(soil_moisture=1, evaporation_pct_per_s=1)
    world.step(100.0)
    assert world.soil_moisture == 0.0
    world.set({"soil_moisture": 99, "pump_flow_pct_per_s": 10}, 100.0)
    world.pin_driven(26, 0, 100.0)
    world.step(200.0)
    assert world.soil_moisture == 100.0


def test_lazy_steps_add_up_exactly() -> None:
    one, many = make_world(evaporation_pct_per_s=0.3), make_world(evaporation_pct_per_s=0.3)
    for world in (one, many):
        world.pin_driven(26, 0, 2.0)
    one.step(12.0)
    for i in range(1, 101):
        many.step(2.0 + i * 0.1)
    assert many.soil_moisture == pytest.approx(one.soil_moisture)


def test_time_scale_speeds_up_the_world() -> None:
    world = make_world(soil_moisture=50, evaporation_pct_per_s=0.1, time_scale=60)
    world.step(1.0)
    assert world.soil_moisture == pytest.approx(44.0)
    assert world.sim_s == pytest.approx(60.0)


def test_probe_raw_is_linear_from_dry_to_saturated() -> None:
    world = make_world()
    for moisture, raw in ((0, 50000), (100, 24000), (50, 37000), (25, 43500)):
        world.set({"soil_moisture": moisture}, 0.0)
        assert world.probe_raw() == pytest.approx(raw)
        assert world.adc_raw(34, 0.0) == raw


def test_adc_noise_stays_within_its_amplitude() -> None:
    world = make_world(soil_moisture=50, adc_noise_raw=200)
    readings = {world.adc_raw(34, 0.0) for _ in range(200)}
    assert min(readings) >= 37000 - 200
    assert max(readings) <= 37000 + 200
    assert len(readings) > 10  # it is noise, not a constant


def test_unwired_or_disconnected_probe_reads_nothing() -> None:
    world = make_world()
    assert world.adc_raw(35, 0.0) is None
    world.set({"soil_probe_connected": False}, 0.0)
    assert world.adc_raw(34, 0.0) is None


def test_conditions_are_checked_by_name_type_and_range() -> None:
    world = make_world(soil_moisture=30)
    with pytest.raises(ValueError, match=r"'soil_moistur' is unknown; known: .*soil_moisture"):
        world.set({"soil_moistur": 3}, 0.0)
    with pytest.raises(ValueError, match=r"soil_moisture: must be a number in 0\.\.100"):
        world.set({"evaporation_pct_per_s": 1, "soil_moisture": 120}, 0.0)
    assert world.conditions["evaporation_pct_per_s"] != 1  # nothing applied
    with pytest.raises(ValueError, match="wifi_available: must be true or false"):
        check_condition("wifi_available", 1)
    with pytest.raises(ValueError, match="wifi_ssid: must be text"):
        check_condition("wifi_ssid", 5)


def test_wiring_shorthand_and_unknown_roles() -> None:
    assert normalize_wiring({"soil_probe": 34}) == {"soil_probe": {"pin": 34, "active_low": False}}
    with pytest.raises(ValueError, match=r"wiring\.fan: unknown role"):
        normalize_wiring({"fan": 4})
    # Float switches are wired switch-to-GND with a pull-up unless told otherwise.
    assert normalize_wiring({"tank_switch_2": 19, "diffuser_4": 13, "onewire": 4}) == {
        "tank_switch_2": {"pin": 19, "active_low": True},
        "diffuser_4": {"pin": 13, "active_low": False},
        "onewire": {"pin": 4, "active_low": False}}


def test_every_condition_is_documented_in_the_readme() -> None:
    readme = (EMULATED_DIR / "README.md").read_text()
    for name in CONDITIONS:
        pattern = re.sub(r"_(\d)$", "_<n>", name)
        alt = re.sub(r"_(\d)$", "_<t>", name)
        assert f"`{name}`" in readme or f"`{pattern}`" in readme or f"`{alt}`" in readme, name


def test_whole_number_conditions_refuse_fractions() -> None:
    assert check_condition("diffuser_tank_3", 2) == 2
    for bad in (3, 1.5, True):
        with pytest.raises(ValueError, match=r"diffuser_tank_3: must be a whole number in 1\.\.2"):
            check_condition("diffuser_tank_3", bad)


# ---- what device models see: value, now_s, fault -------------------------------------------


def test_value_names_for_device_models() -> None:
    world = make_world(air_temperature_c=24.5, air_humidity_pct=61, pressure_hpa=990.5,
                       voc_ppb=250, soil_temperature_c=15, soil_temperature_offset_c_3=-2.5)
    assert [world.value(n) for n in ("air_temperature_c", "air_humidity_pct", "pressure_hpa",
                                     "voc_ppb", "soil_temperature_c")] == [24.5, 61, 990.5, 250,
                                                                           15]
    assert world.value("soil_temperature_c_1") == 15
    assert world.value("soil_temperature_c_2") == 15
    assert world.value("soil_temperature_c_3") == 12.5
    for bad in ("soil_temperature_c_9", "soil_temperature_c_x", "co2_ppm"):
        with pytest.raises(ValueError, match=r"world value .* is unknown; known: air_temp"):
            world.value(bad)


def test_now_s_is_the_board_clock_and_value_steps_the_world_to_it() -> None:
    world = make_world(air_temperature_c=20, air_temperature_drift_c_per_h=36)
    now = [0.0]
    world.clock = lambda: now[0]
    now[0] = 100.0
    assert world.now_s() == 100.0
    assert world.value("air_temperature_c") == pytest.approx(21.0)  # 0.01 degC/s for 100 s


def test_faults_merge_clear_and_are_checked() -> None:
    world = make_world()
    world.device_names = ["sht4x", "ds18b20_1"]
    assert world.fault("sht4x") is None
    world.set({"faults": {"sht4x": "crc"}}, 0.0)
    world.set({"faults": {"ds18b20_1": "absent"}}, 0.0)
    assert (world.fault("sht4x"), world.fault("ds18b20_1")) == ("crc", "absent")
    world.set({"faults": {"sht4x": None, "ds18b20_1": ""}}, 0.0)
    assert world.conditions["faults"] == {}
    with pytest.raises(ValueError, match=r"faults: sht4x: 'broken' is not a fault; use one of "
                                         r"absent, crc, stuck, noise, or null"):
        world.set({"faults": {"sht4x": "broken"}}, 0.0)
    with pytest.raises(ValueError, match=r"no device named 'sht41' on this board; devices: "
                                         r"ds18b20_1, sht4x"):
        world.set({"faults": {"sht41": "crc"}}, 0.0)
    with pytest.raises(ValueError, match="faults: must be an object"):
        check_condition("faults", "sht4x")


# ---- the device lists of world.json ---------------------------------------------------------


def test_device_lists_get_names_and_roms() -> None:
    i2c, wire, names = devices.normalize(
        [{"model": "sht4x", "address": 68}, {"model": "sht4x", "address": 69, "bus": 1}],
        [{"model": "ds18b20"}, {"rom": "28010000000000", "probe": 2, "name": "deep"}])
    assert [(d["name"], d["bus"]) for d in i2c] == [("sht4x", 0), ("sht4x_2", 1)]
    assert [(d["name"], d["probe"]) for d in wire] == [("ds18b20_1", 1), ("deep", 2)]
    assert wire[1]["rom"] == "2801000000000029"  # the CRC appended
    assert devices.crc8(bytes.fromhex(wire[0]["rom"])) == 0 and wire[0]["rom"][:2] == "28"
    assert names == ["deep", "ds18b20_1", "sht4x", "sht4x_2"]


@pytest.mark.parametrize(("i2c", "wire", "message"), [
    ([{"model": "sht5x", "address": 68}], [],
     r"i2c_devices\[0\]\.model: 'sht5x' is unknown: there is no boards/emulated/devices/"
     r"sht5x\.py; known models: .*ds18b20.*sht4x"),
    ([{"model": "../x", "address": 68}], [], r"i2c_devices\[0\]\.model: must be a chip model"),
    ([{"model": "sht4x", "address": 200}], [], r"address: must be a 7-bit I2C address 8\.\.119"),
    ([{"model": "sht4x", "address": 68}, {"model": "sht4x", "address": 68, "name": "b"}], [],
     r"i2c_devices\[1\]\.address: 0x44 on bus 0 is already used by i2c_devices\[0\]"),
    ([{"model": "sht4x", "address": 68, "bus": 2}], [], r"bus: must be 0 or 1"),
    ([{"model": "sht4x", "address": 68, "name": "x"}], [{"name": "x"}],
     r"onewire\[0\]\.name: 'x' is already used by i2c_devices\[0\]"),
    ([], [{"rom": "2801000000000000"}],
     r"onewire\[0\]\.rom: its last byte must be the CRC-8 of the first 7, 0x29; got 0x00"),
    ([], [{"rom": "1001000000000000"[:14]}], r"a ds18b20's family code is 0x28"),
    ([], [{"rom": "28zz"}], r"rom: must be 14 or 16 hex digits"),
    ([], [{"rom": "28010000000000"}, {"rom": "2801000000000029"}],
     r"onewire\[1\]\.rom: 2801000000000029 is already the ROM of onewire\[0\]"),
    ([], [{"model": "sht4x"}], r"onewire\[0\]\.model: 'sht4x' is not a 1-Wire chip"),
    ([], [{"probe": 9}], r"onewire\[0\]\.probe: must be the soil probe number 1\.\.8"),
    ("sht4x", [], r"i2c_devices: must be a list"),
])
def test_device_list_mistakes_name_the_entry_and_the_fix(i2c: object, wire: object,
                                                          message: str) -> None:
    with pytest.raises(ValueError, match=message):
        devices.normalize(i2c, wire)


def test_unknown_model_stops_the_board_at_start() -> None:
    config = {"i2c_devices": [{"model": "nosuchchip", "address": 64}]}
    with pytest.raises(ValueError, match="'nosuchchip' is unknown"):
        emu.configure(config)


def test_world_config_takes_devices_from_the_profile_or_the_world() -> None:
    from edge_gateway.boards import load_profile

    garden = load_profile("emulated")
    config = world_config(garden)
    assert [d["name"] for d in config["i2c_devices"]] == ["sht4x"]  # type: ignore[attr-defined]
    assert [d["name"] for d in config["onewire"]] == ["ds18b20_1"]  # type: ignore[attr-defined]
    assert config["wiring"]["tank_switch_1"] == {"pin": 27, "active_low": True}  # type: ignore[index]
    config = world_config(garden, {"i2c_devices": [], "onewire": [], "soil_moisture": 3})
    assert (config["i2c_devices"], config["onewire"], config["conditions"]) == (
        [], [], {"soil_moisture": 3})
    with pytest.raises(ValueError, match="no device named 'sgp40'"):
        world_config(garden, {"faults": {"sgp40": "crc"}})
    drone = world_config(load_profile("emulated", role="drone"))
    assert drone["onewire"] == []
    wiring = drone["wiring"]
    assert isinstance(wiring, dict)
    assert wiring["mq135"] == {"pin": 35}
    assert [wiring[f"diffuser_{n}"]["pin"] for n in range(1, 5)] == [25, 26, 27, 13]


# ---- control channel ------------------------------------------------------------------------


def write_control(emu_dir: Path, rev: int, changes: list[dict[str, object]]) -> None:
    tmp = emu_dir / "control.json.tmp"
    tmp.write_text(json.dumps({"rev": rev, "changes": changes}))
    os.replace(tmp, emu_dir / "control.json")


def read_state(emu_dir: Path) -> dict[str, object]:
    state = json.loads((emu_dir / "state.json").read_text())
    assert isinstance(state, dict)
    return state


@pytest.fixture
def channel(tmp_path: Path) -> tuple[Path, FakeClock]:
    clock = FakeClock()
    emulated_board("emulated", {"adc_noise_raw": 0, "soil_moisture": 50,
                                "evaporation_pct_per_s": 0}, clock, tmp_path)
    return tmp_path, clock


def test_control_changes_apply_once_in_order_on_hardware_access(
        channel: tuple[Path, FakeClock]) -> None:
    emu_dir, clock = channel
    adc = machine.ADC(34, atten=machine.ADC.ATTN_11DB)
    write_control(emu_dir, 2, [{"rev": 1, "set": {"soil_moisture": 0}},
                               {"rev": 2, "set": {"soil_moisture": 100, "adc_noise_raw": 0}}])
    clock.advance(0.2)
    assert adc.read_u16() == 24000  # both applied, in order
    state = read_state(emu_dir)
    assert state["control_rev"] == 2
    assert state["world"]["soil_moisture"] == 100  # type: ignore[index]
    # A later file still listing rev 2 does not re-apply it.
    write_control(emu_dir, 3, [{"rev": 2, "set": {"soil_moisture": 0}},
                               {"rev": 3, "set": {"evaporation_pct_per_s": 1}}])
    clock.advance(0.2)
    assert adc.read_u16() == 24000
    clock.advance(10)
    assert adc.read_u16() == 24000 + 10 * 260  # 10 s at 1 %/s, 260 raw per %


def test_control_is_checked_at_most_every_100_ms(channel: tuple[Path, FakeClock]) -> None:
    emu_dir, clock = channel
    adc = machine.ADC(34, atten=machine.ADC.ATTN_11DB)
    clock.advance(0.2)
    adc.read_u16()
    write_control(emu_dir, 1, [{"rev": 1, "set": {"soil_moisture": 0}}])
    clock.advance(0.05)
    assert adc.read_u16() == 37000
    clock.advance(0.06)
    assert adc.read_u16() == 50000


def test_a_bad_control_change_is_reported_not_fatal(channel: tuple[Path, FakeClock]) -> None:
    emu_dir, clock = channel
    write_control(emu_dir, 1, [{"rev": 1, "set": {"soil_wetness": 3}}])
    clock.advance(0.2)
    machine.idle()
    state = read_state(emu_dir)
    assert state["control_rev"] == 1
    assert "soil_wetness" in str(state["control_error"])


def test_state_is_written_at_each_pin_change_even_between_polls(
        channel: tuple[Path, FakeClock]) -> None:
    emu_dir, _clock = channel
    relay = machine.Pin(26, machine.Pin.OUT, value=1)
    assert read_state(emu_dir)["actuators"] == {"pump": False, "status_led": False}
    relay.value(0)  # same instant: no rate limit applies to actuator changes
    state = read_state(emu_dir)
    assert state["actuators"]["pump"] is True  # type: ignore[index]
    assert state["pins"]["26"] == {"mode": "out", "level": 0}  # type: ignore[index]
    lines = [json.loads(line) for line in (emu_dir / "pins.log").read_text().splitlines()]
    assert [(e["pin"], e["mode"], e["level"]) for e in lines] == [
        (26, "in", None), (26, "out", 1), (26, "out", 0)]


def test_state_refreshes_at_most_every_half_second(channel: tuple[Path, FakeClock]) -> None:
    emu_dir, clock = channel
    first = read_state(emu_dir)["t_ms"]
    clock.advance(0.3)
    machine.idle()
    assert read_state(emu_dir)["t_ms"] == first
    clock.advance(0.3)
    machine.idle()
    assert read_state(emu_dir)["t_ms"] == 600


def test_faults_arrive_through_the_control_channel(channel: tuple[Path, FakeClock]) -> None:
    emu_dir, clock = channel
    write_control(emu_dir, 2, [{"rev": 1, "set": {"faults": {"sht4x": "absent"}}},
                               {"rev": 2, "set": {"faults": {"sht4": "crc"}}}])
    clock.advance(0.2)
    i2c = machine.I2C(0, scl=22, sda=21)
    assert i2c.scan() == []  # rev 1 applied: the SHT4x is off the bus
    state = read_state(emu_dir)
    assert state["world"]["faults"] == {"sht4x": "absent"}  # type: ignore[index]
    assert "rev 2: world condition faults: no device named 'sht4'" in str(state["control_error"])
    assert state["devices"] == ["ds18b20_1", "sht4x"]


def test_a_power_cut_restarts_the_mq135_heater_a_deep_sleep_does_not(
        channel: tuple[Path, FakeClock]) -> None:
    emu_dir, _clock = channel
    emu.get().set_world(mq135_heated_s=500)
    config = json.loads(json.dumps(emu.get().config))
    with pytest.raises(SystemExit):
        machine.deepsleep(10)
    emu.configure(config, str(emu_dir), FakeClock())
    assert emu.get().world.conditions["mq135_heated_s"] >= 500
    emu.configure(config, str(emu_dir), FakeClock())  # no reset.json: power-on, i.e. a cut
    assert emu.get().world.conditions["mq135_heated_s"] == 0


def test_a_new_boot_resumes_the_world_and_reads_its_reset_cause(
        channel: tuple[Path, FakeClock]) -> None:
    emu_dir, clock = channel
    write_control(emu_dir, 1, [{"rev": 1, "set": {"soil_moisture": 20}}])
    clock.advance(0.2)
    machine.Pin(26, machine.Pin.OUT, value=0)  # pump on: the next boot must release it
    with pytest.raises(SystemExit):
        machine.deepsleep(5000)
    assert json.loads((emu_dir / "reset.json").read_text()) == {"cause": 4, "sleep_ms": 5000}
    config = json.loads(json.dumps(emu.get().config))
    emu.configure(config, str(emu_dir), FakeClock())
    assert not (emu_dir / "reset.json").exists()
    assert machine.reset_cause() == machine.DEEPSLEEP_RESET
    state = read_state(emu_dir)
    assert (state["boot"], state["reset_cause"], state["control_rev"]) == (2, "deepsleep", 1)
    assert state["world"]["soil_moisture"] == pytest.approx(20, abs=0.01)  # type: ignore[index]
    assert state["actuators"]["pump"] is False  # type: ignore[index]
