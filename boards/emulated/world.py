# The simulated world around an emulated node: soil that dries and is watered, the air and
# soil temperatures, aroma from the drone's diffusers, their tanks, and the Wi-Fi.
#
# Simulated, not scripted: soil moisture falls by evaporation and rises while the pump relay
# is energized; the capacitive probe's ADC reading is a linear function of moisture plus
# noise. Air/soil temperature: world_air.py; aroma, tanks, float switches and the MQ-135:
# world_drone.py. The world is stepped lazily: every observation or actuator change first
# advances it by the elapsed clock time (times `time_scale`); each part has a closed-form
# solution between changes, so lazy stepping is exact. Wiring (which pin drives or reads
# what) comes from the launcher. Every condition, its unit and default: boards/emulated/README.md.
#
# Device models (boards/emulated/devices/) read the world through value(name), now_s() and
# fault(device_name); the buses they sit on are boards/emulated/buses.py.
#
# Runs under MicroPython and CPython: no typing at runtime, no dataclasses.
import random

import world_air
import world_drone

# name: (default, kind, low, high, unit)   kind is "num", "int", "bool", "str" or "faults"
CONDITIONS = {
    "soil_moisture": (55.0, "num", 0, 100, "%"),
    "evaporation_pct_per_s": (0.01, "num", 0, 100, "%/s"),
    "pump_flow_pct_per_s": (0.5, "num", 0, 100, "%/s while the pump runs"),
    "probe_dry_raw": (50000, "num", 0, 65535, "ADC u16 at 0 % (dry soil)"),
    "probe_wet_raw": (24000, "num", 0, 65535, "ADC u16 at 100 % (saturated soil)"),
    "adc_noise_raw": (100, "num", 0, 65535, "ADC u16, +/- uniform"),
    "soil_probe_connected": (True, "bool", 0, 0, "false: the probe pin floats"),
    "time_scale": (1.0, "num", 0, 1000000, "simulated s per real s"),
    "wifi_available": (True, "bool", 0, 0, "false: no access point in range"),
    "wifi_ssid": ("", "str", 0, 0, "SSID of the access point; empty accepts any"),
    "wifi_key": ("", "str", 0, 0, "its key; empty accepts any"),
    "wifi_connect_ms": (200, "num", 0, 600000, "ms from connect() to an IP"),
    "wifi_rssi_dbm": (-60, "num", -120, 0, "dBm"),
    "faults": ({}, "faults", 0, 0, "{device name: absent|crc|stuck|noise|null}, merged"),
    # A firmware hang (stuck in a driver, a flash fault): the CPU stops at this uptime, every
    # boot, until only the watchdog (or a power cut) gets the board going again.
    "hang_after_s": (0, "num", 0, 86400, "s of uptime the CPU hangs at, every boot; 0: never"),
}
CONDITIONS.update(world_air.CONDITIONS)
CONDITIONS.update(world_drone.CONDITIONS)
STATE = ("soil_moisture",) + world_air.STATE + world_drone.STATE
FAULTS = ("absent", "crc", "stuck", "noise")

# Wiring roles that are outputs of the board, and the actuator name each reports as.
ACTUATORS = {"pump_relay": "pump", "status_led": "status_led"}
DIFFUSER_ROLES = tuple("diffuser_%d" % n for n in range(1, world_drone.DIFFUSERS + 1))
TANK_SWITCH_ROLES = tuple("tank_switch_%d" % n for n in range(1, world_drone.TANKS + 1))
INPUT_ROLES = ("soil_probe", "mq135", world_drone.ARM_ROLE) + TANK_SWITCH_ROLES
# Pins of the buses: I2C bus 0 and 1, the 1-Wire bus (devices: boards/emulated/buses.py).
BUS_ROLES = ("i2c_sda", "i2c_scl", "i2c1_sda", "i2c1_scl", "onewire")
ROLES = tuple(ACTUATORS) + DIFFUSER_ROLES + INPUT_ROLES + BUS_ROLES
# Float and arm switches are usually wired switch-to-GND with a pull-up: active low unless told.
_ACTIVE_LOW_DEFAULT = TANK_SWITCH_ROLES + (world_drone.ARM_ROLE,)

VALUE_NAMES = ("air_temperature_c", "air_humidity_pct", "pressure_hpa", "voc_ppb",
               "soil_temperature_c", "soil_temperature_c_<n>")


def _check_faults(value, device_names):
    if not isinstance(value, dict):
        raise ValueError('world condition faults: must be an object like {"sht4x": "crc"}, got %r'
                         % (value,))
    for name in value:
        fault = value[name]
        if fault not in FAULTS and fault not in (None, ""):
            raise ValueError("world condition faults: %s: %r is not a fault; use one of %s, or "
                             "null to clear it" % (name, fault, ", ".join(FAULTS)))
        if device_names is not None and name not in device_names:
            raise ValueError("world condition faults: no device named %r on this board; devices: "
                             "%s" % (name, ", ".join(sorted(device_names)) or "none"))
    return value


