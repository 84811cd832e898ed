"""The master valve relay: the main water line is open only while some node irrigates.

The daemon feeds `set_irrigating()` the set of nodes whose pump is on (from their actuator
events). The valve opens with the first one and closes `close_delay_s` after the last one
stops, so a node's pump never runs dry while its off-event is in flight, and back-to-back runs
do not click the relay. It is closed at start, on `close()`, while an e-stop locks it out,
and whenever updating it raises: a fault leaves it closed, never open.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection

from gpiozero import Factory, OutputDevice

from edge_gateway.localhw.config import MasterValveConfig

log = logging.getLogger(__name__)


class MasterValve:
    def __init__(self, config: MasterValveConfig, pin_factory: Factory) -> None:
        self._close_delay_s = config.close_delay_s
        self._lock = threading.Lock()
        self._irrigating: frozenset[str] = frozenset()
        self._locked_out = False
        self._timer: threading.Timer | None = None
        self._closed = False
        self._relay = OutputDevice(config.pin, active_high=config.active_high,
                                   initial_value=False, pin_factory=pin_factory)

    @property
    def is_open(self) -> bool:
        return bool(self._relay.value)

    @property
    def irrigating(self) -> frozenset[str]:
        return self._irrigating

    def set_irrigating(self, nodes: Collection[str]) -> None:
        """The nodes irrigating now (all of them, not a change)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("master valve: used after close()")
            try:
                self._irrigating = frozenset(nodes)
                if self._irrigating and not self._locked_out:
                    self._cancel_timer()
                    if not self._relay.value:
                        log.info("master valve open for %s", ", ".join(sorted(self._irrigating)))
                        self._relay.on()
                elif self._relay.value and self._timer is None:
                    self._timer = threading.Timer(self._close_delay_s, self._close_when_idle)
                    self._timer.daemon = True
                    self._timer.start()
            except BaseException:
                self._close_now()
                raise

    def lock_out(self) -> None:
        """Close now and stay closed until `release()` (the site e-stop)."""
        with self._lock:
            self._locked_out = True
            self._close_now()

    def release(self) -> None:
        """End a lock-out; the valve opens again if a node is still irrigating."""
        with self._lock:
            self._locked_out = False
        self.set_irrigating(self._irrigating)

    def _close_when_idle(self) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():
                return  # superseded: a node started again, or someone closed it already
            self._timer = None
            if not self._irrigating or self._locked_out:
                self._close_now()

    def _close_now(self) -> None:
        self._cancel_timer()
        if self._closed:
            return  # the relay is released and its pin no longer driven
        try:
            if self._relay.value:
                log.info("master valve closed")
        finally:
            self._relay.off()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._irrigating = frozenset()
            self._close_now()
            self._closed = True
            self._relay.close()

    def __enter__(self) -> MasterValve:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
