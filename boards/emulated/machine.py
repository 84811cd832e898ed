# The emulated `machine` module: first on MICROPYPATH for the emulated board, on sys.path
# under CPython tests. Models the circuit (boards/emulated/world.py) and fails like the
# hardware: invalid pins raise ValueError naming them, an ADC on an unconnected pin reads
# floating noise, an absent I2C device raises OSError(ENODEV), an output pin without an
# explicit value drives the reset level of its output register (0) - the boot glitch.
# I2C reaches the chip models of boards/emulated/buses.py (world.json "i2c_devices").
#
# Pin history: every change of a pin's mode or level is recorded (Pin(n).history, and
# pins.log when launched by edge_gateway.emulator), like gpiozero's mock pins.
#
# Runs under MicroPython and CPython: no typing at runtime, no dataclasses.
import errno
import time

import emu
from emu import (  # noqa: F401  (re-exported reset causes)
    DEEPSLEEP_RESET,
    HARD_RESET,
    PWRON_RESET,
    SOFT_RESET,
    WDT_RESET,
)


def _emu():
    return emu.get()


_emu()  # the board powers up with the import: state.json exists from the first instant


def _pin_id(pin):
    return pin.id if isinstance(pin, Pin) else pin


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2
    _MODES = {IN: "in", OUT: "out", OPEN_DRAIN: "od"}
    _PULLS = {PULL_UP: "up", PULL_DOWN: "down"}

    def __init__(self, id, mode=-1, pull=-1, value=None, **kwargs):
        if isinstance(id, Pin):
            id = id.id
        need = "output" if mode in (Pin.OUT, Pin.OPEN_DRAIN) else "any"
        self.id = _emu().check_pin(id, need)
        self._pad = _emu().pad(self.id)
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None, **kwargs):
        sim = _emu()
        pad = self._pad
        if mode not in (-1, None) and mode not in Pin._MODES:
            raise ValueError("invalid pin mode: %r" % (mode,))
        if mode in (Pin.OUT, Pin.OPEN_DRAIN):
            sim.check_pin(self.id, "output")
        if pull not in (-1, None) and pull not in Pin._PULLS:
            raise ValueError("invalid pull: %r" % (pull,))
        # The output register is set before the driver is enabled: no glitch.
        if value is not None:
            pad.out = 1 if value else 0
        if pull != -1:
            pad.pull = Pin._PULLS.get(pull)
        if mode not in (-1, None):
            pad.mode = Pin._MODES[mode]
        sim.pad_changed(pad)

    def value(self, x=None):
        sim = _emu()
        pad = self._pad
        if x is None:
            sim.poll()
            if pad.mode == "out":
                return pad.out
            return sim.input_level(pad)
        pad.out = 1 if x else 0
        sim.pad_changed(pad)
        return None

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def high(self):
        self.value(1)

    def low(self):
        self.value(0)

    def toggle(self):
        self.value(0 if self._pad.out else 1)

    def mode(self, mode=None):
        if mode is None:
            for key in Pin._MODES:
                if Pin._MODES[key] == self._pad.mode:
                    return key
            return None
        self.init(mode)
        return None

    def pull(self, pull=None):
        if pull is None:
            for key in Pin._PULLS:
                if Pin._PULLS[key] == self._pad.pull:
                    return key
            return None
        self.init(pull=pull)
        return None

    def irq(self, handler=None, trigger=3, **kwargs):
        """handler(pin) fires on each edge the world drives on this input (a float switch),
        found on the next hardware access; edges of a floating pin are not modelled."""
        self._pad.irq_handler = handler
        self._pad.irq_trigger = trigger
        self._pad.irq_pin = self
        _emu().watch_irq(self._pad)
        return _Irq(self._pad)

    @property
    def history(self):
        """This pin's recorded changes: [{"t_ms", "boot", "pin", "mode", "level"...}]."""
        return [e for e in _emu().history if e["pin"] == self.id]

    def __repr__(self):
        return "Pin(%s, mode=%s)" % (emu.pin_label(self.id), self._pad.mode.upper())


class _Irq:
    def __init__(self, pad):
        self._pad = pad

    def trigger(self):
        return self._pad.irq_trigger

    def flags(self):
        return 0


class Signal:
    def __init__(self, pin, *args, invert=False, **kwargs):
        self._pin = pin if isinstance(pin, Pin) else Pin(pin, *args, **kwargs)
        self._invert = bool(invert)

    def value(self, x=None):
        if x is None:
            return self._pin.value() ^ self._invert
        self._pin.value((1 if x else 0) ^ self._invert)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_12BIT = 3
    # Full scale relative to 11 dB (~3.3 V): a 2.5 V probe clips at 0 dB, as on an ESP32.
    _SCALE = {ATTN_0DB: 3.0, ATTN_2_5DB: 2.2, ATTN_6DB: 1.5, ATTN_11DB: 1.0}

    def __init__(self, pin, *, atten=None):
        self.pin = _emu().check_pin(_pin_id(pin), "adc")
        self._atten = ADC.ATTN_0DB
        if atten is not None:
            self.atten(atten)

    def atten(self, atten):
        if atten not in ADC._SCALE:
            raise ValueError("invalid attenuation: %r" % (atten,))
        self._atten = atten

    def width(self, width):
        pass

    def read_u16(self):
        sim = _emu()
        raw = sim.adc_read(self.pin)
        if sim.adc_atten:
            raw = raw * ADC._SCALE[self._atten]
        return min(65535, int(raw))

    def read(self):
        return self.read_u16() >> 4

    def read_uv(self):
        return self.read_u16() * 3300000 // 65535

    def __repr__(self):
        return "ADC(%s)" % emu.pin_label(self.pin)


