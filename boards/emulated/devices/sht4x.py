# Byte-level model of a Sensirion SHT4x on the emulated I2C bus.
#
# Behaves like the datasheet describes the chip: one-byte commands; single-shot measurements
# take their MAXIMUM duration (high 8.3 ms, medium 4.5 ms, low 1.6 ms) and the chip NACKs any
# transfer until then (OSError EIO from the bus); a result is read once (6 bytes: T, CRC, RH,
# CRC; the master may stop early) and a second read is NACKed; an unknown command is NACKed;
# soft reset 0x94 makes it deaf for 1 ms; 0x89 answers the serial number. Heater commands are
# accepted, keep the chip busy for the pulse + 8.3 ms and answer a high-precision measurement
# (the heating of the air around the die is not modelled).
#
# World: "air_temperature_c", "air_humidity_pct" via world.value(), time via world.now_s(),
# fault via world.fault(self.name): "crc" corrupts both CRC bytes of every answer, "stuck"
# repeats the last good raw frame, "noise" adds uniform noise (NOISE_C, NOISE_PCT).
#
# Runs under MicroPython and CPython: no typing at runtime, no dataclasses.
import errno
import random

from devices import sensirion_crc8 as crc8

# command -> (seconds busy, kind)
COMMANDS = {
    0xFD: (0.0083, "measure"),
    0xF6: (0.0045, "measure"),
    0xE0: (0.0016, "measure"),
    0x39: (1.1 + 0.0083, "measure"),
    0x32: (0.11 + 0.0083, "measure"),
    0x2F: (1.1 + 0.0083, "measure"),
    0x24: (0.11 + 0.0083, "measure"),
    0x1E: (1.1 + 0.0083, "measure"),
    0x15: (0.11 + 0.0083, "measure"),
    0x89: (0.0, "serial"),
    0x94: (0.001, "reset"),
}




def _word(value):
    return bytes(((value >> 8) & 0xFF, value & 0xFF, crc8(bytes(((value >> 8) & 0xFF,
                                                                  value & 0xFF)))))


def raw_temperature(t_c):
    """S_T for a temperature, by inverting T = -45 + 175 * S_T / 65535."""
    return max(0, min(65535, round((t_c + 45.0) * 65535.0 / 175.0)))


def raw_humidity(rh_pct):
    """S_RH for a humidity, by inverting RH = -6 + 125 * S_RH / 65535."""
    return max(0, min(65535, round((rh_pct + 6.0) * 65535.0 / 125.0)))


def _nack():
    return OSError(errno.EIO, "EIO")


LOG_MAX = 64

class Device:
    NOISE_C = 0.5
    NOISE_PCT = 3.0
    REPEATABILITY_C = 0.04
    REPEATABILITY_PCT = 0.08

    def __init__(self, world, address=0x44):
        self.world = world
        self.address = address
        self.name = "sht4x"
        self.serial = 0x0C0FFEE0 + address
        self.busy_until = 0.0
        self.answer = None  # bytes the next read returns (None: nothing to read -> NACK)
        self.last_good = None  # last good 6-byte frame, for the "stuck" fault
        self.log = []  # the last LOG_MAX; ("w", bytes) / ("r", n) transactions, for tests

    def _fault(self):
        return self.world.fault(self.name)

    def _check_awake(self):
        if self.world.now_s() < self.busy_until:
            raise _nack()

    def _remember(self, entry):
        self.log.append(entry)
        if len(self.log) > LOG_MAX:  # a node runs for days: keep the log bounded
            del self.log[: LOG_MAX // 2]

    def i2c_write(self, data):
        self._check_awake()
        if len(data) != 1 or data[0] not in COMMANDS:
            raise _nack()
        self._remember(("w", bytes(data)))
        duration, kind = COMMANDS[data[0]]
        self.busy_until = self.world.now_s() + duration
        if kind == "measure":
            self.answer = self._measure()
        elif kind == "serial":
            self.answer = _word(self.serial >> 16) + _word(self.serial & 0xFFFF)
        else:
            self.answer = None

    def _measure(self):
        fault = self._fault()
        if fault == "stuck" and self.last_good is not None:
            return self.last_good
        t_c = self.world.value("air_temperature_c")
        rh = self.world.value("air_humidity_pct")
        # Every real measurement differs a little (datasheet repeatability, high precision:
        # 0.04 degC, 0.08 %RH); without it a steady world would look like a stuck chip.
        # (A bare test world without measurement_noise gets exact values to check formulas.)
        if getattr(self.world, "measurement_noise", False):
            t_c += random.uniform(-self.REPEATABILITY_C, self.REPEATABILITY_C)
            rh += random.uniform(-self.REPEATABILITY_PCT, self.REPEATABILITY_PCT)
        if fault == "noise":
            t_c += random.uniform(-self.NOISE_C, self.NOISE_C)
            rh += random.uniform(-self.NOISE_PCT, self.NOISE_PCT)
        frame = _word(raw_temperature(t_c)) + _word(raw_humidity(rh))
        self.last_good = frame
        return frame

    def i2c_read(self, n):
        self._check_awake()
        if self.answer is None:
            raise _nack()
        self._remember(("r", n))
        frame = self.answer
        self.answer = None
        if self._fault() == "crc":
            frame = bytes((frame[0], frame[1], frame[2] ^ 0xFF, frame[3], frame[4],
                           frame[5] ^ 0x5A))
        if n > len(frame):
            frame = frame + b"\xff" * (n - len(frame))  # the bus idles high
        return frame[:n]
