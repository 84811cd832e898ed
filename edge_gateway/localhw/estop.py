"""The latching e-stop button on the gateway Pi.

A press latches the e-stop and calls `on_estop()` once (the daemon publishes the site e-stop,
retained, on nt/<site>/estop). Further presses, and the contact bounce of the first, change
nothing until `reset()`; a reset while the button is still held down (a mushroom button locked
in) is refused, so the e-stop cannot be cleared behind the back of whoever pressed it. A button
already held when the gateway starts latches at once.

gpiozero calls `when_pressed` from its own thread on a Pi (synchronously under MockFactory),
hence the lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from gpiozero import Button, Factory

from edge_gateway.localhw.config import EstopButtonConfig

log = logging.getLogger(__name__)


class EstopButton:
    def __init__(self, config: EstopButtonConfig, pin_factory: Factory,
                 on_estop: Callable[[], object]) -> None:
        self._on_estop = on_estop
        self._lock = threading.Lock()
        self._latched = False
        # bounce_time matters on real contacts; gpiozero's mock pins ignore it, and the latch
        # makes a bounce harmless anyway.
        self._button = Button(config.pin, pull_up=config.pull_up,
                              bounce_time=config.bounce_s or None, pin_factory=pin_factory)
        self._button.when_pressed = self._pressed
        if self._button.is_pressed:
            self._pressed()

    @property
    def latched(self) -> bool:
        return self._latched

    @property
    def held(self) -> bool:
        """The button is pressed right now."""
        return bool(self._button.is_pressed)

    def _pressed(self) -> None:
        with self._lock:
            if self._latched:
                return
            self._latched = True
        log.warning("e-stop button pressed: site e-stop latched")
        try:
            self._on_estop()
        except Exception:
            # The latch stays: the e-stop holds locally even if broadcasting it failed.
            log.exception("e-stop: broadcasting the site e-stop failed")

    def reset(self) -> bool:
        """Clear the latch; False (still latched) while the button is held down."""
        with self._lock:
            if self._button.is_pressed:
                log.warning("e-stop reset refused: the button is still pressed")
                return False
            if self._latched:
                log.warning("e-stop reset")
            self._latched = False
            return True

    def close(self) -> None:
        self._button.when_pressed = None
        self._button.close()