def check_condition(name, value, device_names=None):
    """Return the value if it is valid for condition `name`, else raise ValueError naming it.

    device_names: the board's device names, to check the keys of "faults" (None: any)."""
    spec = CONDITIONS.get(name)
    if spec is None:
        raise ValueError("world condition %r is unknown; known: %s"
                         % (name, ", ".join(sorted(CONDITIONS))))
    kind, low, high = spec[1], spec[2], spec[3]
    if kind == "faults":
        return _check_faults(value, device_names)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("world condition %s: must be true or false, got %r" % (name, value))
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError("world condition %s: must be text, got %r" % (name, value))
        return value
    if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)
                          or not low <= value <= high):
        raise ValueError("world condition %s: must be a whole number in %s..%s (%s), got %r"
                         % (name, low, high, spec[4], value))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError("world condition %s: must be a number in %s..%s (%s), got %r"
                         % (name, low, high, spec[4], value))
    return value


def normalize_wiring(wiring):
    """{"pump_relay": 26} or {"pump_relay": {"pin": 26, "active_low": true}} -> the long form."""
    out = {}
    for role in wiring or {}:
        entry = wiring[role]
        if not isinstance(entry, dict):
            entry = {"pin": entry}
        if "pin" not in entry:
            raise ValueError("wiring.%s: needs a pin" % role)
        if role not in ROLES:
            raise ValueError("wiring.%s: unknown role; known: %s"
                             % (role, ", ".join(sorted(ROLES))))
        active_low = entry.get("active_low", role in _ACTIVE_LOW_DEFAULT)
        out[role] = {"pin": entry["pin"], "active_low": bool(active_low)}
    return out


