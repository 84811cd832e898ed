# Components: one sensor (or actuator that reports) with a lifecycle the node can rely on.
#
#   setup   -> set up the driver once (its optional setup(), sync or async)
#   update  -> every interval_s: read() -> {quantity: value}; each quantity through its own
#              filter chain (sensornode.filters); what passes is reported
#   report  -> on_report(name, {quantity: value}) with what passed this update
#
# States: "setup" (no reading yet: not tried, or NotReady so far), "ok", "warning", "failed".
#   - A failed read or setup (OSError from the bus - ENODEV when the chip is gone -,
#     SensorError/CRCError, or any other exception from a driver bug) -> "warning"; after
#     fail_after consecutive failures -> "failed". NotReady (conversion running, warm-up) is
#     not a fault: nothing is reported and the state stays.
#   - The same readings for stuck_after consecutive updates (0: never checked) -> "warning".
#     On/off quantities and actuator set points are left out of the comparison.
#   - While failed the driver is set up again before each retry, and retries back off
#     exponentially from interval_s up to backoff_max_s.
#   - on_fault(name, state, detail) is called ONCE when the component breaks (enters warning
#     or failed from setup/ok) and ONCE when it recovers (back to ok) - never every cycle.
#   - A stuck reading is still reported (the fault event says it is suspect).
# Nothing here raises out of run_once(): the node keeps running whatever a driver does.
# The app builds one Component per sensor from the board profile and config
# (Component.from_config(name, driver, cfg, on_fault=..., on_report=...)) and runs them all
# with run_all(), or calls run_once() on each from its own loop.
# Times are ticks_ms values; the clock is injectable for tests.
import asyncio
import errno

from sensornode import protocol
from sensornode.compat import ticks_add, ticks_diff, ticks_ms
from sensornode.drivers.errors import NotReady, SensorError
from sensornode.filters import FilterChain, FilterConfigError

try:
    from typing import Any, Callable, Dict, List, Optional
except ImportError:
    pass

STATES = ("setup", "ok", "warning", "failed")
_BAD = ("warning", "failed")
_SETPOINTS = ("diffuser_duty", "pump")  # actuator states: constant by design
_DETAIL_MAX = 120
_SHIFT_MAX = 16

# Config of one component, e.g. {"interval_s": 30, "fail_after": 3, "stuck_after": 10,
#   "backoff_max_s": 300, "filters": {"mq135_ppm": [{"median": 5}], "*": [{"delta": 1}]}}
DEFAULTS = {"interval_s": 60, "fail_after": 3, "stuck_after": 0, "backoff_max_s": 300,
            "filters": None}


def describe(exc: "BaseException") -> str:
    """A short, port-independent text for a fault event's detail."""
    name = type(exc).__name__
    if isinstance(exc, SensorError):
        text = "%s: %s" % (name, exc)
    elif isinstance(exc, OSError) and exc.args and isinstance(exc.args[0], int):
        code = exc.args[0]
        text = "OSError %s (errno %d)" % (errno.errorcode.get(code, "?"), code)
    else:
        text = "%s: %s" % (name, exc)
    return text[:_DETAIL_MAX]


def _exempt_from_stuck(quantity: str) -> bool:
    """On/off quantities and actuator set points stay the same for hours by design."""
    if not protocol.known_quantity(quantity):
        return False
    if protocol.quantity_unit(quantity) == "on_off":
        return True
    base = quantity if quantity in protocol.QUANTITIES else quantity.rpartition("_")[0]
    return base in _SETPOINTS


def _awaitable(value: "Any") -> bool:
    return hasattr(value, "send")  # a coroutine, on MicroPython and CPython


def _number(where: str, value: "Any", low: float, high: float, whole: bool = False) -> "Any":
    ok = not isinstance(value, bool) and isinstance(value, int if whole else (int, float))
    if not ok or not low <= value <= high:
        raise ValueError("%s: must be a %s %s..%s, got %r"
                         % (where, "whole number" if whole else "number", low, high, value))
    return value


