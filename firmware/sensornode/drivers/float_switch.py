# Tank-level float switch on a digital input, debounced in time.
#
# "Active" means the float reports liquid at its level: tank_ok = 1. A switch that closes to
# GND with the pin's pull-up (the usual wiring) reads 0 when active: active_low=True. A float
# mounted the other way up just flips the polarity.
#
# Debounce: a new level is accepted only after the input has read it continuously for
# debounce_ms (sloshing water and contact bounce both produce short blips). update(now_ms)
# takes one sample; call it often (a poll task, or read(), which samples until the level is
# settled, bounded in time). The clock is injectable; times are ticks_ms values.
import asyncio

from sensornode.compat import ticks_diff, ticks_ms
from sensornode.drivers.errors import NotReady
from sensornode.protocol import MAX_CHANNELS

try:
    from typing import Any, Callable, Dict, Optional
except ImportError:
    pass


def quantity_key(base: str, channel: "Optional[int]") -> str:
    """base, or base_<n> for channel n (1..MAX_CHANNELS) of a multi-channel quantity."""
    if channel is None:
        return base
    if isinstance(channel, bool) or not isinstance(channel, int) \
            or not 1 <= channel <= MAX_CHANNELS:
        raise ValueError("channel: must be a whole number 1..%d or None, got %r"
                         % (MAX_CHANNELS, channel))
    return "%s_%d" % (base, channel)


class FloatSwitch:
    def __init__(self, pin: "Any", active_low: bool = True, debounce_ms: int = 50,
                 channel: "Optional[int]" = None, poll_ms: int = 5,
                 clock: "Callable[[], int]" = ticks_ms) -> None:
        if isinstance(debounce_ms, bool) or not isinstance(debounce_ms, int) \
                or not 0 <= debounce_ms <= 60000:
            raise ValueError("debounce_ms: must be a whole number 0..60000, got %r"
                             % (debounce_ms,))
        if isinstance(poll_ms, bool) or not isinstance(poll_ms, int) or not 0 <= poll_ms <= 1000:
            raise ValueError("poll_ms: must be a whole number 0..1000, got %r" % (poll_ms,))
        self.key = quantity_key("tank_ok", channel)
        self.debounce_ms = debounce_ms
        self.poll_ms = poll_ms
        self._pin = pin
        self._active = 0 if active_low else 1
        self._clock = clock
        self._stable = None  # type: Optional[bool]
        self._pending = None  # type: Optional[bool]
        self._since = 0
        self.changes = 0  # accepted changes of the debounced state (not the first one)

    @property
    def active_low(self) -> bool:
        return self._active == 0

    @property
    def state(self) -> "Optional[bool]":
        """Debounced: True = liquid present (tank ok), None = not settled yet."""
        return self._stable

    @property
    def settled(self) -> bool:
        """A debounced state is known and no different level is pending."""
        return self._stable is not None and self._pending is None

    def update(self, now_ms: "Optional[int]" = None) -> bool:
        """Take one sample; True when the debounced state changed (or was first known)."""
        if now_ms is None:
            now_ms = self._clock()
        level = self._pin.value() == self._active
        if level == self._stable:
            self._pending = None
            return False
        if level != self._pending:
            self._pending = level
            self._since = now_ms
        if ticks_diff(now_ms, self._since) < self.debounce_ms:
            return False
        if self._stable is not None:
            self.changes += 1
        self._stable = level
        self._pending = None
        return True

    def ms_to_settle(self, now_ms: "Optional[int]" = None) -> int:
        """Milliseconds until a pending level would be accepted (0 when settled)."""
        if self.settled:
            return 0
        if now_ms is None:
            now_ms = self._clock()
        if self._pending is None:
            return self.debounce_ms
        return max(0, self.debounce_ms - ticks_diff(now_ms, self._since))

    def values(self) -> "Dict[str, int]":
        if self._stable is None:
            raise NotReady("%s: input not stable for %d ms yet" % (self.key, self.debounce_ms))
        return {self.key: 1 if self._stable else 0}

    # ---- driver API ---------------------------------------------------------------------

    def start_measurement(self) -> int:
        self.update()
        return self.ms_to_settle()

    def read_measurement(self) -> "Dict[str, int]":
        """The debounced state after one more sample; NotReady until one is known."""
        self.update()
        return self.values()

    async def read(self) -> "Dict[str, int]":
        """Sample until settled, for at most 4 x debounce_ms; a level still bouncing then
        leaves the last accepted state (NotReady if there is none)."""
        start = self._clock()
        limit = 4 * self.debounce_ms + self.poll_ms
        for _ in range(limit // max(1, self.poll_ms) + 2):  # bounded even if time stands
            self.update()
            if self.settled or ticks_diff(self._clock(), start) >= limit:
                break
            await asyncio.sleep(self.poll_ms / 1000)
        return self.values()
