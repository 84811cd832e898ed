# The emulated `network` module (WLAN only). Wi-Fi is part of the world: the conditions
# wifi_available, wifi_ssid, wifi_key and wifi_connect_ms decide what connect() leads to, and
# can change at run time (a test cuts Wi-Fi by setting wifi_available to false). Like the
# ESP32 port, a connected station reconnects by itself once the access point is back.
#
# The link state is computed lazily from the clock whenever it is asked for, so it is
# correct even when nothing polled in between. Status codes are the ESP32 port's values.
import emu

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_BEACON_TIMEOUT = 200
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
STATUS_NAMES = {
    STAT_IDLE: "idle", STAT_CONNECTING: "connecting", STAT_GOT_IP: "got_ip",
    STAT_NO_AP_FOUND: "no_ap_found", STAT_WRONG_PASSWORD: "wrong_password",
}
_NO_IP = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
_WIFI_CONDITIONS = ("wifi_available", "wifi_ssid", "wifi_key")
_hostname = ["neoterra"]


def hostname(name=None):
    if name is None:
        return _hostname[0]
    _hostname[0] = name
    return None


class WLAN:
    def __init__(self, interface=STA_IF):
        if interface not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface: %r" % (interface,))
        self._iface = interface
        sim = emu.get()
        if interface not in sim.wlan:
            sim.wlan[interface] = {"active": False, "ssid": None, "key": None,
                                   "connect_ms": 0, "static": None}
        if interface == STA_IF:
            sim.reporters["wifi"] = self._report

    @property
    def _s(self):
        return emu.get().wlan[self._iface]

    def active(self, is_active=None):
        emu.get().poll()
        if is_active is None:
            return self._s["active"]
        self._s["active"] = bool(is_active)
        if not is_active:
            self._s["ssid"] = None
        emu.get().write_state()
        return None

    def connect(self, ssid=None, key=None, *, bssid=None):
        if self._iface != STA_IF:
            raise OSError("AP interface cannot connect")
        if not self._s["active"]:
            raise OSError("Wifi Not Started")  # the ESP32 port's message
        sim = emu.get()
        self._s["ssid"] = ssid or ""
        self._s["key"] = key or ""
        self._s["connect_ms"] = sim.poll()
        sim.write_state()

    def disconnect(self):
        self._s["ssid"] = None
        emu.get().write_state()

    def status(self, param=None):
        sim = emu.get()
        now = sim.poll()
        if param == "rssi":
            return sim.world.conditions["wifi_rssi_dbm"] if self.isconnected() else 0
        if param is not None:
            raise ValueError("unknown status param: %r" % (param,))
        return self._link(now)

    def _link(self, now):
        sim = emu.get()
        s = self._s
        if self._iface != STA_IF or not s["active"] or s["ssid"] is None:
            return STAT_IDLE
        world = sim.world
        c = world.conditions
        since = s["connect_ms"]
        for name in _WIFI_CONDITIONS:
            changed = int(world.changed_s.get(name, 0) * 1000)
            since = max(since, changed)
        settled = now - since >= c["wifi_connect_ms"]
        if not c["wifi_available"] or c["wifi_ssid"] not in ("", s["ssid"]):
            return STAT_NO_AP_FOUND if settled else STAT_CONNECTING
        if c["wifi_key"] not in ("", s["key"]):
            return STAT_WRONG_PASSWORD if settled else STAT_CONNECTING
        return STAT_GOT_IP if settled else STAT_CONNECTING

    def isconnected(self):
        if self._iface == AP_IF:
            return False
        return self.status() == STAT_GOT_IP

    def ifconfig(self, config=None):
        if config is not None:
            self._s["static"] = tuple(config)
            return None
        if self._iface == AP_IF:
            return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "192.168.4.1")
        if not self.isconnected():
            return _NO_IP
        if self._s["static"]:
            return self._s["static"]
        uid = emu.get().unique_id()
        ip = "10.42.%d.%d" % (uid[-2], max(2, min(254, uid[-1])))
        return (ip, "255.255.255.0", "10.42.0.1", "10.42.0.1")

    def config(self, *args, **kwargs):
        if kwargs:
            for key in kwargs:
                if key == "hostname":
                    hostname(kwargs[key])
                self._s[key] = kwargs[key]
            return None
        param = args[0]
        if param == "mac":
            return emu.get().unique_id()[:6]
        if param in ("ssid", "essid"):
            return self._s["ssid"] or ""
        if param == "hostname":
            return hostname()
        if param in self._s:
            return self._s[param]
        raise ValueError("unknown config param: %r" % (param,))

    def scan(self):
        c = emu.get().world.conditions
        if not self._s["active"]:
            raise OSError("Wifi Not Started")
        if not c["wifi_available"]:
            return []
        ssid = (c["wifi_ssid"] or "emulated-ap").encode()
        return [(ssid, b"\x02\x00\x00\x00\x00\x01", 6, c["wifi_rssi_dbm"], 3, False)]

    def _report(self):
        status = self._link(emu.get().now_ms())
        return {"active": self._s["active"], "ssid": self._s["ssid"],
                "status": STATUS_NAMES.get(status, status), "connected": status == STAT_GOT_IP}
