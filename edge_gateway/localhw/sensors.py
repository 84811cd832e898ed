"""The gateway Pi's own I2C sensors, read through Adafruit's CircuitPython drivers.

`LocalSensors` takes any object with busio.I2C's API: Blinka's on a Pi (`open_i2c()`), a
fake bus of register models in tests. Each poll reads every configured sensor and returns
{quantity: value} with the quantity names of sensornode.protocol:

    sht4x   air_temperature (degC), air_humidity (%RH)
    bme680  air_temperature, air_humidity, pressure (hPa), gas_resistance (ohm)
    sgp40   voc_raw (ticks), voc_index (1..500, after its 45 s start-up blackout), compensated
            for the air temperature and humidity the other sensors read in the same poll

When two sensors give the same quantity, the one listed first in the config wins; the other
stands in while the first has failed.

A sensor that fails (OSError from the bus, a CRC error, a missing chip at start) is reported
once as failed and once when it is back, as a `SensorHealthChange` of the poll and one log line
each way; the others are read as usual. Its driver is built anew once it answers again (a chip
that lost power forgot its settings).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import adafruit_bme680
import adafruit_sgp40
import adafruit_sht4x
from sensornode.voc_index import VocIndex

from edge_gateway.localhw.config import SensorConfig
from edge_gateway.messages import Event, Reading, Telemetry

log = logging.getLogger(__name__)

OK, FAILED = "ok", "failed"  # fault event states, as the nodes report them

DriverFactory = Callable[[Any, int], Any]

def open_bme680(i2c: Any, address: int) -> Any:
    # The driver caches a measurement for 1/refresh_rate s: at 1 Hz the four properties read
    # in one poll come from one measurement.
    driver = adafruit_bme680.Adafruit_BME680_I2C(i2c, address, refresh_rate=1)
    fix_bme680_calibration(driver)
    return driver


def fix_bme680_calibration(driver: Any) -> bool:
    """Correct two calibration values adafruit-circuitpython-bme680 (3.7.16) decodes wrongly.

    - par_h1/par_h2: both 12-bit values share register 0xE2; Bosch's datasheet and API take
      par_h1's low nibble from its bits 3:0 and par_h2's from bits 7:4. The driver swaps them
      (h1 = (E3 << 8 | E2) / 16, h2 = E1 * 16 + (E2 & 0x0F)): humidity reads up to a few %RH
      off (1.6 %RH with the emulated part's calibration).
    - range_sw_err (0x04 bits 7:4) is a signed 4-bit value; the driver reads it unsigned, so a
      part with a negative one reads its gas resistance several % low (2.2 % for -1).
    Each fix applies only while the driver still holds exactly its own decoding, so a fixed
    driver is left alone. True if anything was corrected. Uses the driver's private
    attributes: it has no public hook for its calibration."""
    e1, e2, e3 = driver._read(0xE1, 3)
    fixed = False
    calibration = driver._humidity_calibration
    as_driver = (((e3 << 8) | e2) / 16, float(e1 * 16 + (e2 & 0x0F)))
    as_bosch = (float((e3 << 4) | (e2 & 0x0F)), float((e1 << 4) | (e2 >> 4)))
    if (calibration[0], calibration[1]) == as_driver != as_bosch:
        calibration[0], calibration[1] = as_bosch
        fixed = True
    sw_err = driver._read(0x04, 1)[0] >> 4
    if sw_err >= 8 and driver._sw_err == sw_err:
        driver._sw_err = sw_err - 16
        fixed = True
    return fixed


DRIVERS: dict[str, DriverFactory] = {
    "sht4x": lambda i2c, address: adafruit_sht4x.SHT4x(i2c, address),
    "bme680": open_bme680,
    "sgp40": lambda i2c, address: adafruit_sgp40.SGP40(i2c, address),
}


@dataclass(frozen=True)
class SensorHealthChange:
    name: str  # the sensor's configured name
    state: str  # FAILED or OK
    detail: str  # why it failed ("" when back)


@dataclass(frozen=True)
class SensorPoll:
    values: dict[str, float]
    changes: tuple[SensorHealthChange, ...]


class _Sensor:
    def __init__(self, config: SensorConfig, sampling_interval_s: float) -> None:
        self.config = config
        self.driver: Any = None
        self.failed = False
        self.voc = VocIndex(sampling_interval_s) if config.type == "sgp40" else None

    def read(self, i2c: Any, air: Mapping[str, float]) -> dict[str, float]:
        if self.driver is None:
            self.driver = DRIVERS[self.config.type](i2c, self.config.address)
        kind, driver = self.config.type, self.driver
        if kind == "sht4x":
            temperature, humidity = driver.measurements
            return {"air_temperature": float(temperature), "air_humidity": float(humidity)}
        if kind == "bme680":
            return {"air_temperature": float(driver.temperature),
                    "air_humidity": float(driver.relative_humidity),
                    "pressure": float(driver.pressure),
                    "gas_resistance": float(driver.gas)}
        assert self.voc is not None
        # Without a humidity sensor the chip compensates for its datasheet defaults.
        sraw = int(driver.measure_raw(temperature=air.get("air_temperature", 25.0),
                                      relative_humidity=air.get("air_humidity", 50.0)))
        values = {"voc_raw": float(sraw)}
        index = self.voc.process(sraw)
        if index:
            values["voc_index"] = float(index)
        return values


class LocalSensors:
    """Reads the configured sensors on `i2c`; `poll()` once per `sampling_interval_s`
    (the VOC index assumes that rhythm). Blocking: the drivers sleep while a chip measures
    (up to ~2 s for an SGP40 being set up), so the daemon polls from a worker thread."""

    def __init__(self, configs: Sequence[SensorConfig], i2c: Any,
                 sampling_interval_s: float) -> None:
        self._i2c = i2c
        # The SGP40 needs the air the others read first, whatever the config order.
        ordered = sorted(configs, key=lambda config: config.type == "sgp40")
        self._sensors = [_Sensor(config, sampling_interval_s) for config in ordered]

    @property
    def failed(self) -> list[str]:
        """Names of the sensors failing now."""
        return [sensor.config.name for sensor in self._sensors if sensor.failed]

    def poll(self) -> SensorPoll:
        values: dict[str, float] = {}
        changes: list[SensorHealthChange] = []
        for sensor in self._sensors:
            name = sensor.config.name
            try:
                read = sensor.read(self._i2c, values)
            except Exception as exc:  # a driver's error must not stop the other sensors
                sensor.driver = None
                if not sensor.failed:
                    sensor.failed = True
                    detail = describe(exc)
                    log.warning("local sensor %s (%s at %#04x) failed: %s", name,
                                sensor.config.type, sensor.config.address, detail)
                    changes.append(SensorHealthChange(name, FAILED, detail))
                continue
            if sensor.failed:
                sensor.failed = False
                log.warning("local sensor %s is back", name)
                changes.append(SensorHealthChange(name, OK, ""))
            for quantity, value in read.items():
                values.setdefault(quantity, value)
        return SensorPoll(values, tuple(changes))


def describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"[:200]


def telemetry(site: str, node: str, seq: int, ts: float, values: Mapping[str, float],
              received_at: float) -> Telemetry:
    """One poll's values as a telemetry entry of the gateway's own node (one seq, like a
    node's entry), ready for Store.write()."""
    readings = tuple(Reading(node, seq, ts, quantity, value, received_at)
                     for quantity, value in sorted(values.items()))
    return Telemetry(site, node, readings, received_at)


def fault_event(site: str, node: str, seq: int, ts: float, change: SensorHealthChange,
                received_at: float) -> Event:
    """A sensor's failure or return as the fault event a node would send for it."""
    return Event(site, node, seq, ts, "fault", change.name, change.state, change.detail,
                 received_at)
