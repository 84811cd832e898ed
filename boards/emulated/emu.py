# The running emulation of one board: chip facts, pads (pin states and their history), the
# world model, and the control channel to the tests / demo that launched it.
#
# Control channel: the directory named by $NT_EMU_DIR (absent: in-process use, no files).
#   world.json   written by the launcher before start: {"chip": {...}, "wiring": {...},
#                "conditions": {...}, "i2c_devices": [...], "onewire": [...],
#                "unique_id": "hex", "node": "name"} (boards/emulated/README.md)
#   control.json replaced atomically by the launcher: {"rev": N, "changes": [{"rev": n,
#                "set": {condition: value}}, ...]}; each change with rev > the applied rev is
#                applied once, in order. Checked on hardware access, at most every 100 ms.
#   state.json   replaced atomically here on every pin change and at most every 0.5 s
#                otherwise: {"t_ms": uptime, "wall_s", "boot": n, "reset_cause": "power_on",
#                "control_rev", "control_error", "pins": {"26": {"mode": "out", "level": 1}},
#                "actuators": {"pump": false, ...}, "pump": false (each actuator also at the
#                top level), "world": {conditions..., "soil_moisture", "probe_raw", "sim_s"},
#                "wifi": {...} once network is used, "wdt": {...} once a WDT exists,
#                "devices": [names of the chips on the buses]}.
#   pins.log     one JSON line appended per pin change (the history): {"t_ms", "boot", "pin",
#                "mode": "in"|"out"|"od"|"pwm", "level": 0|1|null, PWM: "duty_u16", "freq"}.
#   reset.json   written here just before the process exits for machine.reset()/deepsleep();
#                the launcher restarts the board, which reads it back as its reset cause.
#   wdt.json     {"boot", "timeout_ms", "feeds", "period_ms"}: written when machine.WDT starts
#                and on feeds at most every period_ms (a quarter of the timeout: little heap
#                churn), so the launcher can bite when the CPU is stuck where nothing here runs.
# Watchdog: machine.WDT cannot be stopped; on the first hardware access after its timeout
# without a feed the board resets with WDT_RESET (and the launcher resets it the same way if
# no hardware access comes at all). World condition hang_after_s hangs the CPU on purpose.
# The world survives reboots: a new boot resumes it from state.json and advances it by the
# wall-clock time the board was down (deep sleep, power cut). A power-on boot that resumes
# a world was a power cut: the MQ-135 heater starts cold. Chips on the buses power up anew.
# Inputs driven by the world (float switches) fire Pin.irq handlers on their edges, checked
# on every hardware access.
#
# Runs under MicroPython and CPython.
import json
import os
import time

from buses import Buses
from pads import Pad, pin_label  # noqa: F401  (machine.py uses emu.pin_label)
from world import CONDITIONS, World, check_condition, floating_level, floating_raw

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
RESET_NAMES = {PWRON_RESET: "power_on", HARD_RESET: "hard", WDT_RESET: "watchdog",
               DEEPSLEEP_RESET: "deepsleep", SOFT_RESET: "soft"}
EXIT_RESET = 3  # process exit status of a requested reset (reset.json says which)

CONTROL_POLL_MS = 100
STATE_PERIOD_MS = 500
HISTORY_MAX = 256

# Used when no chip facts are given (in-process use without a launcher): lenient.
DEFAULT_CHIP = {
    "name": "emulated", "gpios": list(range(40)), "input_only": [], "adc": list(range(40)),
    "adc_wifi_blocked": [], "reserved": {}, "named_pins": {"LED": "output"},
    "adc_atten": True, "unique_id_len": 6, "freq_hz": 240000000,
}


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        # Streamed: no contiguous copy of the whole text on the board's (fragmented) heap.
        json.dump(obj, f)
    os.rename(tmp, path)


