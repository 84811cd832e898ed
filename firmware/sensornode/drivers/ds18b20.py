# Maxim DS18B20 soil temperature probes, one or several on one 1-Wire pin.
#
# Our own 1-Wire protocol code over the platform's bus object (onewire.OneWire(pin) on the
# ESP32 and RP2 ports, boards/emulated/onewire.py on the emulated board); only its primitives
# are used: reset(), readbit(), writebit(), readbyte(), writebyte(), write(), readinto().
#
# Datasheet facts this driver relies on:
# - ROM: family code 0x28, 48-bit serial, CRC-8 of the first 7 bytes; all bytes LSB first.
# - SEARCH ROM 0xF0: per ROM bit every chip still taking part sends the bit, then its
#   complement; the master writes the direction it takes, chips with the other bit drop out.
#   (0, 1) / (1, 0): all agree; (0, 0): chips differ here; (1, 1): nobody answered.
# - MATCH ROM 0x55 + 8 ROM bytes selects one chip; SKIP ROM 0xCC addresses all of them (so one
#   CONVERT T starts every probe on the line at once).
# - CONVERT T 0x44; the conversion takes at most 93.75 / 187.5 / 375 / 750 ms at 9 / 10 / 11 /
#   12 bits. Reading before it ends gives the previous value, or +85 degC (0x0550) after
#   power-on - so this driver keeps its own deadline and treats 85.0 as "no conversion yet".
# - READ SCRATCHPAD 0xBE: T LSB, T MSB, TH, TL, config, 0xFF, reserved, 0x10, CRC-8 of the 8.
#   A line stuck low reads all zeros, which has a valid CRC: the fixed bits of config
#   (bit 7 = 0, bits 4..0 = 1) catch that; a missing chip reads all ones.
# - WRITE SCRATCHPAD 0x4E: TH, TL, config (resolution in bits 6:5, 9 + R bits); volatile until
#   COPY SCRATCHPAD 0x48 (10 ms) stores it in EEPROM. READ POWER SUPPLY 0xB4: 0 = parasite.
# - Temperature: two's complement in 1/16 degC; bits below the resolution are undefined.
# - CRC-8: x^8 + x^5 + x^4 + 1, LSB first (reflected 0x8C), init 0; a block followed by its
#   CRC gives 0.
#
# Probes are ordered by ROM (stable across boots and rescans) and reported as quantity,
# quantity_2, ... (soil_temperature, soil_temperature_2, ...).
import asyncio
import errno

from sensornode.compat import const, sleep_ms, ticks_add, ticks_diff, ticks_ms
from sensornode.drivers.errors import CRCError, NotReady, SensorError

try:
    from typing import Any, Callable, Dict, List, Optional, Tuple
except ImportError:
    pass

FAMILY_CODE = const(0x28)
POWER_ON_RAW = const(0x0550)  # +85 degC
MAX_PROBES = const(8)  # protocol.MAX_CHANNELS
RESOLUTIONS = (9, 10, 11, 12)
# Maximum conversion time per resolution, ms (rounded up from 93.75 / 187.5).
CONVERSION_MS = {9: 94, 10: 188, 11: 375, 12: 750}

_SEARCH_ROM = const(0xF0)
_ALARM_SEARCH = const(0xEC)
_MATCH_ROM = const(0x55)
_SKIP_ROM = const(0xCC)
_CONVERT_T = const(0x44)
_WRITE_SCRATCHPAD = const(0x4E)
_READ_SCRATCHPAD = const(0xBE)
_COPY_SCRATCHPAD = const(0x48)
_READ_POWER_SUPPLY = const(0xB4)
_COPY_MS = const(10)
_SEARCH_PASSES = const(32)  # one pass per chip found: bounds a search on a noisy line


def crc8(data: "Any") -> int:
    """Dallas/Maxim CRC-8 of `data` (bytes); 0 when the last byte is the CRC of the rest."""
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            byte >>= 1
    return crc


def decode_temperature(lsb: int, msb: int, resolution: int = 12) -> float:
    """degC from the temperature register, ignoring the bits below `resolution`."""
    raw = ((msb << 8) | lsb) & (0xFFFF ^ ((1 << (12 - resolution)) - 1))
    if raw & 0x8000:
        raw -= 0x10000
    return raw / 16


def resolution_of(config: int) -> int:
    return 9 + ((config >> 5) & 3)


def rom_hex(rom: "Any") -> str:
    return "".join("%02x" % b for b in rom)


def channel_key(quantity: str, index: int) -> str:
    """Reported name of probe `index` (0-based): quantity, quantity_2, quantity_3, ..."""
    return quantity if index == 0 else "%s_%d" % (quantity, index + 1)