class PWM:
    def __init__(self, dest, *, freq=None, duty_u16=None, duty_ns=None, invert=False):
        pin_id = _emu().check_pin(_pin_id(dest), "output")
        self._pad = _emu().pad(pin_id)
        self._pad.mode = "pwm"
        if freq is not None:
            self._pad.freq = int(freq)
        elif not self._pad.freq:
            self._pad.freq = 5000
        if duty_u16 is not None:
            self.duty_u16(duty_u16)
        else:
            _emu().pad_changed(self._pad)

    def freq(self, value=None):
        if value is None:
            return self._pad.freq
        if value <= 0:
            raise ValueError("freq must be > 0, got %r" % (value,))
        self._pad.freq = int(value)
        _emu().pad_changed(self._pad)
        return None

    def duty_u16(self, value=None):
        if value is None:
            return self._pad.duty_u16
        if not 0 <= value <= 65535:
            raise ValueError("duty_u16 must be 0..65535, got %r" % (value,))
        self._pad.duty_u16 = int(value)
        _emu().pad_changed(self._pad)
        return None

    def deinit(self):
        self._pad.mode = "in"
        self._pad.duty_u16 = 0
        _emu().pad_changed(self._pad)


class I2C:
    """The bus to the chip models world.json's "i2c_devices" puts on it (emu.get().buses)."""

    def __init__(self, id=-1, *, scl=None, sda=None, freq=400000, timeout=50000):
        sim = _emu()
        if id not in (-1, 0, 1):
            raise ValueError("I2C(%r) doesn't exist" % (id,))
        self.scl = None if scl is None else sim.check_pin(_pin_id(scl), "output")
        self.sda = None if sda is None else sim.check_pin(_pin_id(sda), "output")
        if self.scl is not None and self.scl == self.sda:
            raise ValueError("I2C scl and sda cannot be the same pin")
        self.freq = freq
        self.bus = sim.buses.i2c_bus(id, self.scl, self.sda)  # None: no chip on these wires

    def _device(self, addr):
        sim = _emu()
        sim.poll()
        device = sim.buses.i2c_device(self.bus, addr)
        if device is None:
            raise OSError(errno.ENODEV, "ENODEV")
        return device

    def scan(self):
        sim = _emu()
        sim.poll()
        return sim.buses.i2c_scan(self.bus)

    def readfrom(self, addr, nbytes, stop=True):
        return bytes(self._device(addr).i2c_read(nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf), stop)
        buf[:] = data

    def writeto(self, addr, buf, stop=True):
        self._device(addr).i2c_write(bytes(buf))
        return len(buf)

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        self.writeto(addr, memaddr.to_bytes(addrsize // 8, "big"), False)
        return self.readfrom(addr, nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        buf[:] = self.readfrom_mem(addr, memaddr, len(buf), addrsize=addrsize)

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self.writeto(addr, memaddr.to_bytes(addrsize // 8, "big") + bytes(buf))


class SoftI2C(I2C):
    """Bit-banged I2C on any two pins: SoftI2C(scl, sda, *, freq, timeout)."""

    def __init__(self, scl, sda, *, freq=400000, timeout=50000):
        super().__init__(-1, scl=scl, sda=sda, freq=freq, timeout=timeout)


class WDT:
    """The hardware watchdog: once started it cannot be stopped; not fed within `timeout` ms,
    the board resets with WDT_RESET (emu.py). Feeds are in state.json "wdt"."""

    def __init__(self, id=0, timeout=5000):
        if timeout <= 0:
            raise ValueError("WDT timeout must be > 0 ms, got %r" % (timeout,))
        sim = _emu()
        self.timeout = timeout
        self.fed_ms = sim.poll()
        sim.wdt_start(self)

    def feed(self):
        sim = _emu()
        self.fed_ms = sim.poll()
        sim.wdt_fed()

    def _report(self):
        return {"timeout_ms": self.timeout, "fed_ms": self.fed_ms}


class RTC:
    _offset_s = 0

    def datetime(self, datetimetuple=None):
        if datetimetuple is None:
            t = time.localtime(int(time.time() + RTC._offset_s))
            # (year, month, day, weekday 0=Monday, hours, minutes, seconds, subseconds)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        y, mo, d, _wd, h, mi, s = datetimetuple[:7]
        RTC._offset_s = time.mktime((y, mo, d, h, mi, s, 0, 0, -1)) - int(time.time())
        return None


def unique_id():
    return _emu().unique_id()


def reset_cause():
    return _emu().reset_cause


def reset():
    _emu().request_reset(HARD_RESET)


def soft_reset():
    _emu().request_reset(SOFT_RESET)


def deepsleep(time_ms=0):
    _emu().request_reset(DEEPSLEEP_RESET, int(time_ms))


def lightsleep(time_ms=0):
    if time_ms:
        time.sleep(time_ms / 1000)


def idle():
    _emu().poll()


def freq(hz=None):
    sim = _emu()
    if hz is None:
        return sim.freq_hz
    sim.freq_hz = int(hz)
    return None


def disable_irq():
    return 0


def enable_irq(state=0):
    pass
