# Sensirion SGP40 VOC sensor on I2C (address 0x59), from the datasheet.
#
# Every command is a 16-bit word, MSB first; command arguments and every word the chip sends
# back are followed by a CRC-8 (polynomial 0x31, init 0xFF). The raw measurement takes the
# air's relative humidity and temperature (from the SHT4x next to it) as ticks, so the chip
# can compensate humidity itself; without them it assumes 50 %RH / 25 degC. The chip does not
# answer (NACK -> OSError) while a command is running, so the caller waits the returned time.
#
# readings: voc_raw (SRAW ticks, lower = more VOC) and voc_index (1..500, 100 = typical air,
# from our VocIndex). The VOC index needs one sample per `algorithm.sampling_interval_s`
# (1 s by default): call read() at that rate. During the algorithm's initial blackout (the
# first ~45 samples after start or reboot) the reading has voc_raw only - voc_index is absent,
# not 0, so no one averages a meaningless value.
#
# The driver keeps its own deadline for the running command: reading or sending before it
# raises NotReady without touching the bus (a NACK from a busy chip and from a missing chip
# look alike on real hardware; OSError is kept for the bus and the chip being gone).
import asyncio

from sensornode.compat import const, sleep_ms, ticks_add, ticks_diff, ticks_ms
from sensornode.drivers.errors import CRCError, NotReady, SensorError
from sensornode.drivers.sensirion import crc8
from sensornode.voc_index import VocIndex

try:
    from typing import Any, Callable, Dict, Optional
except ImportError:
    pass

ADDRESS = const(0x59)
MEASURE_MS = const(30)  # datasheet maximum durations
SELF_TEST_MS = const(320)
_SERIAL_MS = const(1)
_HEATER_OFF_MS = const(1)

_CMD_MEASURE_RAW = const(0x260F)
_CMD_SELF_TEST = const(0x280E)
_CMD_HEATER_OFF = const(0x3615)
_CMD_SERIAL = const(0x3682)

_SELF_TEST_PASSED = const(0xD400)
_SELF_TEST_FAILED = const(0x4B00)

_DEFAULT_RH = 50.0  # the datasheet's "no compensation" arguments (ticks 0x8000, 0x6666)
_DEFAULT_T = 25.0


def _number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError("%s: must be a number, got %r" % (name, value))
    return value


def rh_ticks(humidity_pct: float) -> int:
    """Relative humidity in % as the measure command's ticks (RH * 65535 / 100), clamped."""
    rh = _number("humidity_pct", humidity_pct)
    ticks = int(rh * 65535 / 100 + 0.5)
    return 0 if ticks < 0 else 65535 if ticks > 65535 else ticks


def t_ticks(temperature_c: float) -> int:
    """Temperature in degC as ticks ((T + 45) * 65535 / 175), clamped to -45..130 degC."""
    t = _number("temperature_c", temperature_c)
    ticks = int((t + 45) * 65535 / 175 + 0.5)
    return 0 if ticks < 0 else 65535 if ticks > 65535 else ticks


