# The board bridge: THE ONLY firmware module that imports machine / network.
# Everything else gets its pins, ADCs and radio from a Board built from the board profile
# (boards/<name>/profile.json, validated on the host by edge_gateway.boards).
#
# On a device `machine` is the real one; on the emulated board and under CPython tests it is
# boards/emulated/machine.py. MicroPython subset: no typing at runtime.
import binascii

import machine

try:
    import network

    HAS_RADIO = True
except ImportError:  # a board without a radio (e.g. a plain Pico)
    HAS_RADIO = False

try:
    from typing import Any, Optional
except ImportError:
    pass

_WLAN_STATUS = (
    ("STAT_IDLE", "idle"),
    ("STAT_CONNECTING", "connecting"),
    ("STAT_GOT_IP", "got_ip"),
    ("STAT_NO_AP_FOUND", "no_ap_found"),
    ("STAT_WRONG_PASSWORD", "wrong_password"),
    ("STAT_CONNECT_FAIL", "connect_fail"),
    ("STAT_BEACON_TIMEOUT", "beacon_timeout"),
    ("STAT_ASSOC_FAIL", "assoc_fail"),
    ("STAT_HANDSHAKE_TIMEOUT", "handshake_timeout"),
)
_RESET_CAUSES = (
    ("PWRON_RESET", "power_on"),
    ("HARD_RESET", "hard"),
    ("WDT_RESET", "watchdog"),
    ("DEEPSLEEP_RESET", "deepsleep"),
    ("SOFT_RESET", "soft"),
)


def _names(module, table):
    """{constant value: name} for the constants this port has (rp2 lacks some of esp32's)."""
    out = {}
    for attr, name in table:
        value = getattr(module, attr, None)
        if value is not None:
            out[value] = name
    return out


class Board:
    """Hardware of one node, built from its board profile (a dict)."""

    def __init__(self, profile: "dict[str, Any]") -> None:
        self.profile = profile
        self.name = profile["board"]
        self.pins = profile["pins"]
        self.relay_active_low = bool(profile.get("relay_active_low", False))
        self.status_led_active_low = bool(profile.get("status_led_active_low", False))
        self.tank_switch_active_low = bool(profile.get("tank_switch_active_low", True))
        self.adc_samples = int(profile.get("adc_samples", 8))
        self._wlan = None

    def _pin_id(self, role: str) -> "Any":
        pin = self.pins.get(role)
        if pin is None:
            raise ValueError("board %s: pins.%s is not set in the board profile"
                             % (self.name, role))
        return pin

    def has(self, role: str) -> bool:
        """Whether the profile wires something to this pin role (e.g. "onewire")."""
        return self.pins.get(role) is not None

    def _adc(self, role: str) -> "Any":
        # Full range (11 dB attenuation where the chip has it): probes swing up to ~3 V.
        adc = machine.ADC(machine.Pin(self._pin_id(role)))
        atten = getattr(machine.ADC, "ATTN_11DB", None)
        if atten is not None and hasattr(adc, "atten"):
            adc.atten(atten)
        return adc

    def soil_adc(self) -> "Any":
        """The soil probe's ADC."""
        return self._adc("soil_adc")

    def mq135_adc(self) -> "Any":
        """The MQ-135 front end's ADC (behind a divider: the module's output is 5 V logic)."""
        return self._adc("mq135_adc")

    def i2c_bus(self) -> "Any":
        """The I2C bus the profile's i2c_devices sit on (400 kHz; all our chips allow it)."""
        return machine.I2C(0, scl=machine.Pin(self._pin_id("i2c_scl")),
                           sda=machine.Pin(self._pin_id("i2c_sda")), freq=400000)

    def i2c_devices(self) -> "list[Any]":
        """[{"model": "sht4x", "address": 68}, ...] from the profile."""
        return list(self.profile.get("i2c_devices", []))

    def onewire_bus(self) -> "Any":
        """The platform's 1-Wire bus object on the onewire pin (DS18B20 probes)."""
        import onewire

        return onewire.OneWire(machine.Pin(self._pin_id("onewire")))

    def diffuser_pwm(self, channel: int) -> "Any":
        """PWM output of diffuser channel 1..4, starting at 0 % duty (off)."""
        pin = machine.Pin(self._pin_id("diffuser_%d" % channel), machine.Pin.OUT, value=0)
        return machine.PWM(pin, freq=1000, duty_u16=0)

    def diffuser_channels(self) -> "list[int]":
        return [n for n in range(1, 5) if self.has("diffuser_%d" % n)]

    def tank_switch_pin(self, tank: int) -> "Any":
        """Input of tank float switch 1..2, pulled up for the usual switch-to-GND wiring."""
        pull = machine.Pin.PULL_UP if self.tank_switch_active_low else machine.Pin.PULL_DOWN
        return machine.Pin(self._pin_id("tank_switch_%d" % tank), machine.Pin.IN, pull)

    def tank_switches(self) -> "list[int]":
        return [n for n in range(1, 3) if self.has("tank_switch_%d" % n)]

    def arm_switch(self) -> "Optional[Any]":
        """Input of the drone payload's arm switch (pins.arm_switch), or None when the board
        has none. Closed to GND = armed; the pull-up makes a broken wire read disarmed."""
        if self.pins.get("arm_switch") is None:
            return None
        return machine.Pin(self._pin_id("arm_switch"), machine.Pin.IN, machine.Pin.PULL_UP)

    def _output(self, role: str, active_low: bool) -> "Any":
        # value= sets the output register before the driver is enabled: no glitch at boot.
        return machine.Pin(self._pin_id(role), machine.Pin.OUT, value=1 if active_low else 0)

    def pump_relay_pin(self) -> "Any":
        """Output pin of the pump relay, already at its INACTIVE level."""
        return self._output("pump_relay", self.relay_active_low)

    def status_led_pin(self) -> "Optional[Any]":
        """Output pin of the status LED (off), or None when the board has none."""
        if self.pins.get("status_led") is None:
            return None
        return self._output("status_led", self.status_led_active_low)

    def unique_id(self) -> str:
        return binascii.hexlify(machine.unique_id()).decode()

    def reset_cause(self) -> str:
        cause = machine.reset_cause()
        return _names(machine, _RESET_CAUSES).get(cause, "unknown(%s)" % cause)

    def watchdog(self, timeout_ms: int) -> "Any":
        return machine.WDT(timeout=timeout_ms)

    def reset(self) -> None:
        machine.reset()

    def deepsleep(self, ms: int) -> None:
        machine.deepsleep(ms)

    # ---- Wi-Fi: non-blocking; the app polls wlan_connected() ---------------------------

    def _sta(self) -> "Any":
        if not HAS_RADIO:
            raise OSError("board %s has no network module" % self.name)
        if self._wlan is None:
            self._wlan = network.WLAN(network.STA_IF)
        return self._wlan

    def wlan_connect(self, ssid: str, password: str) -> None:
        wlan = self._sta()
        wlan.active(True)
        wlan.connect(ssid, password)

    def wlan_connected(self) -> bool:
        return HAS_RADIO and self._sta().isconnected()

    def wlan_status(self) -> str:
        """idle, connecting, got_ip, no_ap_found, wrong_password, ... (port-independent)."""
        if not HAS_RADIO:
            return "no_radio"
        status = self._sta().status()
        return _names(network, _WLAN_STATUS).get(status, "status_%s" % status)

    def wlan_ip(self) -> str:
        return self._sta().ifconfig()[0] if self.wlan_connected() else ""

    def wlan_disconnect(self) -> None:
        if HAS_RADIO:
            self._sta().disconnect()
