# The simulated world around an emulated node: soil that dries and is watered, the probe
# that measures it, and the Wi-Fi it connects through.
#
# Simulated, not scripted: soil moisture falls by evaporation and rises while the pump relay
# is energized; the capacitive probe's ADC reading is a linear function of moisture plus
# noise. The world is stepped lazily: every observation or actuator change first advances it
# by the elapsed clock time (times `time_scale`). The model is piecewise linear, so lazy
# stepping is exact. Wiring (which pin drives or reads what) comes from the launcher.
#
# Runs under MicroPython and CPython: no typing at runtime, no dataclasses.
import random

# name: (default, kind, low, high, unit)   kind is "num", "bool" or "str"
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
}

# Wiring roles that are outputs of the board, and the actuator name each reports as.
ACTUATORS = {"pump_relay": "pump", "status_led": "status_led"}
INPUT_ROLES = ("soil_probe",)


def check_condition(name, value):
    """Return the value if it is valid for condition `name`, else raise ValueError naming it."""
    spec = CONDITIONS.get(name)
    if spec is None:
        raise ValueError("world condition %r is unknown; known: %s"
                         % (name, ", ".join(sorted(CONDITIONS))))
    kind, low, high = spec[1], spec[2], spec[3]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("world condition %s: must be true or false, got %r" % (name, value))
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError("world condition %s: must be text, got %r" % (name, value))
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError("world condition %s: must be a number in %s..%s (%s), got %r"
                         % (name, low, high, spec[4], value))
    return value


def normalize_wiring(wiring):
    """{"pump_relay": 26} or {"pump_relay": {"pin": 26, "active_low": true}} -> the long form."""
    out = {}
    for role, entry in (wiring or {}).items():
        if not isinstance(entry, dict):
            entry = {"pin": entry}
        if "pin" not in entry:
            raise ValueError("wiring.%s: needs a pin" % role)
        if role not in ACTUATORS and role not in INPUT_ROLES:
            raise ValueError("wiring.%s: unknown role; known: %s"
                             % (role, ", ".join(sorted(list(ACTUATORS) + list(INPUT_ROLES)))))
        out[role] = {"pin": entry["pin"], "active_low": bool(entry.get("active_low", False))}
    return out


class World:
    """The physical world of one node. Times are seconds on the emulator's clock."""

    def __init__(self, wiring=None, conditions=None, now_s=0.0):
        self.wiring = normalize_wiring(wiring)
        self.conditions = {}
        for name in CONDITIONS:
            self.conditions[name] = CONDITIONS[name][0]
        self.t_s = now_s
        self.sim_s = 0.0
        self.changed_s = {}
        self._levels = {}
        self._by_pin = {}
        for role in self.wiring:
            self._by_pin[self.wiring[role]["pin"]] = role
        self.set(conditions or {}, now_s)

    # ---- conditions and time ----------------------------------------------------------

    def set(self, changes, now_s):
        """Apply {condition: value}; all are checked before any is applied."""
        for name in changes:
            check_condition(name, changes[name])
        self.step(now_s)
        for name in changes:
            value = changes[name]
            if name == "soil_moisture":
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

    @property
    def soil_moisture(self):
        return self.conditions["soil_moisture"]

    # ---- wiring: outputs ---------------------------------------------------------------

    def role_of(self, pin):
        return self._by_pin.get(pin)

    def pin_driven(self, pin, level, now_s):
        """The board drives `pin` to 0/1, or releases it (None). Returns True for an actuator."""
        self.step(now_s)
        self._levels[pin] = level
        return self._by_pin.get(pin) in ACTUATORS

    def is_on(self, role):
        """An actuator is on only while its pin is driven to the active level."""
        entry = self.wiring.get(role)
        if entry is None:
            return False
        level = self._levels.get(entry["pin"])
        if level is None:
            return False  # released / high impedance: the module's pull keeps it off
        return level == (0 if entry["active_low"] else 1)

    def actuators(self):
        out = {}
        for role in self.wiring:
            if role in ACTUATORS:
                out[ACTUATORS[role]] = self.is_on(role)
        return out

    # ---- wiring: inputs ----------------------------------------------------------------

    def probe_raw(self):
        """Noiseless probe reading (ADC u16, 11 dB range) for the current moisture."""
        c = self.conditions
        dry, wet = c["probe_dry_raw"], c["probe_wet_raw"]
        return dry + (wet - dry) * c["soil_moisture"] / 100.0

    def adc_raw(self, pin, now_s):
        """What an ADC on `pin` reads (u16), or None when nothing drives the pin."""
        entry = self.wiring.get("soil_probe")
        if entry is None or entry["pin"] != pin or not self.conditions["soil_probe_connected"]:
            return None
        self.step(now_s)
        noise = self.conditions["adc_noise_raw"]
        raw = self.probe_raw()
        if noise:
            raw += random.uniform(-noise, noise)
        return min(65535, max(0, int(raw + 0.5)))

    def input_level(self, pin):
        """Level an external circuit drives on an input pin, or None (nothing does yet)."""
        return None

    # ---- reporting ---------------------------------------------------------------------

    def snapshot(self):
        out = {"sim_s": round(self.sim_s, 3), "probe_raw": int(self.probe_raw() + 0.5)}
        for name in self.conditions:
            out[name] = self.conditions[name]
        out["soil_moisture"] = round(self.conditions["soil_moisture"], 3)
        return out


def floating_raw():
    """An ADC on a pin nothing drives: it picks up whatever couples in, anywhere in range."""
    return random.getrandbits(16)


def floating_level():
    return random.getrandbits(1)
