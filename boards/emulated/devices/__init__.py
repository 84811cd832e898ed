# Models of the chips on the emulated board's buses, one module per chip model:
# boards/emulated/devices/<model>.py defines `Device(world, address)`.
#
#   I2C chips (address: the 7-bit address, an int) implement
#       i2c_write(data: bytes) -> None      one write transfer (register pointer + data)
#       i2c_read(n: int) -> bytes           one read transfer of n bytes
#   and may raise OSError(errno.EIO) for a NACK (e.g. read before a conversion finished).
#   1-Wire chips (address: the 8-byte ROM, family code first, CRC last) implement
#       ow_reset() -> bool                  reset pulse; True: presence pulse
#       ow_write_bit(bit: int) -> None      a write slot (a read slot is a write-1 slot too)
#       ow_read_bit() -> int                a read slot: 0 if the chip pulls the line low, else 1
#
# make_device() sets `device.name` (the name world.fault() knows it by) after construction and
# passes the rest of the world.json entry to `device.configure(options)` if the model has one.
# A chip whose fault is "absent" is handled by the bus (ENODEV / no presence pulse); when it
# comes back the bus calls `device.power_on()` if the model has one, else builds it anew.
# Physical quantities come from world.value(name), time from world.now_s() (seconds), injected
# faults from world.fault(self.name): None, "crc", "stuck" or "noise".
#
# normalize() checks and completes the world.json device lists (the launcher runs it too).
# Runs under MicroPython and CPython.
import os

MODEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
NAME_CHARS = MODEL_CHARS + "-"
ONEWIRE_FAMILIES = {"ds18b20": 0x28}


def sensirion_crc8(data):
    """Sensirion CRC-8 (polynomial 0x31, init 0xFF) as the SHT4x and SGP40 append it to every
    16-bit word. The chip models keep their own copy of the checksums, apart from the
    drivers', so a driver bug cannot hide behind shared code."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def crc8(data):
    """Dallas/Maxim CRC-8 (x^8 + x^5 + x^4 + 1, bits LSB first, init 0) as 1-Wire chips compute
    it over ROMs and scratchpads. A block followed by its own CRC gives 0."""
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C  # the polynomial 0x31, bit-reversed
            byte >>= 1
    return crc


def known_models():
    """Model names that have a module here."""
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    try:
        files = os.listdir(here)
    except OSError:
        return []
    return sorted(f[:-3] for f in files if f.endswith(".py") and not f.startswith("_"))


def _check_model(where, model):
    if not isinstance(model, str) or not model or any(ch not in MODEL_CHARS for ch in model):
        raise ValueError("%s.model: must be a chip model name like \"sht4x\", got %r"
                         % (where, model))
    known = known_models()
    if known and model not in known:
        raise ValueError("%s.model: %r is unknown: there is no boards/emulated/devices/%s.py; "
                         "known models: %s" % (where, model, model, ", ".join(known)))
    return model


def make_device(model, world, address, name, options=None):
    """Build the model's Device(world, address), named `name` (see above)."""
    _check_model(name, model)
    module = __import__("devices." + model, None, None, ("Device",))
    device = module.Device(world, address)
    device.name = name
    if options and hasattr(device, "configure"):
        device.configure(options)
    return device


def _name(where, entry, default, seen):
    name = entry.get("name", default)
    if not isinstance(name, str) or not name or any(ch not in NAME_CHARS for ch in name):
        raise ValueError("%s.name: must be a name of a-z, 0-9, '_' or '-', got %r" % (where, name))
    if name in seen:
        raise ValueError("%s.name: %r is already used by %s; give each device its own name"
                         % (where, name, seen[name]))
    seen[name] = where
    return name


def parse_rom(where, text, family, model="1-Wire chip"):
    """A ROM from hex text, family code first: 16 digits (CRC checked) or 14 (CRC appended)."""
    try:
        rom = bytes.fromhex(text)
    except (TypeError, ValueError):
        rom = b""
    if len(rom) not in (7, 8):
        raise ValueError("%s.rom: must be 14 or 16 hex digits, family code first (e.g. "
                         "\"28ff4c3a05000017\"), got %r" % (where, text))
    if len(rom) == 7:
        rom += bytes([crc8(rom)])
    if crc8(rom[:7]) != rom[7]:
        raise ValueError("%s.rom: its last byte must be the CRC-8 of the first 7, 0x%02x; got "
                         "0x%02x" % (where, crc8(rom[:7]), rom[7]))
    if rom[0] != family:
        raise ValueError("%s.rom: a %s's family code is 0x%02x, this ROM starts with 0x%02x"
                         % (where, model, family, rom[0]))
    return rom


