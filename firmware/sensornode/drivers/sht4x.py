# Sensirion SHT4x (SHT40 / SHT41 / SHT43 / SHT45) air temperature and humidity over I2C.
#
# Datasheet facts this driver relies on:
# - I2C addresses 0x44 (…-AD1x), 0x45 (…-BD1x), 0x46 (…-CD1x). Commands are one byte.
# - Single-shot measure commands, with their MAXIMUM durations: high precision 0xFD (8.3 ms),
#   medium 0xF6 (4.5 ms), low 0xE0 (1.6 ms). While it measures the chip NACKs its address, so
#   the result is read only after the maximum duration.
# - Answer: T[15:8] T[7:0] CRC  RH[15:8] RH[7:0] CRC. Serial number (0x89) has the same shape.
# - CRC-8: polynomial 0x31 (x^8 + x^5 + x^4 + 1), init 0xFF, no reflection, no final XOR;
#   check value crc8(0xBE 0xEF) == 0x92.
# - T = -45 + 175 * S_T / 65535 degC;  RH = -6 + 125 * S_RH / 65535 %RH, cropped to 0..100
#   (the chip can report slightly outside 0..100 %RH; the datasheet says to crop).
# - Soft reset 0x94: the chip is ready again after at most 1 ms.
# - Heater commands (not used here; each ends with a high-precision measurement and the chip is
#   busy for the heating time + 8.3 ms): 0x39 200 mW 1 s, 0x32 200 mW 0.1 s, 0x2F 110 mW 1 s,
#   0x24 110 mW 0.1 s, 0x1E 20 mW 1 s, 0x15 20 mW 0.1 s. Max duty cycle 10 %.
#
# Two-phase API so the async app never blocks during a conversion: start_measurement()
# returns the ms to wait, read_measurement() reads and checks the result; read() does both.
# The driver keeps its own deadline: reading before it raises NotReady without touching the
# bus (on real hardware a NACK from a busy chip and from a missing chip look alike).
import asyncio

from sensornode.compat import const, sleep_ms, ticks_add, ticks_diff, ticks_ms
from sensornode.drivers.errors import CRCError, NotReady
from sensornode.drivers.sensirion import crc8

try:
    from typing import Any, Callable, Dict, Optional
except ImportError:
    pass

ADDRESSES = (0x44, 0x45, 0x46)
DEFAULT_ADDRESS = 0x44

_CMD_SOFT_RESET = const(0x94)
_CMD_SERIAL = const(0x89)
_RESET_MS = const(1)
_SERIAL_MS = const(1)

# precision -> (command, maximum duration in tenths of a ms)
MEASURE = {"high": (0xFD, 83), "medium": (0xF6, 45), "low": (0xE0, 16)}


def temperature_c(raw: int) -> float:
    """Temperature in degC from the 16-bit signal S_T."""
    return -45.0 + 175.0 * raw / 65535.0


def humidity_pct(raw: int) -> float:
    """Relative humidity in %RH from the 16-bit signal S_RH, cropped to 0..100."""
    rh = -6.0 + 125.0 * raw / 65535.0
    if rh < 0.0:
        return 0.0
    if rh > 100.0:
        return 100.0
    return rh


def check_words(frame: "Any") -> "Any":
    """The two 16-bit words of a 6-byte answer, after checking both CRCs (CRCError if not)."""
    if len(frame) != 6:
        raise CRCError("sht4x: answer has %d bytes, expected 6" % len(frame))
    for i in (0, 3):
        crc = crc8(frame, i, i + 2)
        if crc != frame[i + 2]:
            raise CRCError("sht4x: CRC mismatch in word %d: got 0x%02x, computed 0x%02x"
                           % (i // 3, frame[i + 2], crc))
    return (frame[0] << 8) | frame[1], (frame[3] << 8) | frame[4]


class SHT4x:
    def __init__(self, i2c: "Any", address: int = DEFAULT_ADDRESS, precision: str = "high",
                 clock: "Optional[Callable[[], int]]" = None) -> None:
        if address not in ADDRESSES:
            raise ValueError("address: 0x%02x is not an SHT4x address; use one of %s"
                             % (address, ", ".join("0x%02x" % a for a in ADDRESSES)))
        if precision not in MEASURE:
            raise ValueError("precision: %r is unknown; use 'high', 'medium' or 'low'"
                             % (precision,))
        self._i2c = i2c
        self.address = address
        self.precision = precision
        self._clock = clock or ticks_ms
        self._buf = bytearray(6)
        self._ready_at = 0
        self._busy = False  # a command's deadline is pending
        self._pending = False  # a measurement was started and not read yet

    def _command(self, cmd: int, wait_ms: int) -> int:
        self._check_idle()
        self._i2c.writeto(self.address, bytes((cmd,)))
        self._ready_at = ticks_add(self._clock(), wait_ms)
        self._busy = True
        return wait_ms

    def _check_idle(self) -> None:
        if self._busy:
            left = ticks_diff(self._ready_at, self._clock())
            if left > 0:
                raise NotReady("sht4x: busy for %d ms more" % left)
            self._busy = False

    def soft_reset(self) -> int:
        """Send a soft reset; returns the ms before the chip accepts commands again."""
        self._pending = False
        return self._command(_CMD_SOFT_RESET, _RESET_MS)

    def serial_number(self) -> int:
        """The chip's 32-bit serial number (blocks ~1 ms: an identification step at setup)."""
        self._pending = False
        sleep_ms(self._command(_CMD_SERIAL, _SERIAL_MS))
        self._busy = False
        self._i2c.readfrom_into(self.address, self._buf)
        high, low = check_words(self._buf)
        return (high << 16) | low

    def start_measurement(self) -> int:
        """Start a single-shot measurement; returns the ms to wait before read_measurement()."""
        cmd, tenths = MEASURE[self.precision]
        wait_ms = self._command(cmd, (tenths + 9) // 10)
        self._pending = True
        return wait_ms

    def read_measurement(self) -> "Dict[str, float]":
        """{"air_temperature": degC, "air_humidity": %RH} of the measurement started last.

        NotReady before its maximum duration has passed or when none was started; CRCError
        when the answer is corrupt; OSError from the bus (e.g. ENODEV: chip missing)."""
        if not self._pending:
            raise NotReady("sht4x: no measurement started")
        self._check_idle()
        self._pending = False
        self._i2c.readfrom_into(self.address, self._buf)
        raw_t, raw_rh = check_words(self._buf)
        return {
            "air_temperature": round(temperature_c(raw_t), 2),
            "air_humidity": round(humidity_pct(raw_rh), 2),
        }

    async def read(self) -> "Dict[str, float]":
        """Measure, waiting asynchronously for the conversion."""
        wait_ms = self.start_measurement()
        await asyncio.sleep(wait_ms / 1000)
        return self.read_measurement()