def _check_filters(where: str, spec: "Any") -> "Any":
    """None, a list (every quantity) or {quantity or "*": list}; raises naming the field."""
    if spec is None or isinstance(spec, (list, tuple)):
        FilterChain(spec, where)
        return spec
    if not isinstance(spec, dict):
        raise FilterConfigError('%s: must be a list of filters or an object of quantity: list '
                                '(e.g. {"mq135_ppm": [{"median": 5}], "*": [{"delta": 1}]}), '
                                "got %r" % (where, spec))
    for quantity in spec:
        if quantity != "*" and not protocol.known_quantity(quantity):
            raise FilterConfigError("%s.%s: unknown quantity; use one of %s, or \"*\" for all"
                                    % (where, quantity, ", ".join(sorted(protocol.QUANTITIES))))
        FilterChain(spec[quantity], "%s.%s" % (where, quantity))
    return spec


def check_config(name: str, cfg: "Any") -> "Dict[str, Any]":
    """The component config with defaults filled in; ValueError names the bad field."""
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ValueError("%s: must be an object with %s" % (name, ", ".join(sorted(DEFAULTS))))
    out = {}
    for key in DEFAULTS:
        out[key] = DEFAULTS[key]
    for key in cfg:
        if key not in DEFAULTS:
            raise ValueError("%s.%s: unknown field; known: %s"
                             % (name, key, ", ".join(sorted(DEFAULTS))))
        out[key] = cfg[key]
    _number(name + ".interval_s", out["interval_s"], 0.001, 86400)
    _number(name + ".fail_after", out["fail_after"], 1, 1000, True)
    _number(name + ".stuck_after", out["stuck_after"], 0, 100000, True)
    _number(name + ".backoff_max_s", out["backoff_max_s"], 0, 86400)
    _check_filters(name + ".filters", out["filters"])
    return out