class SGP40:
    def __init__(self, i2c: "Any", address: int = ADDRESS,
                 algorithm: "Optional[VocIndex]" = None,
                 clock: "Optional[Callable[[], int]]" = None) -> None:
        self._i2c = i2c
        self.address = address
        self._clock = clock or ticks_ms  # ms ticks; tests pass the emulated world's
        # The VOC index state lives here; pass one restored by sensornode.voc_state to keep
        # the learned baseline across reboots.
        self.algorithm = algorithm if algorithm is not None else VocIndex()
        self._cmd = bytearray(8)
        self._word = bytearray(3)
        self._pending = 0  # the command whose answer is awaited, 0 for none
        self._ready_at = 0
        self._busy = False  # a command's deadline is pending

    # ---- framing ---------------------------------------------------------------------------

    def _check_idle(self):
        if self._busy:
            left = ticks_diff(self._ready_at, self._clock())
            if left > 0:
                raise NotReady("SGP40: busy for %d ms more" % left)
            self._busy = False

    def _send(self, cmd, wait_ms, args=None):
        self._check_idle()
        self._pending = 0
        buf = self._cmd
        buf[0] = cmd >> 8
        buf[1] = cmd & 0xFF
        n = 2
        if args is not None:
            for word in args:
                buf[n] = word >> 8
                buf[n + 1] = word & 0xFF
                buf[n + 2] = crc8(buf, n, n + 2)
                n += 3
        self._i2c.writeto(self.address, buf if n == len(buf) else memoryview(buf)[:n])
        self._ready_at = ticks_add(self._clock(), wait_ms)
        self._busy = True
        self._pending = cmd
        return wait_ms

    def _read_words(self, buf, what):
        self._i2c.readfrom_into(self.address, buf)
        words = []
        for i in range(0, len(buf), 3):
            if crc8(buf, i, i + 2) != buf[i + 2]:
                raise CRCError("SGP40 %s: CRC mismatch in word %d (0x%02x%02x crc 0x%02x)"
                               % (what, i // 3, buf[i], buf[i + 1], buf[i + 2]))
            words.append((buf[i] << 8) | buf[i + 1])
        return words

    def _take(self, cmd, what):
        if self._pending != cmd:
            raise NotReady("SGP40: no %s started" % what)
        self._check_idle()
        self._pending = 0
        return self._read_words(self._word, what)[0]

    # ---- VOC measurement -------------------------------------------------------------------

    def start_measurement(self, humidity_pct: "Optional[float]" = None,
                          temperature_c: "Optional[float]" = None) -> int:
        """Start a raw measurement compensated for the given air humidity and temperature (a
        missing value uses the datasheet default 50 %RH / 25 degC). Returns the ms to wait
        before read_measurement()."""
        rh = rh_ticks(_DEFAULT_RH if humidity_pct is None else humidity_pct)
        t = t_ticks(_DEFAULT_T if temperature_c is None else temperature_c)
        return self._send(_CMD_MEASURE_RAW, MEASURE_MS, (rh, t))

    def read_measurement(self) -> "Dict[str, int]":
        """{"voc_raw": ticks, "voc_index": 1..500}; no "voc_index" during the blackout.
        NotReady before the measurement's maximum duration or when none was started;
        CRCError for a corrupted answer; OSError from the bus (ENODEV: chip missing)."""
        sraw = self._take(_CMD_MEASURE_RAW, "measurement")
        result = {"voc_raw": sraw}
        index = self.algorithm.process(sraw)
        if index:
            result["voc_index"] = index
        return result

    async def read(self, humidity_pct: "Optional[float]" = None,
                   temperature_c: "Optional[float]" = None) -> "Dict[str, int]":
        wait_ms = self.start_measurement(humidity_pct, temperature_c)
        await asyncio.sleep(wait_ms / 1000)
        return self.read_measurement()

    # ---- maintenance -----------------------------------------------------------------------

    def start_self_test(self) -> int:
        """Start the chip's self-test (hotplate and MOX); returns the ms to wait."""
        return self._send(_CMD_SELF_TEST, SELF_TEST_MS)

    def read_self_test(self) -> bool:
        """True if the chip passed its self-test, False if it reports a failure."""
        result = self._take(_CMD_SELF_TEST, "self-test")
        if result == _SELF_TEST_PASSED:
            return True
        if result == _SELF_TEST_FAILED:
            return False
        raise SensorError("SGP40 self-test: unexpected result 0x%04x" % result)

    async def self_test(self) -> bool:
        wait_ms = self.start_self_test()
        await asyncio.sleep(wait_ms / 1000)
        return self.read_self_test()

    def serial_number(self) -> int:
        """The chip's 48-bit serial number (blocks ~1 ms; for setup)."""
        sleep_ms(self._send(_CMD_SERIAL, _SERIAL_MS))
        self._busy = False
        self._pending = 0
        words = self._read_words(bytearray(9), "serial number")
        return (words[0] << 32) | (words[1] << 16) | words[2]

    def heater_off(self) -> None:
        """Stop measuring and turn the hotplate off (idle); the next measurement turns it on."""
        self._send(_CMD_HEATER_OFF, _HEATER_OFF_MS)
        self._pending = 0
