"""The DS18B20 driver against the emulated 1-Wire bus and chip model under the real MicroPython
interpreter: datasheet vectors, a ROM search over three probes, each probe's reading, and the
crc / absent / stuck faults. The script runs in-process on an emulated board with a fake clock
and prints one JSON line of results."""

from __future__ import annotations

import json
from pathlib import Path

from hil_tests.target import run_micropython

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json
import emu, machine, onewire
from devices import ds18b20 as chip
from sensornode.drivers import ds18b20 as driver
from sensornode.drivers.errors import CRCError, NotReady

class Clock:
    ms = 1000
    def __call__(self):
        return self.ms
    def advance(self, ms):
        self.ms += ms

clock = Clock()
out = {}
out["crc"] = [driver.crc8(bytes.fromhex("021cb801000000")),
              driver.crc8(bytes.fromhex("50054b467fff0c10")),
              onewire.crc8(bytes.fromhex("50054b467fff0c101c"))]
temps = [125.0, 85.0, 25.0625, 10.125, 0.5, 0.0, -0.5, -10.125, -25.0625, -55.0]
out["encode"] = [chip.encode_temperature(t) for t in temps]
out["decode"] = [driver.decode_temperature(r & 0xFF, r >> 8) for r in out["encode"]]

probes = [{"model": "ds18b20", "rom": "28030000000000", "name": "p3", "probe": 3},
          {"model": "ds18b20", "rom": "28010000000000", "name": "p1", "probe": 1},
          {"model": "ds18b20", "rom": "28020000000000", "name": "p2", "probe": 2}]
config = {"wiring": {"onewire": 4},
          "conditions": {"soil_temperature_c": 18.0, "soil_temperature_lag_s": 10000000,
                         "soil_temperature_offset_c_2": -1.5,
                         "soil_temperature_offset_c_3": 2.25}}
import devices
i2c, wire, names = devices.normalize([], probes)
config["onewire"] = wire
sim = emu.configure(config, None, clock)
bus = onewire.OneWire(machine.Pin(4))
sensor = driver.DS18B20(bus, resolution=11, clock=clock)
out["roms"] = [r.hex() for r in sensor.scan()]
out["platform_scan"] = sorted(bytes(r).hex() for r in bus.scan())
out["wait"] = sensor.start_measurement()
try:
    sensor.read_measurement()
    out["early"] = "read"
except NotReady:
    out["early"] = "NotReady"
clock.advance(out["wait"])
out["values"] = sensor.read_measurement()

def measure():
    clock.advance(sensor.start_measurement())
    values, errors = sensor.read_probes()
    for key in errors:
        err = errors[key]
        values[key] = "%s %s" % (type(err).__name__, err.errno)
    return values

sim.set_world(faults={"p2": "crc"})
out["crc_fault"] = measure()
sim.set_world(faults={"p2": None, "p3": "absent"})
out["absent"] = measure()
sim.set_world(faults={"p3": None, "p1": "stuck"}, soil_temperature_c=25.0)
out["stuck"] = measure()
sim.set_world(faults={"p1": None, "p2": "absent", "p3": "absent"})
out["recovered_p1"] = measure()["soil_temperature"]
sim.set_world(faults={"p1": "absent"})
try:
    sensor.start_measurement()
    out["all_absent"] = "read"
except OSError as exc:
    out["all_absent"] = exc.errno
print(json.dumps(out))
"""


def test_ds18b20_driver_and_model_under_micropython(tmp_path: Path) -> None:
    script = tmp_path / "ds18b20_check.py"
    script.write_text(SCRIPT)
    output = run_micropython(
        script, path=[REPO / "boards/emulated", REPO / "firmware"], cwd=tmp_path
    )
    out = json.loads(output.strip().splitlines()[-1])
    assert out["crc"] == [0xA2, 0x1C, 0]
    assert out["encode"] == [
        0x07D0,
        0x0550,
        0x0191,
        0x00A2,
        0x0008,
        0x0000,
        0xFFF8,
        0xFF5E,
        0xFE6F,
        0xFC90,
    ]
    assert out["decode"] == [125.0, 85.0, 25.0625, 10.125, 0.5, 0.0, -0.5, -10.125, -25.0625, -55.0]
    roms = ["2801000000000029", "2802000000000070", "2803000000000047"]
    assert out["roms"] == roms == out["platform_scan"]
    assert (out["wait"], out["early"]) == (375, "NotReady")
    assert out["values"] == {
        "soil_temperature": 18.0,
        "soil_temperature_2": 16.5,
        "soil_temperature_3": 20.25,
    }
    errno_eio, errno_enodev = 5, 19  # Linux values, as on the unix port
    assert out["crc_fault"] == {
        "soil_temperature": 18.0,
        "soil_temperature_3": 20.25,
        "soil_temperature_2": f"CRCError {errno_eio}",
    }
    assert out["absent"] == {
        "soil_temperature": 18.0,
        "soil_temperature_2": 16.5,
        "soil_temperature_3": f"OSError {errno_enodev}",
    }
    # p1 stuck at 18.0 while the soil warmed; p3 came back (powered up, reconfigured).
    assert out["stuck"]["soil_temperature"] == 18.0
    assert out["stuck"]["soil_temperature_2"] == 23.5
    assert out["stuck"]["soil_temperature_3"] == 27.25
    assert out["recovered_p1"] == 25.0
    assert out["all_absent"] == errno_enodev
