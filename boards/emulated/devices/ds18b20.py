# DS18B20 1-Wire digital thermometer, modelled at the bit level (one call per time slot).
#
# Facts from the datasheet this model follows:
# - ROM: family code 0x28, 48-bit serial, CRC-8 of the first 7 bytes, sent LSB first.
# - ROM commands: SEARCH ROM 0xF0 (per bit: the ROM bit, its complement, then the master's
#   direction; a chip whose bit differs drops out until the next reset), READ ROM 0x33,
#   MATCH ROM 0x55, SKIP ROM 0xCC, ALARM SEARCH 0xEC (only while T >= TH or T <= TL).
# - Function commands: CONVERT T 0x44 (read slots answer 0 while converting, 1 when done;
#   tconv max 93.75/187.5/375/750 ms at 9/10/11/12 bits), WRITE SCRATCHPAD 0x4E (TH, TL,
#   config), READ SCRATCHPAD 0xBE (9 bytes, the last the CRC-8 of the first 8), COPY
#   SCRATCHPAD 0x48 (TH, TL, config to EEPROM, 10 ms), RECALL E2 0xB8, READ POWER SUPPLY 0xB4
#   (0: parasite powered).
# - Temperature register: two's complement in 1/16 degC, low bits undefined (here 0) below 12
#   bits; +85 degC (0x0550) from power-on until the first conversion completes, so reading the
#   scratchpad before a conversion finished gives the previous value (or 85 degC).
# - Config byte: bits 6:5 = R1:R0 (resolution 9 + R), the other bits read 0 (bit 7) and 1.
#   Byte 5 reads 0xFF, byte 7 0x10; byte 6 is reserved (0x0C here, as after power-on).
# - Factory EEPROM: TH 75 degC, TL 70 degC, 12 bits; copied into the scratchpad at power-on.
#
# The temperature comes from world.value("soil_temperature_c[_<probe>]"), sampled when the
# conversion starts and visible when it ends. Faults (world.fault(self.name)): "crc" corrupts
# the scratchpad CRC byte, "stuck" keeps the temperature register from changing, "noise" adds
# up to +/- NOISE_C to each conversion; "absent" is the bus's (no presence pulse).
# Options (world.json "onewire" entry): probe (1..8), parasite (bool).
import math
import random

from devices import crc8

READ_ROM = 0x33
MATCH_ROM = 0x55
SKIP_ROM = 0xCC
SEARCH_ROM = 0xF0
ALARM_SEARCH = 0xEC
CONVERT_T = 0x44
WRITE_SCRATCHPAD = 0x4E
READ_SCRATCHPAD = 0xBE
COPY_SCRATCHPAD = 0x48
RECALL_E2 = 0xB8
READ_POWER_SUPPLY = 0xB4

CONVERSION_S = {9: 0.09375, 10: 0.1875, 11: 0.375, 12: 0.75}
COPY_S = 0.010
POWER_ON_RAW = 0x0550  # +85 degC
FACTORY_EEPROM = (75, 70, 0x7F)  # TH, TL, config (12 bits)
NOISE_C = 1.0
LOG_MAX = 64

# Slot-level states of the chip's 1-Wire logic.
_IDLE = 0  # ignores slots until the next reset (not selected, or done)
_ROM_CMD = 1  # receiving the ROM command byte
_FUNC_CMD = 2  # selected: receiving the function command byte
_MATCH = 3  # receiving the 64 ROM bits of MATCH ROM
_SEARCH = 4  # taking part in a search: bit, complement, direction per ROM bit
_SEND = 5  # sending bits (ROM, scratchpad)
_WRITE_SP = 6  # receiving TH, TL, config
_BUSY = 7  # converting / copying: read slots answer 0 until done
_POWER = 8  # read slots answer the power-supply mode


def resolution_of(config):
    """Bits of resolution (9..12) set by a config byte."""
    return 9 + ((config >> 5) & 3)


def config_for(bits):
    return ((bits - 9) << 5) | 0x1F


def encode_temperature(celsius, bits=12):
    """The temperature register (u16) for `celsius` converted at `bits` of resolution: the
    nearest 1/16 degC, with the bits below the resolution cleared (rounding towards -inf)."""
    celsius = min(125.0, max(-55.0, celsius))
    sixteenths = math.floor(celsius * 16 + 0.5)
    return sixteenths & (0xFFFF ^ ((1 << (12 - bits)) - 1))


