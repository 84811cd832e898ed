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
        self.adc_samples = int(profile.get("adc_samples", 8))
        self._wlan = None

    def _pin_id(self, role: str) -> "Any":
        pin = self.pins.get(role)
        if pin is None:
            raise ValueError("board %s: pins.%s is not set in the board profile"
                             % (self.name, role))
        return pin

    def soil_adc(self) -> "Any":
        """The soil probe's ADC, at full range (11 dB attenuation where the chip has it)."""
        adc = machine.ADC(machine.Pin(self._pin_id("soil_adc")))
        atten = getattr(machine.ADC, "ATTN_11DB", None)
        if atten is not None and hasattr(adc, "atten"):
            adc.atten(atten)
        return adc

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
