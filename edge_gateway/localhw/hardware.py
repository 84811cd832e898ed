"""All of the gateway Pi's own hardware, built from `[local_hardware]` in one call.

`open_local_hardware()` builds each configured device from the injected gpiozero pin factory
(and the I2C bus from `i2c_factory`, only when sensors are configured); if any part fails,
the parts already built are closed again before the error propagates. The e-stop button also
locks the master valve closed until the e-stop is reset.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from gpiozero import Factory

from edge_gateway.localhw.config import LocalHardwareConfig
from edge_gateway.localhw.estop import EstopButton
from edge_gateway.localhw.i2c import open_i2c
from edge_gateway.localhw.master_valve import MasterValve
from edge_gateway.localhw.sensors import LocalSensors
from edge_gateway.localhw.status_led import Health, StatusLed


@dataclass
class LocalHardware:
    config: LocalHardwareConfig
    estop: EstopButton | None
    led: StatusLed | None
    valve: MasterValve | None
    sensors: LocalSensors | None
    _resources: ExitStack

    @property
    def estop_latched(self) -> bool:
        return self.estop is not None and self.estop.latched

    def reset_estop(self) -> bool:
        """Clear the button's latch and let the valve open again; False while it is held."""
        if self.estop is not None and not self.estop.reset():
            return False
        if self.valve is not None:
            self.valve.release()
        return True

    def show(self, broker_connected: bool, nodes_in_trouble: int) -> None:
        if self.led is not None:
            self.led.show(Health(broker_connected, nodes_in_trouble, self.estop_latched))

    def close(self) -> None:
        """Valve first: whatever else fails on the way out, the water is off."""
        self._resources.close()


def open_local_hardware(
    config: LocalHardwareConfig,
    pin_factory: Factory,
    on_estop: Callable[[], object],
    i2c_factory: Callable[[], Any] = open_i2c,
) -> LocalHardware:
    with ExitStack() as stack:
        estop = led = valve = sensors = None
        if config.status_led is not None:
            led = StatusLed(config.status_led, pin_factory)
            stack.callback(led.close)
        if config.master_valve is not None:
            valve = MasterValve(config.master_valve, pin_factory)
            stack.callback(valve.close)
        if config.sensors:
            sensors = LocalSensors(config.sensors, i2c_factory(), config.poll_interval_s)
        if config.estop_button is not None:
            locked_valve = valve

            def estop_pressed() -> None:
                if locked_valve is not None:
                    locked_valve.lock_out()
                on_estop()

            estop = EstopButton(config.estop_button, pin_factory, estop_pressed)
            stack.callback(estop.close)
        if valve is not None:
            stack.callback(valve.close)  # closed first (last in); closing twice is harmless
        hardware = LocalHardware(config, estop, led, valve, sensors, stack.pop_all())
    return hardware
