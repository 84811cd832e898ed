# Byte-level model of a Sensirion SGP40 VOC sensor on the emulated I2C bus (address 0x59).
#
# Commands are 16-bit words; arguments and answers are words each followed by a CRC-8
# (poly 0x31, init 0xFF). Like the chip: a command keeps it busy for its datasheet maximum
# (measure 30 ms, self-test 320 ms, serial number 1 ms, heater off 1 ms) and it NACKs every
# transfer until then (OSError EIO from the bus); an answer is read once, a second read is
# NACKed; an unknown command, a wrong length or a wrong argument CRC is NACKed.
#
# The signal (a metal-oxide sensor's log response; lower SRAW = more VOC):
#   SRAW = SRAW_CLEAN - SRAW_PER_DECADE * log10(1 + voc_ppb / VOC_KNEE_PPB)
#          - SRAW_PER_G_M3 * (AH(air) - AH(compensation))  + noise of +/- NOISE_TICKS
# AH is absolute humidity in g/m3: the chip compensates the humidity it is told (the RH/T
# ticks of the measure command); told the truth, humidity has no effect, told the defaults
# (50 %RH / 25 degC) in humid air, SRAW drops as if VOC rose.
#
# World: "voc_ppb", "air_humidity_pct", "air_temperature_c" via world.value(), time via
# world.now_s(), fault via world.fault(self.name): "crc" corrupts the CRC of every answered
# word, "stuck" repeats the last good SRAW (and the self-test then fails), "noise" adds
# +/- FAULT_NOISE_TICKS.
#
# Runs under MicroPython and CPython: no typing at runtime, no dataclasses.
import errno
import math

from devices import sensirion_crc8 as crc8

ADDRESS = 0x59
SERIAL = 0x0000_2F3A_91C4

SRAW_CLEAN = 30500.0
SRAW_PER_DECADE = 1600.0
VOC_KNEE_PPB = 30.0
SRAW_PER_G_M3 = 40.0
NOISE_TICKS = 2
FAULT_NOISE_TICKS = 400

_MEASURE = 0x260F
_SELF_TEST = 0x280E
_HEATER_OFF = 0x3615
_SERIAL = 0x3682
# command -> (argument words, seconds busy)
COMMANDS = {
    _MEASURE: (2, 0.030),
    _SELF_TEST: (0, 0.320),
    _HEATER_OFF: (0, 0.001),
    _SERIAL: (0, 0.001),
}
SELF_TEST_PASSED = 0xD400
SELF_TEST_FAILED = 0x4B00




def absolute_humidity(rh_pct, t_c):
    """g/m3 of water in air at rh_pct and t_c (Magnus formula over water)."""
    vapour_hpa = rh_pct / 100.0 * 6.112 * math.exp(17.62 * t_c / (243.12 + t_c))
    return 216.7 * vapour_hpa / (273.15 + t_c)


def sraw_for(voc_ppb, rh_pct, t_c, comp_rh_pct=50.0, comp_t_c=25.0):
    """The noiseless SRAW (float) for these conditions and the compensation the chip is told."""
    sraw = SRAW_CLEAN - SRAW_PER_DECADE * math.log(1.0 + max(0.0, voc_ppb) / VOC_KNEE_PPB) \
        / math.log(10.0)
    sraw -= SRAW_PER_G_M3 * (absolute_humidity(rh_pct, t_c)
                             - absolute_humidity(comp_rh_pct, comp_t_c))
    return sraw


def _nack():
    return OSError(errno.EIO, "EIO")


class Device:
    def __init__(self, world, address=ADDRESS):
        self.world = world
        self.address = address
        self.name = "sgp40"
        self.serial = SERIAL
        self.heater_on = False
        self.busy_until = 0.0
        self.answer = None  # words the next read returns; None: nothing to read -> NACK
        self.last_good = None  # last good SRAW, for the "stuck" fault
        self.log = []  # ("w", bytes) / ("r", n) transactions, for tests (last 64)
        self._rand = (address * 2654435761) & 0xFFFFFFFF or 1

    def _record(self, entry):
        self.log.append(entry)
        if len(self.log) > 64:
            self.log.pop(0)

    def _uniform(self, half_width):
        # xorshift32: reproducible noise, the same under MicroPython and CPython
        x = self._rand
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._rand = x
        return (x % (2 * half_width + 1)) - half_width

    def _check_awake(self, now):
        # The emulator's clock is in ms: allow half of one for rounding.
        if now < self.busy_until - 0.0005:
            raise _nack()

    def i2c_write(self, data):
        now = self.world.now_s()
        self._check_awake(now)
        data = bytes(data)
        if len(data) < 2:
            raise _nack()
        cmd = (data[0] << 8) | data[1]
        spec = COMMANDS.get(cmd)
        if spec is None or len(data) != 2 + 3 * spec[0]:
            raise _nack()
        args = []
        for i in range(2, len(data), 3):
            if crc8(data[i:i + 2]) != data[i + 2]:
                raise _nack()
            args.append((data[i] << 8) | data[i + 1])
        self._record(("w", data))
        self.busy_until = now + spec[1]
        self.answer = None
        if cmd == _MEASURE:
            self.heater_on = True
            self.answer = [self._measure(args[0], args[1])]
        elif cmd == _SELF_TEST:
            self.answer = [SELF_TEST_FAILED if self.world.fault(self.name) == "stuck"
                           else SELF_TEST_PASSED]
        elif cmd == _SERIAL:
            self.answer = [(self.serial >> 32) & 0xFFFF, (self.serial >> 16) & 0xFFFF,
                           self.serial & 0xFFFF]
        else:
            self.heater_on = False

    def _measure(self, rh_ticks, t_ticks):
        fault = self.world.fault(self.name)
        if fault == "stuck" and self.last_good is not None:
            return self.last_good
        sraw = sraw_for(self.world.value("voc_ppb"), self.world.value("air_humidity_pct"),
                        self.world.value("air_temperature_c"),
                        rh_ticks * 100.0 / 65535, t_ticks * 175.0 / 65535 - 45.0)
        sraw += self._uniform(NOISE_TICKS)
        if fault == "noise":
            sraw += self._uniform(FAULT_NOISE_TICKS)
        sraw = max(0, min(65535, int(sraw + 0.5)))
        if fault != "noise":
            self.last_good = sraw
        return sraw

    def i2c_read(self, n):
        self._check_awake(self.world.now_s())
        if self.answer is None:
            raise _nack()
        self._record(("r", n))
        crc_xor = 0x5A if self.world.fault(self.name) == "crc" else 0
        out = bytearray()
        for word in self.answer:
            pair = bytes(((word >> 8) & 0xFF, word & 0xFF))
            out += pair
            out.append(crc8(pair) ^ crc_xor)
        self.answer = None
        while len(out) < n:
            out.append(0xFF)  # the bus idles high
        return bytes(out[:n])
