# Status LED on a digital output: steady or blinking patterns that say what the node is doing.
#
# A pattern is a tuple of (lit, ms) steps repeated for ever; one step is a steady level.
#   off         dark
#   on          lit
#   connecting  250 ms on / 250 ms off              (looking for Wi-Fi / broker)
#   online      100 ms blip every 3 s               (all well; low duty for battery nodes)
#   fault       three 100 ms flashes, then 700 ms dark (a component is in warning/failed)
#   identify    50 ms on / 50 ms off                (find this node among many)
# update(now_ms) sets the level for that instant from the time since the pattern began, so a
# late update never shifts the rhythm; it returns the ms until the next change. run() is the
# task that calls it. pin=None (a board without an LED) keeps the logic and drives nothing.
import asyncio

from sensornode.compat import ticks_add, ticks_diff, ticks_ms

try:
    from typing import Any, Callable, Optional, Tuple
except ImportError:
    pass

PATTERNS = {
    "off": ((False, 1000),),
    "on": ((True, 1000),),
    "connecting": ((True, 250), (False, 250)),
    "online": ((True, 100), (False, 2900)),
    "fault": ((True, 100), (False, 100), (True, 100), (False, 100), (True, 100), (False, 700)),
    "identify": ((True, 50), (False, 50)),
}
_MAX_SLEEP_MS = 100  # run() notices a new pattern within this


def check_pattern(steps: "Any") -> "Tuple[Tuple[bool, int], ...]":
    """A custom pattern: a non-empty list of (lit, ms) with ms 1..60000."""
    if not isinstance(steps, (list, tuple)) or not steps:
        raise ValueError("pattern: must be a non-empty list of (lit, ms) steps, got %r" % (steps,))
    out = []
    for i, step in enumerate(steps):
        ok = isinstance(step, (list, tuple)) and len(step) == 2
        if ok:
            ms = step[1]
            ok = isinstance(ms, int) and not isinstance(ms, bool) and 1 <= ms <= 60000
        if not ok:
            raise ValueError("pattern[%d]: must be (lit, ms) with ms 1..60000, got %r" % (i, step))
        out.append((bool(step[0]), step[1]))
    return tuple(out)


class StatusLed:
    def __init__(self, pin: "Any", active_low: bool = False,
                 clock: "Callable[[], int]" = ticks_ms) -> None:
        self._pin = pin
        self._on_level = 0 if active_low else 1
        self._clock = clock
        self._lit = None  # type: Optional[bool]
        self._name = ""
        self._steps = PATTERNS["off"]
        self._period = 1000
        self._start = clock()
        self.set_pattern("off")

    @property
    def pattern(self) -> str:
        """Name of the current pattern ("custom" for one given as steps)."""
        return self._name

    @property
    def lit(self) -> bool:
        return bool(self._lit)

    def set_pattern(self, pattern: "Any", now_ms: "Optional[int]" = None) -> None:
        """A name from PATTERNS or a list of (lit, ms) steps. Setting the current pattern
        again keeps its rhythm; a new one starts at its first step now."""
        if isinstance(pattern, str):
            steps = PATTERNS.get(pattern)
            if steps is None:
                raise ValueError("pattern: %r is unknown; known: %s"
                                 % (pattern, ", ".join(sorted(PATTERNS))))
            name = pattern
        else:
            steps = check_pattern(pattern)
            name = "custom"
        if name == self._name and steps == self._steps:
            return
        self._name = name
        self._steps = steps
        self._period = 0
        for step in steps:
            self._period += step[1]
        self._start = self._clock() if now_ms is None else now_ms
        self.update(self._start)

    def update(self, now_ms: "Optional[int]" = None) -> int:
        """Drive the level for `now_ms`; returns ms until the next change (bounded)."""
        if now_ms is None:
            now_ms = self._clock()
        elapsed = ticks_diff(now_ms, self._start)
        if elapsed < 0:
            elapsed = 0
        if elapsed >= self._period:
            # Re-anchor to the latest cycle start, so elapsed stays small across ticks wraps.
            whole = elapsed - elapsed % self._period
            self._start = ticks_add(self._start, whole)
            elapsed -= whole
        lit = self._steps[0][0]
        left = self._period
        for step in self._steps:
            if elapsed < step[1]:
                lit = step[0]
                left = step[1] - elapsed
                break
            elapsed -= step[1]
        if lit != self._lit:
            self._lit = lit
            if self._pin is not None:
                self._pin.value(self._on_level if lit else 1 - self._on_level)
        if len(self._steps) == 1:
            return _MAX_SLEEP_MS
        return left

    async def run(self) -> None:
        """Keep the pattern going until cancelled."""
        while True:
            wait = self.update()
            await asyncio.sleep(min(wait, _MAX_SLEEP_MS) / 1000)