class Component:
    def __init__(self, name: str, sensor: "Any", interval_s: float = 60,
                 filters: "Any" = None, on_fault: "Optional[Callable[..., Any]]" = None,
                 on_report: "Optional[Callable[..., Any]]" = None, fail_after: int = 3,
                 stuck_after: int = 0, backoff_max_s: float = 300,
                 clock: "Callable[[], int]" = ticks_ms) -> None:
        protocol.check_name("component name", name)
        cfg = check_config(name, {"interval_s": interval_s, "filters": filters,
                                  "fail_after": fail_after, "stuck_after": stuck_after,
                                  "backoff_max_s": backoff_max_s})
        self.name = name
        self.sensor = sensor
        self.interval_ms = max(1, int(cfg["interval_s"] * 1000))
        self.fail_after = fail_after
        self.stuck_after = stuck_after
        self.backoff_max_ms = max(self.interval_ms, int(backoff_max_s * 1000))
        self.on_fault = on_fault
        self.on_report = on_report
        self._filters = filters
        self._clock = clock
        self._chains = {}  # type: Dict[str, FilterChain]
        self._values = {}  # type: Dict[str, float]
        self._need_setup = True
        self._next_ms = None  # type: Optional[int]
        self._last_raw = None  # type: Optional[tuple]
        self._same = 0
        self.state = "setup"
        self.detail = ""
        self.failures = 0  # consecutive failed updates
        self.updates = 0  # updates attempted
        self.breaks = 0  # fault events emitted
        self.recoveries = 0  # recovery events emitted

    @classmethod
    def from_config(cls, name: str, sensor: "Any", cfg: "Any", **kwargs: "Any") -> "Component":
        """Build from a config object (see DEFAULTS); kwargs: on_fault, on_report, clock."""
        out = check_config(name, cfg)
        for key in out:
            kwargs[key] = out[key]
        return cls(name, sensor, **kwargs)

    # ---- schedule -----------------------------------------------------------------------

    def due(self, now_ms: "Optional[int]" = None) -> bool:
        if self._next_ms is None:
            return True
        if now_ms is None:
            now_ms = self._clock()
        return ticks_diff(now_ms, self._next_ms) >= 0

    def ms_until_due(self, now_ms: "Optional[int]" = None) -> int:
        if self._next_ms is None:
            return 0
        if now_ms is None:
            now_ms = self._clock()
        return max(0, ticks_diff(self._next_ms, now_ms))

    def retry_delay_ms(self) -> int:
        """Delay before the next update: interval_s, backing off while failed."""
        if self.state != "failed":
            return self.interval_ms
        shift = min(self.failures - self.fail_after + 1, _SHIFT_MAX)
        return min(self.interval_ms << shift, self.backoff_max_ms)

    # ---- results ------------------------------------------------------------------------

    def values(self) -> "Dict[str, float]":
        """The latest reportable (filtered, passed) value of each quantity."""
        out = {}
        for key in self._values:
            out[key] = self._values[key]
        return out

    def status(self) -> "Dict[str, Any]":
        return {"state": self.state, "detail": self.detail, "failures": self.failures}

    def _chain(self, quantity: str) -> FilterChain:
        chain = self._chains.get(quantity)
        if chain is None:
            spec = self._filters
            if isinstance(spec, dict):
                spec = spec.get(quantity, spec.get("*"))
            chain = self._chains[quantity] = FilterChain(spec)
        return chain

    # ---- one update ---------------------------------------------------------------------

    async def run_once(self, now_ms: "Optional[int]" = None) -> "Dict[str, float]":
        """Update if due: returns the values to report now ({} if none, or not due)."""
        if now_ms is None:
            now_ms = self._clock()
        if not self.due(now_ms):
            return {}
        self.updates += 1
        try:
            if self._need_setup:
                setup = getattr(self.sensor, "setup", None)
                if setup is not None:
                    result = setup()
                    if _awaitable(result):
                        await result
                self._need_setup = False
            raw = self.sensor.read()
            if _awaitable(raw):
                raw = await raw
            if not isinstance(raw, dict):
                raise SensorError("read() gave %s, not {quantity: value}" % type(raw).__name__)
        except NotReady:
            self._next_ms = ticks_add(now_ms, self.interval_ms)
            return {}
        except Exception as exc:  # a driver must never stop the node
            self._failed(exc)
            self._next_ms = ticks_add(now_ms, self.retry_delay_ms())
            return {}
        self._next_ms = ticks_add(now_ms, self.interval_ms)
        return self._succeeded(raw, now_ms)

    def _failed(self, exc: "BaseException") -> None:
        self.failures += 1
        if self.failures >= self.fail_after:
            self._need_setup = True  # the chip may have been replugged or reset
            self._set_state("failed", describe(exc))
        else:
            self._set_state("warning", describe(exc))

    def _succeeded(self, raw: "Dict[str, Any]", now_ms: int) -> "Dict[str, float]":
        self.failures = 0
        if self._stuck(raw):
            self._set_state("warning", "stuck: same reading for %d updates" % self._same)
        else:
            self._set_state("ok", "")
        report = {}
        for quantity in raw:
            value = self._chain(quantity).push(raw[quantity], now_ms)
            if value is not None:
                report[quantity] = value
                self._values[quantity] = value
        if report and self.on_report is not None:
            self._call(self.on_report, self.name, report)
        return report

    def _stuck(self, raw: "Dict[str, Any]") -> bool:
        if not self.stuck_after:
            return False
        keys = [quantity for quantity in raw if not _exempt_from_stuck(quantity)]
        if not keys:
            return False
        keys.sort()  # dicts are unordered on MicroPython
        reading = tuple([(key, raw[key]) for key in keys])
        if reading == self._last_raw:
            self._same += 1
        else:
            self._last_raw = reading
            self._same = 1
        return self._same >= self.stuck_after

    def _set_state(self, state: str, detail: str) -> None:
        was_bad = self.state in _BAD
        self.state = state
        self.detail = detail
        if state in _BAD and not was_bad:
            self.breaks += 1
            self._emit(state, detail)
        elif was_bad and state == "ok":
            self.recoveries += 1
            self._emit("ok", "recovered")

    def _emit(self, state: str, detail: str) -> None:
        if self.on_fault is not None:
            self._call(self.on_fault, self.name, state, detail)

    def _call(self, callback: "Callable[..., Any]", *args: "Any") -> None:
        try:
            callback(*args)
        except Exception as exc:  # a broken callback must not stop updates
            print("component %s: callback failed: %s" % (self.name, describe(exc)))

    # ---- loop ---------------------------------------------------------------------------

    async def run(self, max_updates: "Optional[int]" = None) -> None:
        """Update on schedule until cancelled (or after max_updates updates)."""
        count = 0
        while max_updates is None or count < max_updates:
            now = self._clock()
            if self.due(now):
                await self.run_once(now)
                count += 1
                continue
            await asyncio.sleep(self.ms_until_due(now) / 1000)


async def run_all(components: "List[Component]", max_updates: "Optional[int]" = None) -> None:
    """Run every component's loop concurrently; one failing driver never stops the others."""
    await asyncio.gather(*[c.run(max_updates) for c in components])
