# The chips on the emulated board's buses, built from world.json's "i2c_devices" and
# "onewire" lists (formats: boards/emulated/README.md; models: boards/emulated/devices/).
#
# I2C: bus 0 and bus 1, each {address: device}. A bus is reached by machine.I2C(id) or, for
# SoftI2C (id -1), by its pins; when the wiring names the bus's pins (i2c_sda/i2c_scl,
# i2c1_sda/i2c1_scl) a bus built on other pins reaches no chip, as on a board.
# 1-Wire: the chips on the wiring's "onewire" pin (or an entry's own "pin"; with neither, on
# any pin a OneWire is built on).
# A chip whose world fault is "absent" is not on its bus; when the fault is cleared it is
# powered up again (device.power_on(), else a new Device), like a reconnected chip.
#
# Runs under MicroPython and CPython.
import devices


class _Slot:
    """One chip: its model, address, name and whether it was absent when last looked at."""

    def __init__(self, model, address, name, options, device):
        self.model = model
        self.address = address
        self.name = name
        self.options = options
        self.device = device
        self.absent = False


class Buses:
    def __init__(self, world, i2c_devices=None, onewire=None):
        self.world = world
        i2c, wire, names = devices.normalize(i2c_devices, onewire)
        self.names = names
        self.i2c = {0: {}, 1: {}}  # bus -> {address: device}; tests may add models directly
        self._slots = {}  # id(device) -> _Slot, for power cycling
        for entry in i2c:
            device = devices.make_device(entry["model"], world, entry["address"], entry["name"],
                                         entry)
            self.i2c[entry["bus"]][entry["address"]] = device
            self._slots[id(device)] = _Slot(entry["model"], entry["address"], entry["name"],
                                            entry, device)
        default_pin = (world.wiring.get("onewire") or {}).get("pin")
        self.onewire = []  # [(pin or None, slot)]
        for entry in wire:
            rom = bytes.fromhex(entry["rom"])
            device = devices.make_device(entry["model"], world, rom, entry["name"], entry)
            pin = entry["pin"] if entry["pin"] is not None else default_pin
            self.onewire.append((pin, _Slot(entry["model"], rom, entry["name"], entry, device)))

    def _present(self, slot):
        """The slot's device if it is on the bus now (powering it up when it came back)."""
        absent = self.world.fault(slot.name) == "absent"
        if slot.absent and not absent:
            if hasattr(slot.device, "power_on"):
                slot.device.power_on()
            else:
                slot.device = devices.make_device(slot.model, self.world, slot.address,
                                                  slot.name, slot.options)
        slot.absent = absent
        return None if absent else slot.device

    # ---- I2C -------------------------------------------------------------------------------

    def i2c_bus(self, bus_id, scl=None, sda=None):
        """Which bus (0, 1) machine.I2C(bus_id, scl=, sda=) reaches, or None: the chips sit on
        wires, so given pins decide (whatever the peripheral id) when the wiring names them."""
        wiring = self.world.wiring
        modelled = False
        for bus, scl_role, sda_role in ((0, "i2c_scl", "i2c_sda"), (1, "i2c1_scl", "i2c1_sda")):
            if scl_role in wiring and sda_role in wiring:
                modelled = True
                if (wiring[scl_role]["pin"], wiring[sda_role]["pin"]) == (scl, sda):
                    return bus
        if not modelled or (scl is None and sda is None):
            return bus_id if bus_id in (0, 1) else 0  # by id: default or unmodelled pins
        return None

    def i2c_device(self, bus, address):
        """The device answering at `address` on `bus`, or None (ENODEV)."""
        if bus is None:
            return None
        device = self.i2c[bus].get(address)
        if device is None:
            return None
        slot = self._slots.get(id(device))
        if slot is None:  # added directly by a test: no name, never absent
            return device
        present = self._present(slot)
        if present is not device and present is not None:
            self._slots.pop(id(device))
            self._slots[id(present)] = slot
            self.i2c[bus][address] = present
        return present

    def i2c_scan(self, bus):
        if bus is None:
            return []
        return sorted(a for a in list(self.i2c[bus]) if self.i2c_device(bus, a) is not None)

    # ---- 1-Wire ----------------------------------------------------------------------------

    def onewire_devices(self, pin):
        """The chips present on the 1-Wire line of `pin`."""
        out = []
        for wired_pin, slot in self.onewire:
            if wired_pin is None or wired_pin == pin:
                device = self._present(slot)
                if device is not None:
                    out.append(device)
        return out

    def device(self, name):
        """The model named `name` (tests inspect it), or None."""
        for _pin, slot in self.onewire:
            if slot.name == name:
                return slot.device
        for slot in self._slots.values():
            if slot.name == name:
                return slot.device
        return None