def _serial(name):
    """Six serial bytes derived from a device name: stable, different per name."""
    text = name.encode()
    return bytes(crc8(text + bytes([i])) for i in range(6))


def normalize(i2c_devices, onewire):
    """Check the world.json device lists and fill defaults; returns (i2c, onewire, names).

    i2c_devices: [{"model", "address": 8..119, "name": model, "bus": 0}]
    onewire: [{"model": "ds18b20", "rom": hex, "name": "ds18b20_<k>", "probe": k, "pin": null,
               "parasite": false}]   (k: position in the list, from 1)
    Raises ValueError naming the entry, the field and the fix."""
    seen = {}
    i2c = []
    if not isinstance(i2c_devices or [], list):
        raise ValueError('i2c_devices: must be a list like [{"model": "sht4x", "address": 68}]')
    taken = {}
    for index, entry in enumerate(i2c_devices or []):
        where = "i2c_devices[%d]" % index
        if not isinstance(entry, dict):
            raise ValueError('%s: must be an object like {"model": "sht4x", "address": 68}'
                             % where)
        model = _check_model(where, entry.get("model"))
        address, bus = entry.get("address"), entry.get("bus", 0)
        if not isinstance(address, int) or isinstance(address, bool) or not 8 <= address <= 119:
            raise ValueError("%s.address: must be a 7-bit I2C address 8..119, got %r"
                             % (where, address))
        if bus not in (0, 1):
            raise ValueError("%s.bus: must be 0 or 1 (I2C(0), I2C(1)), got %r" % (where, bus))
        if (bus, address) in taken:
            raise ValueError("%s.address: 0x%02x on bus %d is already used by %s"
                             % (where, address, bus, taken[(bus, address)]))
        taken[(bus, address)] = where
        default = model if model not in seen else "%s_%d" % (model, index + 1)
        out = dict(entry)
        out.update({"model": model, "address": address, "bus": bus,
                    "name": _name(where, entry, default, seen)})
        i2c.append(out)
    if not isinstance(onewire or [], list):
        raise ValueError('onewire: must be a list like [{"model": "ds18b20", "probe": 1}]')
    wire = []
    roms = {}
    for index, entry in enumerate(onewire or []):
        where = "onewire[%d]" % index
        if not isinstance(entry, dict):
            raise ValueError('%s: must be an object like {"model": "ds18b20", "probe": 1}' % where)
        model = _check_model(where, entry.get("model", "ds18b20"))
        if model not in ONEWIRE_FAMILIES:
            raise ValueError("%s.model: %r is not a 1-Wire chip; use one of %s"
                             % (where, model, ", ".join(sorted(ONEWIRE_FAMILIES))))
        name = _name(where, entry, "%s_%d" % (model, index + 1), seen)
        family = ONEWIRE_FAMILIES[model]
        rom = entry.get("rom")
        if rom is None:
            rom = bytes([family]) + _serial(name)
            rom += bytes([crc8(rom)])
        else:
            rom = parse_rom(where, rom, family, model)
        if rom in roms:
            raise ValueError("%s.rom: %s is already the ROM of %s; every 1-Wire chip has its own"
                             % (where, rom.hex(), roms[rom]))
        roms[rom] = where
        probe = entry.get("probe", index + 1)
        if not isinstance(probe, int) or isinstance(probe, bool) or not 1 <= probe <= 8:
            raise ValueError("%s.probe: must be the soil probe number 1..8 (which "
                             "soil_temperature_c_<n> it measures), got %r" % (where, probe))
        pin = entry.get("pin")
        if pin is not None and (isinstance(pin, bool) or not isinstance(pin, (int, str))):
            raise ValueError("%s.pin: must be a GPIO number (default: the wiring's onewire pin), "
                             "got %r" % (where, pin))
        out = dict(entry)
        out.update({"model": model, "name": name, "rom": "".join("%02x" % b for b in rom),
                    "probe": probe, "pin": pin, "parasite": bool(entry.get("parasite", False))})
        wire.append(out)
    return i2c, wire, sorted(seen)