class Emulation:
    def __init__(self, config=None, emu_dir=None, clock=None):
        config = config or {}
        self.config = config
        self.dir = emu_dir
        self.clock = clock or ticks_ms
        self.t0 = self.clock()
        chip = config.get("chip") or DEFAULT_CHIP
        self.chip_name = chip.get("name", "emulated")
        self.gpios = set(chip.get("gpios", ()))
        self.input_only = set(chip.get("input_only", ()))
        self.adc_pins = set(chip.get("adc", ()))
        self.adc_wifi_blocked = set(chip.get("adc_wifi_blocked", ()))
        self.reserved = chip.get("reserved", {})
        self.named_pins = chip.get("named_pins", {})
        self.adc_atten = chip.get("adc_atten", False)
        self.unique_id_len = chip.get("unique_id_len", 6)
        self.freq_hz = chip.get("freq_hz", 240000000)
        self.pads = {}
        self.history = []
        self.reporters = {}  # name -> callable returning a JSON-able dict for state.json
        self.wlan = {}  # interface -> state dict (network.py)
        self.wdt = None  # the running machine.WDT: cannot be stopped until the next reset
        self._wdt_feeds = 0
        self._wdt_written = 0
        self._hung = False
        self.launched = False  # a board process of its own (get()), not in-process use
        self.irq_pads = []  # pads with a Pin.irq handler
        self._in_irq = False
        self.boot = 1
        self.reset_cause = PWRON_RESET
        self.control_rev = 0
        self.control_error = ""
        self._last_control = -CONTROL_POLL_MS
        self._last_state = -STATE_PERIOD_MS
        conditions = config.get("conditions") or {}
        start_s = 0.0
        sim_s = 0.0
        previous = self._read("state.json")
        if previous and isinstance(previous.get("world"), dict):
            self.boot = previous.get("boot", 0) + 1
            self.control_rev = previous.get("control_rev", 0)
            resumed = {}
            for name in conditions:
                resumed[name] = conditions[name]
            for name in previous["world"]:
                if name in CONDITIONS:
                    resumed[name] = previous["world"][name]
            conditions = resumed
            sim_s = previous["world"].get("sim_s", 0.0)
            down_s = time.time() - previous.get("wall_s", time.time())
            start_s = -max(0.0, down_s)  # the world kept going while the board was down
        self.world = World(config.get("wiring"), conditions, start_s)
        self.world.sim_s = sim_s
        self.world.step(0.0)
        self.world.clock = self.now_s
        reset = self._read("reset.json")
        if reset:
            self.reset_cause = reset.get("cause", PWRON_RESET)
            os.remove(self.dir + "/reset.json")
        if previous and self.reset_cause == PWRON_RESET:
            self.world.power_cut()
        # An unknown chip model or a bad device entry stops the board here, naming it.
        self.buses = Buses(self.world, config.get("i2c_devices"), config.get("onewire"))
        self.i2c_devices = self.buses.i2c[0]  # address -> model with i2c_read / i2c_write
        self.world.device_names = self.buses.names
        check_condition("faults", self.world.conditions["faults"], self.buses.names)
        self.write_state()

    def unique_id(self):
        """Bytes from world.json's unique_id (hex), else derived from the emulation dir."""
        import binascii

        given = self.config.get("unique_id")
        if given:
            return binascii.unhexlify(given)[: self.unique_id_len]
        import hashlib

        seed = (self.dir or "emulated").encode()
        return hashlib.sha256(seed).digest()[: self.unique_id_len]

    def _read(self, name):
        return _read_json(self.dir + "/" + name) if self.dir else None

    # ---- time -------------------------------------------------------------------------

    def now_ms(self):
        return ticks_diff(self.clock(), self.t0)

    def now_s(self):
        return self.now_ms() / 1000.0

    # ---- pins -------------------------------------------------------------------------

    def check_pin(self, pin, need="any"):
        """Validate a pin id like the chip would; need is "any", "output" or "adc"."""
        if isinstance(pin, str):
            if pin not in self.named_pins:
                raise ValueError("invalid pin: %r is not a pin name on %s" % (pin, self.chip_name))
            if need == "adc":
                raise ValueError("invalid pin for ADC: %r" % pin)
            return pin
        if isinstance(pin, bool) or not isinstance(pin, int):
            raise ValueError("invalid pin: %r (give a GPIO number)" % (pin,))
        if pin not in self.gpios:
            why = self.reserved.get(str(pin)) or "does not exist on %s" % self.chip_name
            if str(pin) in self.reserved:
                why = "is " + why
            raise ValueError("invalid pin: GPIO %d %s" % (pin, why))
        if need == "output" and pin in self.input_only:
            raise ValueError("pin GPIO %d can only be input" % pin)
        if need == "adc" and pin not in self.adc_pins:
            raise ValueError("invalid pin for ADC: GPIO %d" % pin)
        return pin

    def pad(self, pin):
        pad = self.pads.get(pin)
        if pad is None:
            pad = self.pads[pin] = Pad(pin)
            self.pad_changed(pad)  # history starts with the pin released (as after reset)
        return pad

    def pad_changed(self, pad):
        """Record a pad whose mode/level/duty may have changed; a no-op when nothing did."""
        driven = pad.driven()
        entry = {"pin": pad.pin, "mode": pad.mode,
                 "level": driven if driven != "pwm" else None}
        if pad.mode == "pwm":
            entry["duty_u16"] = pad.duty_u16
            entry["freq"] = pad.freq
        key = (entry["mode"], entry["level"], entry.get("duty_u16"), entry.get("freq"))
        if key == pad.last:
            return
        pad.last = key
        now = self.poll()
        entry["t_ms"] = now
        entry["boot"] = self.boot
        self.history.append(entry)
        if len(self.history) > HISTORY_MAX:
            del self.history[: HISTORY_MAX // 2]
        duty = pad.duty_u16 / 65535 if pad.mode == "pwm" else None
        self.world.pin_driven(pad.pin, driven, now / 1000.0, duty)
        if self.dir:
            with open(self.dir + "/pins.log", "a") as f:
                f.write(json.dumps(entry) + "\n")
            self.write_state(now)

    def input_level(self, pad):
        level = self._settled_level(pad)
        return floating_level() if level is None else level

    def _settled_level(self, pad):
        """The level on a pad from the world, the chip's own driver or the pull; None: floats."""
        level = self.world.input_level(pad.pin, self.now_s())
        if level is not None:
            return level
        driven = pad.driven()
        if driven in (0, 1):
            return driven
        if pad.pull == "up":
            return 1
        if pad.pull == "down":
            return 0
        return None

    def watch_irq(self, pad):
        """Pin.irq registered a handler on pad: its edges are looked for from now on."""
        pad.irq_level = self._settled_level(pad)
        if pad not in self.irq_pads:
            self.irq_pads.append(pad)

    def _check_irqs(self):
        if self._in_irq:
            return  # a handler touching hardware does not re-enter
        self._in_irq = True
        try:
            for pad in self.irq_pads:
                level = self._settled_level(pad)
                previous = pad.irq_level
                if level is None or level == previous:
                    continue
                pad.irq_level = level
                edge = 1 if level else 2  # Pin.IRQ_RISING, Pin.IRQ_FALLING
                if previous is not None and pad.irq_handler and pad.irq_trigger & edge:
                    pad.irq_handler(pad.irq_pin)
        finally:
            self._in_irq = False

    def adc_read(self, pin):
        self.poll()
        if pin in self.adc_wifi_blocked and self.radio_on():
            import errno

            # ESP32: ADC2 belongs to the Wi-Fi driver while the radio is on.
            raise OSError(errno.ETIMEDOUT, "ADC2 is in use by Wi-Fi")
        raw = self.world.adc_raw(pin, self.now_s())
        return floating_raw() if raw is None else raw

    def radio_on(self):
        return any(state.get("active") for state in self.wlan.values())

    # ---- control channel --------------------------------------------------------------

    def poll(self):
        """Called on every hardware access: apply new control, refresh state.json (rate-limited)."""
        now = self.now_ms()
        self._check_wdt(now)
        if self.irq_pads:
            self._check_irqs()
        if self.dir is not None and now - self._last_control >= CONTROL_POLL_MS:
            self._last_control = now
            self._check_control(now)
        hang_s = self.world.conditions.get("hang_after_s")
        if hang_s and now >= hang_s * 1000:
            self._hang(now)
        if self.dir is None:
            return now
        if now - self._last_state >= STATE_PERIOD_MS:
            self.write_state(now)
        return now

    # ---- watchdog ---------------------------------------------------------------------

    def wdt_start(self, wdt):
        """machine.WDT(timeout=...) started (or re-initialised): it is fed as of now."""
        self.wdt = wdt
        self.reporters["wdt"] = wdt._report
        self._write_wdt()

    def wdt_fed(self):
        self._wdt_feeds += 1
        if self.wdt.fed_ms - self._wdt_written >= self._wdt_period():
            self._write_wdt()

    def _wdt_period(self):
        return max(100, self.wdt.timeout // 4)

    def _write_wdt(self):
        if self.dir:
            self._wdt_written = self.wdt.fed_ms
            _write_json(self.dir + "/wdt.json", {"boot": self.boot, "feeds": self._wdt_feeds,
                                                 "timeout_ms": self.wdt.timeout,
                                                 "period_ms": self._wdt_period()})

    def _check_wdt(self, now):
        wdt = self.wdt
        if wdt is not None and now - wdt.fed_ms > wdt.timeout:
            print("emulator: watchdog not fed for %d ms (timeout %d ms)"
                  % (now - wdt.fed_ms, wdt.timeout))
            self.request_reset(WDT_RESET)

    def _hang(self, now):
        """The CPU stops (world condition hang_after_s): nothing runs until the watchdog bites;
        without one the board stays hung until power is cut (EmulatedNode.kill)."""
        if not self._hung:
            self._hung = True
            print("emulator: CPU hung at %d ms of uptime" % now)
            self.write_state(now)
        if not self.launched:  # in-process (tests, maybe a fake clock): skip to the end
            if self.wdt is None:
                raise RuntimeError("emulated CPU hang with no watchdog running: nothing would "
                                   "ever reset it; start a machine.WDT or clear hang_after_s")
            self.request_reset(WDT_RESET)
        while True:
            time.sleep(0.02)
            self._check_wdt(self.now_ms())

    def _check_control(self, now):
        control = self._read("control.json")
        if not control or control.get("rev", 0) <= self.control_rev:
            return
        changes = [c for c in control.get("changes", ()) if isinstance(c, dict)]
        changes.sort(key=lambda c: c.get("rev", 0))
        for change in changes:
            rev = change.get("rev", 0)
            if rev <= self.control_rev:
                continue
            try:
                self.world.set(change.get("set", {}), now / 1000.0)
            except (ValueError, TypeError, AttributeError) as exc:
                self.control_error = "rev %d: %s" % (rev, exc)
                print("emulator: control", self.control_error)
            self.control_rev = rev
        self.write_state(now)

    def set_world(self, **conditions):
        """In-process equivalent of a control change."""
        self.world.set(conditions, self.now_s())
        self.write_state()

    def state(self, now=None):
        if now is None:
            now = self.now_ms()
        self.world.step(now / 1000.0)
        pins = {}
        for pin in self.pads:
            pad = self.pads[pin]
            driven = pad.driven()
            pins[str(pin)] = {"mode": pad.mode, "level": driven if driven != "pwm" else None}
            if pad.mode == "pwm":
                pins[str(pin)]["duty_u16"] = pad.duty_u16
        out = {
            "t_ms": now, "wall_s": time.time(), "boot": self.boot,
            "reset_cause": RESET_NAMES.get(self.reset_cause, str(self.reset_cause)),
            "control_rev": self.control_rev, "control_error": self.control_error,
            "pins": pins, "actuators": self.world.actuators(), "world": self.world.snapshot(),
            "devices": self.buses.names,
        }
        for name in out["actuators"]:
            out[name] = out["actuators"][name]  # also at the top level: state["pump"]
        for name in self.reporters:
            out[name] = self.reporters[name]()
        return out

    def write_state(self, now=None):
        if self.dir is None:
            return
        if now is None:
            now = self.now_ms()
        self._last_state = now
        _write_json(self.dir + "/state.json", self.state(now))

    def request_reset(self, cause, sleep_ms=0):
        """Leave the process like a reset: the launcher restarts it with this cause."""
        self.wdt = None  # a reset (and deep sleep) stops the watchdog
        if self.dir:
            _write_json(self.dir + "/reset.json", {"cause": cause, "sleep_ms": sleep_ms})
            self.write_state()
        print("emulator: %s reset%s" % (RESET_NAMES.get(cause, cause),
                                       " (sleep %d ms)" % sleep_ms if sleep_ms else ""))
        raise SystemExit(EXIT_RESET)


_current = None


def get():
    """The emulation of this process, created on first use from $NT_EMU_DIR/world.json."""
    global _current
    if _current is None:
        emu_dir = os.getenv("NT_EMU_DIR") or None
        config = _read_json(emu_dir + "/world.json") if emu_dir else None
        _current = Emulation(config, emu_dir)
        _current.launched = emu_dir is not None
    return _current


def configure(config=None, emu_dir=None, clock=None):
    """Start a fresh emulation (tests): config is the world.json content."""
    global _current
    _current = Emulation(config, emu_dir, clock)
    return _current
