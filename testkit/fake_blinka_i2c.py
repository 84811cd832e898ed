"""A fake busio.I2C over register models, for Adafruit's CircuitPython drivers in tests.

Blinka's own stand-in bus answers random scans, so the gateway's local sensors are tested by
handing the real drivers (adafruit_sht4x, adafruit_bme680, adafruit_sgp40) this bus instead:

    world = FakeWorld({"air_temperature_c": 21.5})
    bus = FakeBlinkaI2C({0x44: sht4x_model(world)}, world)
    with virtual_time(world):
        print(adafruit_sht4x.SHT4x(bus).measurements)   # (21.5..., 50.0...)

The chips are the emulated board's byte-level models (boards/emulated/devices/): they keep
their datasheet timing (busy chips NACK), append correct Sensirion CRCs, and the BME680 holds
a factory calibration and the ADC values that compensate back to the world's air. Values and
faults live in the world (testkit.fake_i2c.FakeWorld): `world.set(air_temperature_c=...)`,
`world.inject(name, "crc" | "stuck" | "noise" | "absent")`.

The bus behaves like Linux's I2C under Blinka: an address with no chip (or one the world marks
"absent") fails with OSError(EREMOTEIO); a chip's own NACK (OSError EIO) passes through; a
zero-length write only probes the address; a transfer without holding the lock is a bug in
the caller and raises RuntimeError. Every transfer is logged in `bus.log`.

`virtual_time(world)` makes the drivers' sleeps advance the world's clock instead of waiting
(the SGP40 driver alone sleeps ~2 s to start), so chip timing is exact and tests are fast.
"""

from __future__ import annotations

import errno
import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from testkit.fake_i2c import FakeWorld

_BOARD = str(Path(__file__).resolve().parent.parent / "boards" / "emulated")
if _BOARD not in sys.path:  # the chip models import each other as `devices.*`
    sys.path.append(_BOARD)

from devices import bme680, sgp40, sht4x  # noqa: E402

__all__ = ["FakeBlinkaI2C", "FakeWorld", "bme680_model", "sgp40_model", "sht4x_model",
           "virtual_time"]

SGP40_FEATURE_SET = 0x3220  # what an SGP40 answers to get_feature_set (0x202F)


class Sgp40Model(sgp40.Device):
    """The emulated SGP40, plus the feature-set query the Adafruit driver checks at start."""

    def i2c_write(self, data: bytes) -> None:
        if bytes(data) == b"\x20\x2f":
            now = self.world.now_s()
            self._check_awake(now)
            self._record(("w", bytes(data)))
            self.busy_until = now + 0.001
            self.answer = [SGP40_FEATURE_SET]
            return
        super().i2c_write(data)


def sht4x_model(world: FakeWorld, address: int = 0x44, name: str = "sht4x") -> Any:
    device = sht4x.Device(world, address)
    device.name = name
    return device


def bme680_model(world: FakeWorld, address: int = 0x77, name: str = "bme680") -> Any:
    device = bme680.Device(world, address)
    device.name = name
    device.regs[0xF0] = 0x00  # variant_id: a BME680 (a BME688 reads 0x01)
    return device


def sgp40_model(world: FakeWorld, address: int = 0x59, name: str = "sgp40") -> Any:
    device = Sgp40Model(world, address)
    device.name = name
    return device


class FakeBlinkaI2C:
    """busio.I2C's API over chip models: {7-bit address: model}."""

    def __init__(self, devices: Mapping[int, Any] | None = None,
                 world: FakeWorld | None = None) -> None:
        self.devices = dict(devices or {})
        self.world = world
        self.locked = False
        self.log: list[tuple[str, int, Any]] = []  # (op, address, bytes written / n read)

    # ---- busio.I2C ----------------------------------------------------------------------

    def try_lock(self) -> bool:
        if self.locked:
            return False
        self.locked = True
        return True

    def unlock(self) -> None:
        self.locked = False

    def scan(self) -> list[int]:
        self._check_locked()
        return sorted(address for address in self.devices if self._present(address))

    def writeto(self, address: int, buffer: Any, *, start: int = 0,
                end: int | None = None) -> None:
        self._check_locked()
        data = bytes(buffer[start:end])
        self.log.append(("w", address, data))
        device = self._device(address)
        if data:  # an empty write is only the address: the chip ACKs it and nothing else
            device.i2c_write(data)

    def readfrom_into(self, address: int, buffer: Any, *, start: int = 0,
                      end: int | None = None) -> None:
        self._check_locked()
        end = len(buffer) if end is None else end
        self.log.append(("r", address, end - start))
        data = self._device(address).i2c_read(end - start)
        buffer[start:end] = data

    def writeto_then_readfrom(self, address: int, buffer_out: Any, buffer_in: Any, *,
                              out_start: int = 0, out_end: int | None = None,
                              in_start: int = 0, in_end: int | None = None) -> None:
        self.writeto(address, buffer_out, start=out_start, end=out_end)
        self.readfrom_into(address, buffer_in, start=in_start, end=in_end)

    def deinit(self) -> None:
        self.locked = False

    def __enter__(self) -> FakeBlinkaI2C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.deinit()

    # ---- test side ----------------------------------------------------------------------

    def attach(self, address: int, device: Any) -> None:
        self.devices[address] = device

    def detach(self, address: int) -> None:
        self.devices.pop(address, None)

    def _present(self, address: int) -> bool:
        device = self.devices.get(address)
        if device is None:
            return False
        return self.world is None or self.world.fault(device.name) != "absent"

    def _device(self, address: int) -> Any:
        if not self._present(address):
            raise OSError(errno.EREMOTEIO, "Remote I/O error")  # Linux: address NACKed
        return self.devices[address]

    def _check_locked(self) -> None:
        if not self.locked:
            raise RuntimeError("I2C bus used without holding its lock (try_lock())")


@contextmanager
def virtual_time(world: FakeWorld, start_s: float = 1000.0) -> Iterator[None]:
    """While inside, the Adafruit drivers' time.sleep() advances the world's clock and their
    time.monotonic() reads it (from `start_s` on: the BME680 driver's first reading must look
    older than its refresh interval)."""

    def sleep(seconds: float) -> None:
        world.advance(max(0.0, seconds))

    def monotonic() -> float:
        return start_s + float(world.now_s())

    clock = types.SimpleNamespace(sleep=sleep, monotonic=monotonic, time=monotonic)
    import adafruit_bme680
    import adafruit_bus_device.i2c_device
    import adafruit_sgp40
    import adafruit_sht4x

    with mock.patch.object(adafruit_sht4x, "time", clock), \
            mock.patch.object(adafruit_bme680, "time", clock), \
            mock.patch.object(adafruit_sgp40, "sleep", sleep), \
            mock.patch.object(adafruit_bus_device.i2c_device, "time", clock):
        yield
