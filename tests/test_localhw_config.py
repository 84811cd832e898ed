"""[local_hardware] parsing: defaults, every check names its key and fix, nothing half-built."""

from __future__ import annotations

from typing import Any

import pytest

from edge_gateway.configerror import ConfigError
from edge_gateway.localhw import (
    EstopButtonConfig,
    LocalHardwareConfig,
    MasterValveConfig,
    SensorConfig,
    StatusLedConfig,
    parse_local_hardware,
)

FULL: dict[str, Any] = {
    "node": "pi-gw",
    "poll_interval_s": 10,
    "estop_button": {"pin": 17, "pull_up": False, "bounce_s": 0.02},
    "status_led": {"pin": 27, "active_high": False},
    "master_valve": {"pin": 22, "active_high": False, "close_delay_s": 2.5},
    "sensors": [
        {"type": "sht4x", "name": "air"},
        {"type": "bme680", "address": 0x76},
        {"type": "sgp40"},
    ],
}


def test_full_section_parses_with_defaults_filled() -> None:
    assert parse_local_hardware(FULL) == LocalHardwareConfig(
        node="pi-gw",
        poll_interval_s=10.0,
        estop_button=EstopButtonConfig(17, pull_up=False, bounce_s=0.02),
        status_led=StatusLedConfig(27, active_high=False),
        master_valve=MasterValveConfig(22, active_high=False, close_delay_s=2.5),
        sensors=(SensorConfig("sht4x", 0x44, "air"), SensorConfig("bme680", 0x76, "bme680"),
                 SensorConfig("sgp40", 0x59, "sgp40")),
    )


def test_empty_section_means_no_local_hardware() -> None:
    config = parse_local_hardware({})
    assert config == LocalHardwareConfig()
    assert (config.node, config.pins, config.sensors) == ("gateway", {}, ())


def test_i2c_pins_are_free_without_sensors() -> None:
    config = parse_local_hardware({"estop_button": {"pin": 2}, "status_led": {"pin": 3}})
    assert config.pins == {"estop_button": 2, "status_led": 3}


def with_changes(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """FULL with the value at path replaced (or deleted when value is DELETE)."""
    import copy

    table = copy.deepcopy(FULL)
    target: Any = table
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return table


DELETE = object()


@pytest.mark.parametrize(("path", "value", "key", "words"), [
    (("estop_button", "pin"), 28, "local_hardware.estop_button.pin", "2..27"),
    (("estop_button", "pin"), 1, "local_hardware.estop_button.pin", "2..27"),
    (("estop_button", "pin"), True, "local_hardware.estop_button.pin", "2..27"),
    (("estop_button", "pin"), "17", "local_hardware.estop_button.pin", "2..27"),
    (("estop_button", "pin"), DELETE, "local_hardware.estop_button.pin", "set pin"),
    (("status_led", "pin"), 17, "local_hardware.status_led.pin", "own GPIO"),
    (("master_valve", "pin"), 27, "local_hardware.master_valve.pin", "own GPIO"),
    (("master_valve", "pin"), 2, "local_hardware.master_valve.pin", "SDA"),
    (("status_led", "pin"), 3, "local_hardware.status_led.pin", "SCL"),
    (("estop_button", "pull_up"), "yes", "local_hardware.estop_button.pull_up", "true or"),
    (("status_led", "active_high"), 1, "local_hardware.status_led.active_high", "true or"),
    (("master_valve", "close_delay_s"), -1, "local_hardware.master_valve.close_delay_s",
     "0 to 600"),
    (("master_valve", "close_delay_s"), float("nan"),
     "local_hardware.master_valve.close_delay_s", "0 to 600"),
    (("master_valve", "colse_delay_s"), 3, "local_hardware.master_valve.colse_delay_s",
     "did you mean 'close_delay_s'"),
    (("status_led",), 27, "local_hardware.status_led", "must be a table"),
    (("estop",), {"pin": 5}, "local_hardware.estop", "did you mean 'estop_button'"),
    (("node",), "Gate Way", "local_hardware.node", "a-z"),
    (("poll_interval_s",), 0, "local_hardware.poll_interval_s", "1 to 3600"),
    (("sensors",), {"type": "sht4x"}, "local_hardware.sensors", "[[local_hardware.sensors]]"),
    (("sensors", 1), "bme680", "local_hardware.sensors[1]", "must be a table"),
    (("sensors", 0, "type"), "sht31", "local_hardware.sensors[0].type", "sht4x, bme680, sgp40"),
    (("sensors", 0, "type"), DELETE, "local_hardware.sensors[0].type", "sht4x, bme680, sgp40"),
    (("sensors", 1, "address"), 0x78, "local_hardware.sensors[1].address", "0x08..0x77"),
    (("sensors", 1, "address"), 0x44, "local_hardware.sensors[1].address", "own address"),
    (("sensors", 2, "name"), "air", "local_hardware.sensors[2].name", "own name"),
    (("sensors", 2, "name"), "", "local_hardware.sensors[2].name", "a-z"),
    (("sensors", 2, "adress"), 0x59, "local_hardware.sensors[2].adress",
     "did you mean 'address'"),
])
def test_bad_values_name_the_key_and_the_fix(
    path: tuple[Any, ...], value: Any, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_local_hardware(with_changes(path, value))
    assert raised.value.key == key
    assert words in str(raised.value)


def test_errors_use_the_given_key_prefix() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_local_hardware({"status_led": {"pin": 40}}, key="site.local_hardware")
    assert raised.value.key == "site.local_hardware.status_led.pin"


def test_section_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_local_hardware([], key="local_hardware")  # type: ignore[arg-type]
    assert raised.value.key == "local_hardware"