class World:
    """The physical world of one node. Times are seconds on the emulator's clock."""

    # Chip models add their datasheet repeatability to every measurement in this world, as
    # real chips do (a bare test world leaves it out so conversions can be checked exactly).
    measurement_noise = True

    def __init__(self, wiring=None, conditions=None, now_s=0.0):
        self.wiring = normalize_wiring(wiring)
        self.conditions = {}
        for name in CONDITIONS:
            default = CONDITIONS[name][0]
            self.conditions[name] = dict(default) if isinstance(default, dict) else default
        self.t_s = now_s
        self.sim_s = 0.0
        self.changed_s = {}
        self.clock = None  # callable -> emulator seconds; set by the emulation (emu.py)
        self.device_names = None  # names fault() may be asked about; None: not checked
        self._levels = {}
        self._duty = {}
        self._by_pin = {}
        for role in self.wiring:
            self._by_pin[self.wiring[role]["pin"]] = role
        self.set(conditions or {}, now_s)

    # ---- conditions and time ----------------------------------------------------------

    def set(self, changes, now_s):
        """Apply {condition: value}; all are checked before any is applied. "faults" merges
        into the current faults (a null or "" value clears that device's fault)."""
        for name in changes:
            check_condition(name, changes[name], self.device_names)
        self.step(now_s)
        for name in changes:
            value = changes[name]
            if name == "faults":
                merged = dict(self.conditions["faults"])
                for device in value:
                    if value[device]:
                        merged[device] = value[device]
                    else:
                        merged.pop(device, None)
                value = merged
            elif name in STATE:
                value = float(value)
            self.conditions[name] = value
            self.changed_s[name] = now_s

    def step(self, now_s):
        dt = now_s - self.t_s
        if dt <= 0:
            return
        self.t_s = now_s
        c = self.conditions
        sim = dt * c["time_scale"]
        self.sim_s += sim
        rate = -c["evaporation_pct_per_s"]
        if self.is_on("pump_relay"):
            rate += c["pump_flow_pct_per_s"]
        moisture = c["soil_moisture"] + rate * sim
        c["soil_moisture"] = min(100.0, max(0.0, moisture))
        world_air.step(c, sim)
        world_drone.step(self, sim)

    def now_s(self):
        """The emulator's clock in seconds (real time: chips' conversion times use it)."""
        return self.clock() if self.clock is not None else self.t_s

    def value(self, name):
        """A physical quantity now, for device models: see VALUE_NAMES."""
        self.step(self.now_s())
        c = self.conditions
        if name in ("air_temperature_c", "air_humidity_pct", "pressure_hpa", "voc_ppb",
                    "soil_temperature_c"):
            return c[name]
        if name.startswith("soil_temperature_c_"):
            probe = name[len("soil_temperature_c_"):]
            if probe.isdigit() and 1 <= int(probe) <= world_air.MAX_PROBES:
                return world_air.soil_temperature(c, int(probe))
        raise ValueError("world value %r is unknown; known: %s (n = 1..%d)"
                         % (name, ", ".join(VALUE_NAMES), world_air.MAX_PROBES))

    def fault(self, device_name):
        """The fault injected into that device: None, "absent", "crc", "stuck" or "noise"."""
        return self.conditions["faults"].get(device_name)

    def power_cut(self):
        """The board lost power: the MQ-135 heater starts cold again."""
        self.conditions["mq135_heated_s"] = 0.0

    @property
    def soil_moisture(self):
        return self.conditions["soil_moisture"]

    # ---- wiring: outputs ---------------------------------------------------------------

    def role_of(self, pin):
        return self._by_pin.get(pin)

    def pin_driven(self, pin, level, now_s, duty=None):
        """The board drives `pin` to 0/1, "pwm" at `duty` (0..1, high fraction), or releases it
        (None). Returns True for an actuator."""
        self.step(now_s)
        self._levels[pin] = level
        self._duty[pin] = duty
        role = self._by_pin.get(pin)
        return role in ACTUATORS or role in DIFFUSER_ROLES

    def duty(self, role):
        """Fraction of time an output is at its active level (0..1); 0 when not wired."""
        entry = self.wiring.get(role)
        if entry is None:
            return 0.0
        level = self._levels.get(entry["pin"])
        if level == "pwm":
            high = self._duty.get(entry["pin"]) or 0.0
            return 1.0 - high if entry["active_low"] else high
        if level is None:
            return 0.0  # released / high impedance: the module's pull keeps it off
        return 1.0 if level == (0 if entry["active_low"] else 1) else 0.0

    def is_on(self, role):
        """An actuator is on while its pin is at the active level (PWM: any duty above 0)."""
        return self.duty(role) > 0

    def actuators(self):
        """{"pump": bool, "status_led": bool, "diffuser_1": duty %, ...} for wired roles."""
        out = {}
        for role in self.wiring:
            if role in ACTUATORS:
                out[ACTUATORS[role]] = self.is_on(role)
            elif role in DIFFUSER_ROLES:
                out[role] = round(self.duty(role) * 100, 2)
        return out

    # ---- wiring: inputs ----------------------------------------------------------------

    def probe_raw(self):
        """Noiseless probe reading (ADC u16, 11 dB range) for the current moisture."""
        c = self.conditions
        dry, wet = c["probe_dry_raw"], c["probe_wet_raw"]
        return dry + (wet - dry) * c["soil_moisture"] / 100.0

    def adc_raw(self, pin, now_s):
        """What an ADC on `pin` reads (u16), or None when nothing drives the pin."""
        role = self._by_pin.get(pin)
        if role == "soil_probe":
            if not self.conditions["soil_probe_connected"]:
                return None
            self.step(now_s)
            raw = self.probe_raw()
        elif role == "mq135":
            self.step(now_s)
            raw = world_drone.mq135(self.conditions)["raw"]
        else:
            return None
        noise = self.conditions["adc_noise_raw"]
        if noise:
            raw += random.uniform(-noise, noise)
        return min(65535, max(0, int(raw + 0.5)))

    def input_level(self, pin, now_s=None):
        """Level an external circuit drives on an input pin, or None (nothing drives it: the
        pull decides). A closed float switch pulls its pin to its active level."""
        role = self._by_pin.get(pin)
        if role == world_drone.ARM_ROLE:
            closed = world_drone.arm_closed(self.conditions)
        elif role in TANK_SWITCH_ROLES:
            if now_s is not None:
                self.step(now_s)
            closed = world_drone.switch_closed(self.conditions,
                                               int(role[len("tank_switch_"):]))
        else:
            return None
        if not closed:
            return None
        return 0 if self.wiring[role]["active_low"] else 1

    # ---- reporting ---------------------------------------------------------------------

    def snapshot(self):
        c = self.conditions
        out = {"sim_s": round(self.sim_s, 3), "probe_raw": int(self.probe_raw() + 0.5)}
        for name in c:
            out[name] = c[name]
        for name in STATE:
            out[name] = round(c[name], 3)
        if "mq135" in self.wiring:
            front = world_drone.mq135(c)
            out["mq135_rs_kohm"] = round(front["rs_kohm"], 3)
            out["mq135_raw"] = int(front["raw"] + 0.5)
        for role in TANK_SWITCH_ROLES:
            if role in self.wiring:
                n = int(role[len("tank_switch_"):])
                out["tank_switch_closed_%d" % n] = c["tank_level_ml_%d" % n] >= \
                    c["tank_switch_threshold_ml_%d" % n]
        return out


def floating_raw():
    """An ADC on a pin nothing drives: it picks up whatever couples in, anywhere in range."""
    return random.getrandbits(16)


def floating_level():
    return random.getrandbits(1)
