# Time and platform helpers: the real thing on MicroPython, a faithful shim on CPython so the
# same firmware modules run in host tests.
import time

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:

    def const(expr):  # type: ignore[no-redef]
        return expr


try:
    ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    ticks_add = time.ticks_add  # type: ignore[attr-defined]
    ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
    sleep_ms = time.sleep_ms  # type: ignore[attr-defined]
    MICROPYTHON = True
except AttributeError:
    MICROPYTHON = False
    # Same wrap-around arithmetic as MicroPython's ticks on a 32-bit MCU (2**30 period), so
    # host tests exercise wrap handling instead of a clock that never wraps.
    _TICKS_PERIOD = 1 << 30
    _TICKS_HALF = _TICKS_PERIOD // 2
    _TICKS_MAX = _TICKS_PERIOD - 1

    def ticks_ms():  # type: ignore[misc]
        # CPython-only branch: MicroPython's time has no monotonic().
        return int(time.monotonic() * 1000) & _TICKS_MAX  # pyright: ignore[reportAttributeAccessIssue]

    def ticks_add(ticks, delta):  # type: ignore[misc]
        return (ticks + delta) & _TICKS_MAX

    def ticks_diff(end, start):  # type: ignore[misc]
        return ((end - start + _TICKS_HALF) & _TICKS_MAX) - _TICKS_HALF

    def sleep_ms(ms):  # type: ignore[misc]
        time.sleep(ms / 1000)


# Boards whose RTC epoch is 2000-01-01 (ESP32, RP2 ports) report seconds since then.
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0


def unix_time():
    """Seconds since 1970, to the millisecond, whatever the port's epoch."""
    return round(time.time() + _EPOCH_OFFSET, 3)


def monotonic_ms():
    """Milliseconds that never wrap in practice, for durations longer than a ticks period."""
    return _Monotonic.now()


class _Monotonic:
    # ticks wrap after ~12 days on an MCU; accumulate deltas so long uptimes stay correct as
    # long as now() is called at least once per half period (the app's loop does that).
    _last = ticks_ms()
    _total = 0

    @classmethod
    def now(cls):
        current = ticks_ms()
        cls._total += ticks_diff(current, cls._last)
        cls._last = current
        return cls._total
