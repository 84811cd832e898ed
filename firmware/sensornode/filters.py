# Filter chains for readings: one chain per reported quantity, built from config data.
#
#   chain = FilterChain([{"median": 5}, {"ema": 0.3}, {"outlier": {"max_jump": 10}},
#                        {"delta": 0.5, "heartbeat_s": 300}])
#   value = chain.push(raw, now_ms)   # a number to report now, or None (do not report now)
#
# Each spec item names ONE filter; its value is the filter's main parameter, or an object of
# all its parameters; other parameters of that filter may also sit beside it:
#   {"median": 5}                        window (1..31 samples; median of what is there so far)
#   {"ema": 0.3}                         alpha in (0, 1]: out = alpha*in + (1-alpha)*out
#   {"outlier": 10, "accept_after": 3}   drop a sample more than max_jump away from the last
#   {"outlier": {"max_jump": 10}}        accepted one; after accept_after consecutive drops the
#                                        new level is accepted (a real step gets through)
#   {"delta": 0.5, "heartbeat_s": 300}   pass only a change of at least `delta` from the last
#                                        passed value; heartbeat_s (optional): pass anyway once
#                                        that long has gone by since the last passed value
#   {"round": 1}                         round to that many decimals (0..6)
# A filter that returns None ends the chain for that sample. Times are ticks_ms values
# (wrap-safe with ticks_diff); a heartbeat is at most one day, well inside a ticks half period.
from sensornode.compat import ticks_diff

try:
    from typing import Any, List, Optional
except ImportError:
    pass

MAX_WINDOW = 31
MAX_HEARTBEAT_S = 86400
MAX_ACCEPT_AFTER = 100


class FilterConfigError(ValueError):
    """A filter spec that cannot be used; the message names the field and the fix."""


def _is_number(value: "Any") -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return -1e300 <= value <= 1e300  # also False for NaN


class Median:
    def __init__(self, window: int) -> None:
        self.window = window
        self._buf = []  # type: List[float]

    def push(self, value: float, now_ms: int) -> "Optional[float]":
        buf = self._buf
        buf.append(value)
        if len(buf) > self.window:
            buf.pop(0)
        ordered = sorted(buf)
        mid = len(ordered) // 2
        if len(ordered) % 2:
            return ordered[mid]
        return (ordered[mid - 1] + ordered[mid]) / 2

    def reset(self) -> None:
        self._buf = []


class Ema:
    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self._value = None  # type: Optional[float]

    def push(self, value: float, now_ms: int) -> "Optional[float]":
        if self._value is None:
            self._value = value
        else:
            self._value += self.alpha * (value - self._value)
        return self._value

    def reset(self) -> None:
        self._value = None


class Outlier:
    def __init__(self, max_jump: float, accept_after: int = 3) -> None:
        self.max_jump = max_jump
        self.accept_after = accept_after
        self._ref = None  # type: Optional[float]
        self._rejected = 0

    @property
    def rejected(self) -> int:
        """Consecutive samples dropped so far."""
        return self._rejected

    def push(self, value: float, now_ms: int) -> "Optional[float]":
        if self._ref is not None and abs(value - self._ref) > self.max_jump:
            self._rejected += 1
            if self._rejected < self.accept_after:
                return None
        self._rejected = 0
        self._ref = value
        return value

    def reset(self) -> None:
        self._ref = None
        self._rejected = 0


class Delta:
    def __init__(self, delta: float, heartbeat_s: float = 0) -> None:
        self.delta = delta
        self.heartbeat_ms = int(heartbeat_s * 1000)
        self._last = None  # type: Optional[float]
        self._last_ms = 0

    def push(self, value: float, now_ms: int) -> "Optional[float]":
        last = self._last
        if (last is not None and abs(value - last) < self.delta
                and not (self.heartbeat_ms and ticks_diff(now_ms, self._last_ms)
                         >= self.heartbeat_ms)):
            return None
        self._last = value
        self._last_ms = now_ms
        return value

    def reset(self) -> None:
        self._last = None


class Round:
    def __init__(self, decimals: int) -> None:
        self.decimals = decimals

    def push(self, value: float, now_ms: int) -> "Optional[float]":
        return round(value, self.decimals)

    def reset(self) -> None:
        pass


# ---- config -------------------------------------------------------------------------------
# kind: (class, main parameter, {parameter: (check, what it must be, example)})


def _window(v: "Any") -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_WINDOW


def _alpha(v: "Any") -> bool:
    return _is_number(v) and 0 < v <= 1


