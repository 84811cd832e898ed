# The emulated `onewire` module: the platform's 1-Wire bus class, as the ESP32 and RP2 ports
# provide it (onewire.OneWire(pin)), driving the chip models on that pin at the bit level
# (boards/emulated/buses.py, world.json "onewire"). The line is open drain with a pull-up:
# a read slot reads 0 if any chip pulls it low (wired AND), 1 if none does or none is there.
#
#   ow = OneWire(Pin(4))        the pin becomes open drain with pull-up
#   ow.reset(required=False)    reset pulse; True if a chip answered with a presence pulse
#                               (required=True: OneWireError when none did)
#   ow.readbit() -> 0|1         ow.writebit(value)
#   ow.readbyte() -> int        ow.writebyte(value)          (bits LSB first)
#   ow.readinto(buf)            ow.write(buf)
#   ow.select_rom(rom)          reset + MATCH ROM + the 8 ROM bytes
#   ow.scan() -> [bytearray]    every ROM on the line (SEARCH ROM), CRC-checked
#   crc8(data) / ow.crc8(data)  Dallas/Maxim CRC-8; 0 for a block followed by its CRC
#
# Runs under MicroPython and CPython.
import emu
from devices import crc8 as _crc8

MAX_DEVICES = 64  # scan() stops there: a line with more is beyond any real bus


class OneWireError(Exception):
    pass


def crc8(data):
    return _crc8(data)


class OneWire:
    SEARCH_ROM = 0xF0
    MATCH_ROM = 0x55
    SKIP_ROM = 0xCC

    def __init__(self, pin):
        self.pin = pin
        pin.init(pin.OPEN_DRAIN, pin.PULL_UP, value=1)  # released: the pull-up holds it high
        self._pin_id = pin.id

    def _chips(self):
        return emu.get().buses.onewire_devices(self._pin_id)

    def reset(self, required=False):
        emu.get().poll()
        presence = False
        for chip in self._chips():
            if chip.ow_reset():
                presence = True
        if required and not presence:
            raise OneWireError("no presence pulse on the 1-Wire bus")
        return presence

    def readbit(self):
        bit = 1
        for chip in self._chips():
            bit &= chip.ow_read_bit()
        return bit

    def writebit(self, value):
        for chip in self._chips():
            chip.ow_write_bit(1 if value else 0)

    def readbyte(self):
        value = 0
        for i in range(8):
            value |= self.readbit() << i
        return value

    def writebyte(self, value):
        for i in range(8):
            self.writebit((value >> i) & 1)

    def readinto(self, buf):
        for i in range(len(buf)):
            buf[i] = self.readbyte()

    def write(self, buf):
        for byte in buf:
            self.writebyte(byte)

    def select_rom(self, rom):
        self.reset()
        self.writebyte(self.MATCH_ROM)
        self.write(rom)

    def scan(self):
        """Every ROM on the line, by the SEARCH ROM binary-tree walk."""
        roms = []
        rom = bytearray(8)
        last_fork = -1
        for _ in range(MAX_DEVICES):
            if not self.reset():
                break
            self.writebyte(self.SEARCH_ROM)
            fork = -1
            for i in range(64):
                bit, complement = self.readbit(), self.readbit()
                if bit and complement:
                    return roms  # nobody answered: a chip left the bus mid-search
                if bit == complement:  # chips disagree here: 0 first, 1 on a later pass
                    bit = 1 if i == last_fork else 0 if i > last_fork else \
                        (rom[i >> 3] >> (i & 7)) & 1
                    if not bit:
                        fork = i
                rom[i >> 3] = (rom[i >> 3] & ~(1 << (i & 7))) | (bit << (i & 7))
                self.writebit(bit)
            if crc8(rom) == 0:
                roms.append(bytearray(rom))
            last_fork = fork
            if fork < 0:
                break
        return roms

    def crc8(self, data):
        return crc8(data)
