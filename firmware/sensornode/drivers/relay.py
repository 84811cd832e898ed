# A relay (or MOSFET) on a digital output pin, active-high or active-low.
#
# Boots OFF: the constructor drives the inactive level. Give it a pin that is already an
# output at the inactive level (sensornode.board.Board.pump_relay_pin does that), so the
# relay never glitches on while the firmware starts. The driver never builds its pin.
try:
    from typing import Any
except ImportError:
    pass


class Relay:
    def __init__(self, pin: "Any", active_low: bool = False) -> None:
        self._pin = pin
        self._active = 0 if active_low else 1
        self._on = False
        pin.value(1 - self._active)

    @property
    def active_low(self) -> bool:
        return self._active == 0

    @property
    def is_on(self) -> bool:
        return self._on

    def set(self, on: bool) -> None:
        on = bool(on)
        self._pin.value(self._active if on else 1 - self._active)
        self._on = on

    def on(self) -> None:
        self.set(True)

    def off(self) -> None:
        self.set(False)