def _positive(v: "Any") -> bool:
    return _is_number(v) and v > 0


def _not_negative(v: "Any") -> bool:
    return _is_number(v) and v >= 0


def _accept_after(v: "Any") -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_ACCEPT_AFTER


def _heartbeat(v: "Any") -> bool:
    return _is_number(v) and 0 <= v <= MAX_HEARTBEAT_S


def _decimals(v: "Any") -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 6


_KINDS = {
    "median": (Median, "window", {
        "window": (_window, "a whole number of samples 1..%d" % MAX_WINDOW, "5")}),
    "ema": (Ema, "alpha", {
        "alpha": (_alpha, "a number above 0 and at most 1 (weight of the new sample)", "0.3")}),
    "outlier": (Outlier, "max_jump", {
        "max_jump": (_positive, "a number above 0 in the reading's unit", "10"),
        "accept_after": (_accept_after, "a whole number 1..%d of consecutive jumps after which "
                         "the new level is accepted" % MAX_ACCEPT_AFTER, "3")}),
    "delta": (Delta, "delta", {
        "delta": (_not_negative, "a number >= 0 in the reading's unit (0: every sample)", "0.5"),
        "heartbeat_s": (_heartbeat, "seconds 0..%d (0: no heartbeat)" % MAX_HEARTBEAT_S,
                        "300")}),
    "round": (Round, "decimals", {
        "decimals": (_decimals, "a whole number of decimals 0..6", "1")}),
}


def _kinds_text() -> str:
    return ", ".join(sorted(_KINDS))


def _parse_item(item: "Any", where: str) -> "Any":
    if not isinstance(item, dict):
        raise FilterConfigError('%s: must be an object naming one filter, like {"median": 5}; '
                                "filters: %s" % (where, _kinds_text()))
    kinds = [key for key in item if key in _KINDS]
    if len(kinds) != 1:
        raise FilterConfigError("%s: must name exactly one filter (%s), got %s"
                                % (where, _kinds_text(), ", ".join(sorted(item)) or "nothing"))
    kind = kinds[0]
    cls, main, params = _KINDS[kind]
    given = item[kind]
    args = {}
    if isinstance(given, dict):
        for key in given:
            args[key] = given[key]
        siblings = [key for key in item if key != kind]
        if siblings:
            raise FilterConfigError("%s.%s: give all parameters inside the object, not beside "
                                    "it (%s)" % (where, kind, ", ".join(sorted(siblings))))
        here = where + "." + kind
    else:
        args[main] = given
        for key in item:
            if key != kind:
                args[key] = item[key]
        here = where
    for key in args:
        if key not in params:
            raise FilterConfigError("%s.%s: unknown parameter of %s; known: %s"
                                    % (here, key, kind, ", ".join(sorted(params))))
    if main not in args:
        raise FilterConfigError("%s.%s.%s: missing; e.g. {\"%s\": {\"%s\": %s}}"
                                % (where, kind, main, kind, main, params[main][2]))
    for key in args:
        check, what, example = params[key]
        if not check(args[key]):
            field = here + "." + (kind if key == main and here == where else key)
            raise FilterConfigError("%s: must be %s, got %r (e.g. %s)"
                                    % (field, what, args[key], example))
    return cls(**args)


def build(spec: "Any", where: str = "filters") -> "List[Any]":
    """The filter objects for a spec list; FilterConfigError names the bad field."""
    if spec is None:
        return []
    if not isinstance(spec, (list, tuple)):
        raise FilterConfigError('%s: must be a list of filters, like [{"median": 5}, '
                                '{"delta": 0.5, "heartbeat_s": 300}], got %r' % (where, spec))
    return [_parse_item(item, "%s[%d]" % (where, i)) for i, item in enumerate(spec)]


def validate(spec: "Any", where: str = "filters") -> None:
    """Raise FilterConfigError if `spec` is not a usable filter list (host-side config checks)."""
    build(spec, where)


class FilterChain:
    """The filters of one quantity, applied in order."""

    def __init__(self, spec: "Any" = None, where: str = "filters") -> None:
        self.filters = build(spec, where)

    def push(self, value: "Any", now_ms: int) -> "Optional[float]":
        """The value to report now, or None. None, NaN and infinities never pass."""
        if isinstance(value, bool):
            value = int(value)
        if not _is_number(value):
            return None
        for f in self.filters:
            value = f.push(value, now_ms)
            if value is None:
                return None
        return value

    def reset(self) -> None:
        for f in self.filters:
            f.reset()