def search_roms(ow: "Any", alarm_only: bool = False,
                passes: int = _SEARCH_PASSES) -> "List[bytes]":
    """Every ROM on the line, by SEARCH ROM (a binary-tree walk, one pass per chip); with
    `alarm_only`, by ALARM SEARCH: the chips whose last temperature is >= TH or <= TL.

    Raises OSError(ENODEV) when no chip answers the reset, CRCError for a ROM whose CRC is
    wrong (noise on the line)."""
    roms = []  # type: List[bytes]
    rom = bytearray(8)
    last_zero = -1  # deepest bit where the previous pass took the 0 branch of a fork
    for _ in range(passes):
        if not ow.reset():
            if roms:
                break  # the chips left mid-search; report those found
            raise OSError(errno.ENODEV, "no 1-Wire presence pulse: no probe on the line")
        ow.writebyte(_ALARM_SEARCH if alarm_only else _SEARCH_ROM)
        zero_at = -1
        for i in range(64):
            bit = ow.readbit()
            complement = ow.readbit()
            if bit and complement:
                if alarm_only and i == 0 and not roms:
                    return roms  # present, but none in alarm
                raise OSError(errno.EIO, "1-Wire search: no chip answered bit %d" % i)
            if bit == complement:  # a fork: chips differ in this bit
                # Before the last 0-turn: the previous path; at it: now 1; past it: 0 first.
                bit = (rom[i >> 3] >> (i & 7)) & 1 if i < last_zero else int(i == last_zero)
                if not bit:
                    zero_at = i
            mask = 1 << (i & 7)
            rom[i >> 3] = (rom[i >> 3] | mask) if bit else (rom[i >> 3] & ~mask & 0xFF)
            ow.writebit(bit)
        if crc8(rom):
            raise CRCError("1-Wire ROM %s fails its CRC" % rom_hex(rom))
        roms.append(bytes(rom))
        last_zero = zero_at
        if last_zero < 0:
            break
    return roms