class Device:
    def __init__(self, world, address):
        self.world = world
        self.rom = bytes(address)
        if len(self.rom) != 8 or crc8(self.rom) != 0:
            raise ValueError("ds18b20: ROM %r must be 8 bytes ending in their CRC-8" % (address,))
        self.name = "ds18b20"
        self.probe = 1
        self.parasite = False
        self.eeprom = list(FACTORY_EEPROM)
        self.log = []  # recent commands: ("rom", 0xCC), ("func", 0x44) ...
        self.conversions = 0
        self.power_on()

    def configure(self, options):
        self.probe = options.get("probe", self.probe)
        self.parasite = bool(options.get("parasite", self.parasite))

    def power_on(self):
        self.temperature_raw = POWER_ON_RAW
        self.th, self.tl, self.config = self.eeprom
        self._pending = None  # (done_s, raw) of a running conversion
        self._busy_until = 0.0
        self._mode = _IDLE
        self._rx = self._nrx = 0
        self._index = self._phase = 0
        self._tx = b""
        self._tx_then = _IDLE

    @property
    def resolution(self):
        return resolution_of(self.config)

    def scratchpad(self):
        """The 9 bytes READ SCRATCHPAD sends now."""
        self._settle()
        raw = self.temperature_raw
        data = bytes([raw & 0xFF, raw >> 8, self.th & 0xFF, self.tl & 0xFF, self.config,
                      0xFF, 0x0C, 0x10])
        crc = crc8(data)
        if self.world.fault(self.name) == "crc":
            crc ^= 0xFF
        return data + bytes([crc])

    # ---- time ------------------------------------------------------------------------------

    def _now(self):
        return self.world.now_s()

    def _settle(self):
        pending = self._pending
        if pending is not None and self._now() >= pending[0]:
            self._pending = None
            if self.world.fault(self.name) != "stuck":
                self.temperature_raw = pending[1]
            self.conversions += 1

    def _start_conversion(self):
        self._settle()
        bits = self.resolution
        name = "soil_temperature_c" if self.probe == 1 else "soil_temperature_c_%d" % self.probe
        celsius = self.world.value(name)
        if self.world.fault(self.name) == "noise":
            celsius += random.uniform(-NOISE_C, NOISE_C)
        done = self._now() + CONVERSION_S[bits]
        self._pending = (done, encode_temperature(celsius, bits))
        self._busy(done)

    def _busy(self, until):
        self._busy_until = until
        self._mode = _BUSY

    def _alarm(self):
        raw = self.temperature_raw
        whole = (raw - 0x10000 if raw & 0x8000 else raw) >> 4
        th = self.th - 256 if self.th & 0x80 else self.th
        tl = self.tl - 256 if self.tl & 0x80 else self.tl
        return whole >= th or whole <= tl

    # ---- the 1-Wire slots ------------------------------------------------------------------

    def ow_reset(self):
        self._settle()
        self._mode = _ROM_CMD
        self._rx = self._nrx = 0
        return True

    def _rom_bit(self, index):
        return (self.rom[index >> 3] >> (index & 7)) & 1

    def _send(self, data, then):
        self._tx = data
        self._index = 0
        self._tx_then = then
        self._mode = _SEND

    def _next_tx_bit(self):
        bit = (self._tx[self._index >> 3] >> (self._index & 7)) & 1
        self._index += 1
        if self._index == len(self._tx) * 8:
            self._mode = self._tx_then
            self._rx = self._nrx = 0
        return bit

    def ow_write_bit(self, bit):
        bit = 1 if bit else 0
        mode = self._mode
        if mode in (_ROM_CMD, _FUNC_CMD, _WRITE_SP):
            self._rx |= bit << self._nrx
            self._nrx += 1
            if self._nrx == 8:
                byte = self._rx
                self._rx = self._nrx = 0
                self._on_byte(byte)
        elif mode == _MATCH:
            if bit != self._rom_bit(self._index):
                self._mode = _IDLE
            else:
                self._index += 1
                if self._index == 64:
                    self._mode = _FUNC_CMD
        elif mode == _SEARCH:
            if self._phase < 2:
                self.ow_read_bit()  # a write slot where the chip sends: its bit is lost
            elif bit != self._rom_bit(self._index):
                self._mode = _IDLE  # the master took the other branch
            else:
                self._index += 1
                self._phase = 0
                if self._index == 64:
                    self._mode = _FUNC_CMD
        elif mode == _SEND:
            self._next_tx_bit()  # a write-1 slot is a read slot; a write-0 drowns the bit

    def ow_read_bit(self):
        mode = self._mode
        if mode == _SEND:
            return self._next_tx_bit()
        if mode == _SEARCH:
            if self._phase == 2:
                self.ow_write_bit(1)  # a read slot is a write-1 slot: direction 1
                return 1
            bit = self._rom_bit(self._index)
            self._phase += 1
            return bit if self._phase == 1 else bit ^ 1
        if mode == _BUSY:
            self._settle()
            return 1 if self._now() >= self._busy_until else 0
        if mode == _POWER:
            return 0 if self.parasite else 1
        if mode in (_ROM_CMD, _FUNC_CMD, _WRITE_SP, _MATCH):
            self.ow_write_bit(1)
        return 1

    # ---- commands --------------------------------------------------------------------------

    def _note(self, kind, byte):
        self.log.append((kind, byte))
        if len(self.log) > LOG_MAX:
            del self.log[: LOG_MAX // 2]

    def _on_byte(self, byte):
        mode = self._mode
        if mode == _ROM_CMD:
            self._note("rom", byte)
            self._rom_command(byte)
        elif mode == _FUNC_CMD:
            self._note("func", byte)
            self._function(byte)
        elif mode == _WRITE_SP:
            if self._index == 0:
                self.th = byte
            elif self._index == 1:
                self.tl = byte
            else:
                self.config = (byte & 0x60) | 0x1F
                self._mode = _IDLE
            self._index += 1

    def _rom_command(self, byte):
        self._index = self._phase = 0
        if byte == READ_ROM:
            self._send(self.rom, _FUNC_CMD)
        elif byte == MATCH_ROM:
            self._mode = _MATCH
        elif byte == SKIP_ROM:
            self._mode = _FUNC_CMD
        elif byte == SEARCH_ROM or (byte == ALARM_SEARCH and self._alarm()):
            self._mode = _SEARCH
        else:
            self._mode = _IDLE

    def _function(self, byte):
        self._index = 0
        if byte == CONVERT_T:
            self._start_conversion()
        elif byte == WRITE_SCRATCHPAD:
            self._mode = _WRITE_SP
        elif byte == READ_SCRATCHPAD:
            self._send(self.scratchpad(), _IDLE)
        elif byte == COPY_SCRATCHPAD:
            self.eeprom = [self.th, self.tl, self.config]
            self._busy(self._now() + COPY_S)
        elif byte == RECALL_E2:
            self.th, self.tl, self.config = self.eeprom
            self._busy(self._now())
        elif byte == READ_POWER_SUPPLY:
            self._mode = _POWER
        else:
            self._mode = _IDLE
