# A fake machine.I2C bus and a fake world, to test a driver against its emulated chip model
# (boards/emulated/devices/<chip>.py) byte for byte, without the emulated board:
#
#     world = FakeWorld({"air_temperature_c": 21.5})
#     bus = FakeI2C({0x44: sht4x.Device(world, 0x44)})
#     sensor = SHT4x(bus, clock=world.ticks_ms)   # the driver's clock follows the world's
#     sensor.start_measurement(); world.advance(0.009); sensor.read_measurement()
#
# The bus fails like a real one: an address with no chip (or one marked absent) raises
# OSError(ENODEV); a chip's own NACKs (OSError EIO) pass through. Every transfer is logged.
# Runs under MicroPython (the hil tests import it there) and CPython: no typing, no f-string
# '=' debugging, no dataclasses.
import errno

DEFAULT_VALUES = {
    "air_temperature_c": 20.0,
    "air_humidity_pct": 50.0,
    "pressure_hpa": 1013.25,
    "voc_ppb": 100.0,
}


class FakeWorld:
    """world.value(name), world.now_s(), world.fault(device_name) for device models. Time is
    set by hand (advance) unless `clock` (a callable returning seconds) is given."""

    def __init__(self, values=None, clock=None):
        self.values = dict(DEFAULT_VALUES)
        self.values.update(values or {})
        self.faults = {}
        self.clock = clock
        self.t = 0.0

    def value(self, name):
        if name not in self.values:
            raise ValueError(f"world value {name!r} is unknown")
        return self.values[name]

    def set(self, **values):
        self.values.update(values)

    def now_s(self):
        return self.clock() if self.clock is not None else self.t

    def advance(self, seconds):
        self.t += seconds

    def ticks_ms(self):
        """A driver clock in ms that follows now_s() (floored, like a tick counter)."""
        return int(self.now_s() * 1000 + 1e-6) & 0x3FFFFFFF

    def fault(self, name):
        return self.faults.get(name)

    def inject(self, name, fault):
        """fault: "crc", "stuck", "noise" (device models), "absent" (FakeI2C), None clears."""
        if fault is None:
            self.faults.pop(name, None)
        else:
            self.faults[name] = fault


class FakeI2C:
    """machine.I2C's API over device models: {address: device}. A device whose name the
    world marks "absent" (when given a world) or whose address is not attached answers
    nothing: OSError(ENODEV)."""

    def __init__(self, devices=None, world=None):
        self.devices = dict(devices or {})
        self.world = world
        self.log = []  # (op, address, detail)

    def attach(self, address, device):
        self.devices[address] = device

    def detach(self, address):
        self.devices.pop(address, None)

    def _device(self, addr):
        device = self.devices.get(addr)
        if device is None or (self.world is not None
                               and self.world.fault(getattr(device, "name", "")) == "absent"):
            raise OSError(errno.ENODEV, "ENODEV")
        return device

    def scan(self):
        return sorted(a for a in self.devices
                      if self.world is None
                      or self.world.fault(getattr(self.devices[a], "name", "")) != "absent")

    def writeto(self, addr, buf, stop=True):
        data = bytes(buf)
        self.log.append(("write", addr, data))
        self._device(addr).i2c_write(data)
        return len(data)

    def readfrom(self, addr, nbytes, stop=True):
        data = bytes(self._device(addr).i2c_read(nbytes))
        if len(data) != nbytes:
            raise AssertionError(f"device at 0x{addr:02x} returned {len(data)} bytes "
                                 f"for a {nbytes}-byte read")
        self.log.append(("read", addr, data))
        return data

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf), stop)
        for i in range(len(buf)):
            buf[i] = data[i]

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        self.writeto(addr, memaddr.to_bytes(addrsize // 8, "big"), False)
        return self.readfrom(addr, nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        data = self.readfrom_mem(addr, memaddr, len(buf), addrsize)
        for i in range(len(buf)):
            buf[i] = data[i]

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self.writeto(addr, memaddr.to_bytes(addrsize // 8, "big") + bytes(buf))
