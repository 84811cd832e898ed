"""The `[local_hardware]` section of the gateway's TOML file: the Pi's own pins and I2C sensors.

    [local_hardware]
    node = "gateway"             # node name the Pi's own sensor readings are stored under
    poll_interval_s = 30         # how often the local sensors are read

    [local_hardware.estop_button]
    pin = 17                     # BCM number
    pull_up = true               # button wired to ground (the usual): pressed = low

    [local_hardware.status_led]
    pin = 27
    active_high = true

    [local_hardware.master_valve]
    pin = 22
    active_high = false          # most relay boards switch on a low input
    close_delay_s = 5.0          # keep the main line open this long after the last node stops

    [[local_hardware.sensors]]
    type = "sht4x"               # sht4x | bme680 | sgp40
    address = 0x44               # 7-bit I2C address (default: the chip's usual one)
    name = "air"                 # names its fault events (default: the type)

Every part is optional. Pins are BCM GPIO numbers 2..27, each used once; with sensors
configured, 2 and 3 are the I2C bus's SDA/SCL and cannot be given to anything else. A bad value
raises ConfigError naming the dotted key and the fix; nothing is half-applied.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sensornode import protocol

from edge_gateway.configerror import ConfigError

FIRST_PIN, LAST_PIN = 2, 27  # the BCM GPIOs on the 40-pin header
I2C_PINS = {2: "SDA", 3: "SCL"}
SENSOR_TYPES = {"sht4x": 0x44, "bme680": 0x77, "sgp40": 0x59}  # type -> default address
DEFAULT_NODE = "gateway"
DEFAULT_POLL_INTERVAL_S = 30.0
DEFAULT_CLOSE_DELAY_S = 5.0
MAX_CLOSE_DELAY_S = 600.0


@dataclass(frozen=True)
class EstopButtonConfig:
    pin: int
    pull_up: bool = True
    bounce_s: float = 0.05


@dataclass(frozen=True)
class StatusLedConfig:
    pin: int
    active_high: bool = True


@dataclass(frozen=True)
class MasterValveConfig:
    pin: int
    active_high: bool = True
    close_delay_s: float = DEFAULT_CLOSE_DELAY_S


@dataclass(frozen=True)
class SensorConfig:
    type: str
    address: int
    name: str


@dataclass(frozen=True)
class LocalHardwareConfig:
    node: str = DEFAULT_NODE
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    estop_button: EstopButtonConfig | None = None
    status_led: StatusLedConfig | None = None
    master_valve: MasterValveConfig | None = None
    sensors: tuple[SensorConfig, ...] = ()

    @property
    def pins(self) -> dict[str, int]:
        """{device: BCM pin} of the configured GPIO devices."""
        devices = {"estop_button": self.estop_button, "status_led": self.status_led,
                   "master_valve": self.master_valve}
        return {name: device.pin for name, device in devices.items() if device is not None}


def parse_local_hardware(
    table: Mapping[str, Any], key: str = "local_hardware"
) -> LocalHardwareConfig:
    """Check the `[local_hardware]` table (as the TOML loader gives it) and build the config."""
    _mapping(table, key, "a table like [local_hardware] with estop_button, status_led, ...")
    _known_keys(table, key, ("node", "poll_interval_s", "estop_button", "status_led",
                             "master_valve", "sensors"))
    node = table.get("node", DEFAULT_NODE)
    if not protocol.valid_name(node):
        raise ConfigError(f"{key}.node", f"{node!r} is not a valid node name",
                          "use 1-32 characters of a-z, 0-9, '-' or '_', e.g. \"gateway\"")
    poll = _number(table, key, "poll_interval_s", DEFAULT_POLL_INTERVAL_S, 1.0, 3600.0)
    estop = _estop(table["estop_button"], f"{key}.estop_button") if "estop_button" in table \
        else None
    led = _led(table["status_led"], f"{key}.status_led") if "status_led" in table else None
    valve = _valve(table["master_valve"], f"{key}.master_valve") if "master_valve" in table \
        else None
    sensors = _sensors(table.get("sensors", []), f"{key}.sensors")
    config = LocalHardwareConfig(node, poll, estop, led, valve, sensors)
    _check_pins(config, key)
    return config


def _estop(table: object, key: str) -> EstopButtonConfig:
    _mapping(table, key, "a table with pin = <BCM number> (and optionally pull_up)")
    assert isinstance(table, Mapping)
    _known_keys(table, key, ("pin", "pull_up", "bounce_s"))
    return EstopButtonConfig(_pin(table, key), _bool(table, key, "pull_up", True),
                             _number(table, key, "bounce_s", 0.05, 0.0, 1.0))


def _led(table: object, key: str) -> StatusLedConfig:
    _mapping(table, key, "a table with pin = <BCM number> (and optionally active_high)")
    assert isinstance(table, Mapping)
    _known_keys(table, key, ("pin", "active_high"))
    return StatusLedConfig(_pin(table, key), _bool(table, key, "active_high", True))


def _valve(table: object, key: str) -> MasterValveConfig:
    _mapping(table, key, "a table with pin = <BCM number>, active_high and close_delay_s")
    assert isinstance(table, Mapping)
    _known_keys(table, key, ("pin", "active_high", "close_delay_s"))
    return MasterValveConfig(
        _pin(table, key), _bool(table, key, "active_high", True),
        _number(table, key, "close_delay_s", DEFAULT_CLOSE_DELAY_S, 0.0, MAX_CLOSE_DELAY_S),
    )


def _sensors(entries: object, key: str) -> tuple[SensorConfig, ...]:
    example = '[[local_hardware.sensors]] tables like type = "sht4x", address = 0x44'
    if not isinstance(entries, list):
        raise ConfigError(key, f"must be a list of sensors, got {entries!r}", f"write {example}")
    sensors: list[SensorConfig] = []
    names: dict[str, str] = {}
    addresses: dict[int, str] = {}
    for index, entry in enumerate(entries):
        where = f"{key}[{index}]"
        _mapping(entry, where, f"write {example}")
        assert isinstance(entry, Mapping)
        _known_keys(entry, where, ("type", "address", "name"))
        kind = entry.get("type")
        if kind not in SENSOR_TYPES:
            raise ConfigError(f"{where}.type", f"{kind!r} is not a supported local sensor",
                              f"use one of {', '.join(SENSOR_TYPES)}")
        address = entry.get("address", SENSOR_TYPES[kind])
        if not isinstance(address, int) or isinstance(address, bool) \
                or not 0x08 <= address <= 0x77:
            raise ConfigError(f"{where}.address", f"{address!r} is not a 7-bit I2C address",
                              f"use 0x08..0x77; a {kind} is usually at {SENSOR_TYPES[kind]:#04x}")
        if address in addresses:
            raise ConfigError(f"{where}.address", f"{address:#04x} is already {addresses[address]}",
                              "give each sensor on the bus its own address")
        name = entry.get("name", kind)
        if not protocol.valid_name(name):
            raise ConfigError(f"{where}.name", f"{name!r} is not a valid name",
                              "use 1-32 characters of a-z, 0-9, '-' or '_'")
        if name in names:
            raise ConfigError(f"{where}.name", f"{name!r} is already the name of {names[name]}",
                              "give each sensor its own name (needed for two of one type)")
        addresses[address] = names[name] = where
        sensors.append(SensorConfig(kind, address, name))
    return tuple(sensors)


def _check_pins(config: LocalHardwareConfig, key: str) -> None:
    owners: dict[int, str] = {}
    for device, pin in config.pins.items():
        if pin in owners:
            raise ConfigError(f"{key}.{device}.pin", f"GPIO{pin} is already {owners[pin]}'s pin",
                              "give each device its own GPIO")
        if config.sensors and pin in I2C_PINS:
            raise ConfigError(
                f"{key}.{device}.pin",
                f"GPIO{pin} is the I2C bus's {I2C_PINS[pin]}, used by the local sensors",
                "choose another GPIO (4..27)",
            )
        owners[pin] = device


def _mapping(value: object, key: str, fix: str) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a table, got {value!r}", fix)


def _known_keys(table: Mapping[str, Any], key: str, known: tuple[str, ...]) -> None:
    for name in table:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{key}.{name}", "is not a known key",
                              f"{hint}known keys here: {', '.join(known)}")


def _pin(table: Mapping[str, Any], key: str) -> int:
    if "pin" not in table:
        raise ConfigError(f"{key}.pin", "is missing", "set pin = <BCM GPIO number 2..27>")
    pin = table["pin"]
    if not isinstance(pin, int) or isinstance(pin, bool) or not FIRST_PIN <= pin <= LAST_PIN:
        raise ConfigError(f"{key}.pin", f"{pin!r} is not a BCM GPIO number of the header",
                          f"use {FIRST_PIN}..{LAST_PIN} (the GPIO number, not the header pin)")
    return pin


def _bool(table: Mapping[str, Any], key: str, name: str, default: bool) -> bool:
    value = table.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}.{name}", f"must be true or false, got {value!r}",
                          f"write {name} = true or {name} = false")
    return value


def _number(table: Mapping[str, Any], key: str, name: str, default: float, low: float,
            high: float) -> float:
    value = table.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool) \
            or not low <= value <= high:
        raise ConfigError(f"{key}.{name}", f"{value!r} is out of range",
                          f"use a number of seconds from {low:g} to {high:g}")
    return float(value)
