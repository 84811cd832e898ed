"""The gateway Pi's own hardware: e-stop button, status LED, master valve, I2C sensors.

gpiozero devices are built from an injected pin factory (MockFactory in tests); the I2C bus
comes from `open_i2c()` on a Pi and from a fake bus of register models in tests. See
`config` for the `[local_hardware]` TOML section and `hardware.open_local_hardware()` for
building it all at once.
"""

from edge_gateway.localhw.config import (
    EstopButtonConfig,
    LocalHardwareConfig,
    MasterValveConfig,
    SensorConfig,
    StatusLedConfig,
    parse_local_hardware,
)
from edge_gateway.localhw.estop import EstopButton
from edge_gateway.localhw.hardware import LocalHardware, open_local_hardware
from edge_gateway.localhw.i2c import NotOnAPiError, open_i2c
from edge_gateway.localhw.master_valve import MasterValve
from edge_gateway.localhw.sensors import (
    LocalSensors,
    SensorHealthChange,
    SensorPoll,
    fault_event,
    telemetry,
)
from edge_gateway.localhw.status_led import Health, LedCode, StatusLed, led_code

__all__ = [
    "EstopButton", "EstopButtonConfig", "Health", "LedCode", "LocalHardware",
    "LocalHardwareConfig", "LocalSensors", "MasterValve", "MasterValveConfig", "NotOnAPiError",
    "SensorConfig", "SensorHealthChange", "SensorPoll", "StatusLed", "StatusLedConfig",
    "fault_event", "led_code", "open_i2c", "open_local_hardware", "parse_local_hardware",
    "telemetry",
]