class DS18B20:
    """The DS18B20 probes on one bus. `roms`: the probes to read (hex text or bytes), else
    found by scan() on first use; `resolution`: 9..12 bits, applied to every probe."""

    def __init__(self, ow: "Any", resolution: int = 12, roms: "Optional[List[Any]]" = None,
                 quantity: str = "soil_temperature",
                 clock: "Optional[Callable[[], int]]" = None) -> None:
        if resolution not in RESOLUTIONS:
            raise ValueError("resolution: must be 9, 10, 11 or 12 bits, got %r" % (resolution,))
        self._ow = ow
        self._resolution = resolution
        self._quantity = quantity
        self._clock = clock or ticks_ms
        self._roms = []  # type: List[bytes]
        self._configured = {}  # type: Dict[bytes, bool]
        self._ready_at = None  # type: Optional[int]
        if roms:
            self._set_roms([bytes.fromhex(r) if isinstance(r, str) else bytes(r) for r in roms])

    def _set_roms(self, roms: "List[bytes]") -> None:
        for rom in roms:
            if len(rom) != 8 or crc8(rom):
                raise CRCError("1-Wire ROM %s fails its CRC" % rom_hex(rom))
        probes = sorted(rom for rom in roms if rom[0] == FAMILY_CODE)
        if len(probes) > MAX_PROBES:
            raise ValueError("%d DS18B20 probes on one pin; at most %d are reported"
                             % (len(probes), MAX_PROBES))
        self._roms = probes
        self._configured = {}

    @property
    def roms(self) -> "List[bytes]":
        return list(self._roms)

    @property
    def resolution(self) -> int:
        return self._resolution

    @property
    def conversion_ms(self) -> int:
        return CONVERSION_MS[self._resolution]

    def keys(self) -> "List[str]":
        return [channel_key(self._quantity, i) for i in range(len(self._roms))]

    def scan(self) -> "List[bytes]":
        """Search the line; keeps the DS18B20s (family 0x28) in ROM order."""
        self._set_roms(search_roms(self._ow))
        if not self._roms:
            raise OSError(errno.ENODEV, "no DS18B20 (family 0x28) on the 1-Wire line")
        return self.roms

    # ---- bus transactions ------------------------------------------------------------------

    def _reset(self) -> None:
        if not self._ow.reset():
            raise OSError(errno.ENODEV, "no 1-Wire presence pulse: no probe on the line")

    def _select(self, rom: "Optional[bytes]") -> None:
        self._reset()
        if rom is None:
            self._ow.writebyte(_SKIP_ROM)
        else:
            self._ow.writebyte(_MATCH_ROM)
            self._ow.write(rom)

    def read_scratchpad(self, rom: bytes) -> bytes:
        """The probe's 9 scratchpad bytes, checked (CRC, fixed bits, presence)."""
        self._select(rom)
        self._ow.writebyte(_READ_SCRATCHPAD)
        data = bytearray(9)
        self._ow.readinto(data)
        if data == b"\xff" * 9:
            raise OSError(errno.ENODEV, "DS18B20 %s does not answer" % rom_hex(rom))
        if crc8(data):
            raise CRCError("DS18B20 %s: scratchpad %s fails its CRC" % (rom_hex(rom),
                                                                         rom_hex(data)))
        if data[4] & 0x9F != 0x1F:
            raise SensorError("DS18B20 %s: scratchpad %s is not a DS18B20's (line held low?)"
                              % (rom_hex(rom), rom_hex(data)))
        return bytes(data)

    def set_resolution(self, bits: int, persist: bool = False) -> None:
        """Write `bits` (9..12) into every probe's config, keeping TH/TL; `persist` also
        copies it to EEPROM so it survives the probe's power-up (blocks 10 ms per probe)."""
        if bits not in RESOLUTIONS:
            raise ValueError("resolution: must be 9, 10, 11 or 12 bits, got %r" % (bits,))
        self._resolution = bits
        self._configured = {}
        for rom in self._probes():
            self._configure(rom)
            if persist:
                self._select(rom)
                self._ow.writebyte(_COPY_SCRATCHPAD)
                sleep_ms(_COPY_MS)

    def _configure(self, rom: bytes) -> None:
        pad = self.read_scratchpad(rom)
        config = ((self._resolution - 9) << 5) | 0x1F
        if pad[4] != config:
            self._select(rom)
            self._ow.write(bytes((_WRITE_SCRATCHPAD, pad[2], pad[3], config)))
        self._configured[rom] = True

    def externally_powered(self) -> bool:
        """False if any probe on the line runs on parasite power (needs a strong pull-up)."""
        self._select(None)
        self._ow.writebyte(_READ_POWER_SUPPLY)
        return bool(self._ow.readbit())

    def _probes(self) -> "List[bytes]":
        if not self._roms:
            self.scan()
        return self._roms

    # ---- two-phase measurement ---------------------------------------------------------------

    def start_measurement(self) -> int:
        """Start a conversion on every probe at once; returns the ms to wait."""
        for rom in self._probes():
            if not self._configured.get(rom):
                try:
                    self._configure(rom)  # first use, or the probe reverted after a power cut
                except OSError:
                    pass  # that probe's reading will fail and say why; the others convert
        self._select(None)
        self._ow.writebyte(_CONVERT_T)
        wait = CONVERSION_MS[self._resolution]
        self._ready_at = ticks_add(self._clock(), wait)
        return wait

    def read_probe(self, rom: bytes) -> float:
        """One probe's last conversion in degC (no waiting, no new conversion)."""
        pad = self.read_scratchpad(rom)
        bits = resolution_of(pad[4])
        if bits != self._resolution:
            self._configured[rom] = False  # reverted (power cut): rewrite at the next start
        if pad[0] | (pad[1] << 8) == POWER_ON_RAW:
            self._configured[rom] = False
            raise NotReady("DS18B20 %s reads the +85 degC power-on value: no conversion "
                           "finished since it powered up" % rom_hex(rom))
        return decode_temperature(pad[0], pad[1], bits)

    def read_probes(self) -> "Tuple[Dict[str, float], Dict[str, Exception]]":
        """({key: degC}, {key: error}) for every probe: one bad probe spoils no other."""
        if self._ready_at is None:
            raise NotReady("no conversion started: call start_measurement() first")
        left = ticks_diff(self._ready_at, self._clock())
        if left > 0:
            raise NotReady("DS18B20 conversion still running for %d ms" % left)
        values = {}  # type: Dict[str, float]
        errors = {}  # type: Dict[str, Exception]
        for index, rom in enumerate(self._roms):
            key = channel_key(self._quantity, index)
            try:
                values[key] = self.read_probe(rom)
            except OSError as exc:  # SensorError, CRCError, NotReady are OSErrors too
                errors[key] = exc
                self._configured[rom] = False  # it may have lost power: configure it again
        self._ready_at = None  # each reading comes from its own conversion
        return values, errors

    def read_measurement(self) -> "Dict[str, float]":
        """{"soil_temperature": degC, "soil_temperature_2": ...}; raises the first probe's
        error if any probe failed (read_probes() gives the others)."""
        values, errors = self.read_probes()
        for key in self.keys():
            if key in errors:
                raise errors[key]
        return values

    async def read(self) -> "Dict[str, float]":
        wait_ms = self.start_measurement()
        await asyncio.sleep(wait_ms / 1000)
        return self.read_measurement()
