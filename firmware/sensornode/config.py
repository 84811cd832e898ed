# Node configuration: a JSON file on flash, merged over defaults and validated as a whole, so a
# bad field is reported by name and nothing of a half-valid config is ever applied.
import json

from sensornode import cmdauth, component, protocol

CONFIG_FILE = "config.json"

DEFAULTS = {
    "site": "home",
    "node": "",
    "role": "garden",
    "wifi": {"ssid": "", "password": ""},
    "broker": {
        "host": "127.0.0.1",
        "port": 1883,
        "username": "",
        "password": "",
        "keepalive_s": 30,
        # TLS when set: the CA certificate file (PEM or DER) on the node's flash.
        "ca_file": "",
    },
    # The key this node checks every command's signature with: 64 hex digits (32 bytes), the
    # same as the gateway's key file for this node. Empty: every command is refused.
    "cmd_key": "",
    "report_interval_s": 10,
    "soil": {"dry_raw": 50000, "wet_raw": 24000},
    "irrigation": {"max_run_s": 600},
    # Drone payload: every diffuser channel shares these limits.
    "diffusers": {"max_duty_pct": 80, "ramp_pct_per_s": 50, "freq_hz": 1000, "max_run_s": 600},
    # MQ-135: r0_ohm from a clean-air calibration (0: not calibrated, no ppm is reported);
    # the module's output reaches the ADC through a divider (vc * divider_ratio <= 3.3 V).
    "mq135": {
        "r0_ohm": 0,
        "rl_ohm": 10000,
        "vc": 5.0,
        "divider_ratio": 0.66,
        "clean_air_ratio": 3.6,
        "warmup_s": 60,
    },
    "ds18b20": {"resolution": 12},
    # Readings and events wait here (on flash) until the broker has them; when full, the
    # oldest are dropped and reported.
    "outbox": {"max_bytes": 65536},
    # Per sensor component (soil, sht4x, bme680, sgp40, ds18b20, mq135, tank_switch_1, ...):
    # {"interval_s": 10, "fail_after": 3, "stuck_after": 0, "backoff_max_s": 300,
    #  "filters": [{"median": 5}, {"delta": 0.5, "heartbeat_s": 300}]}
    "sensors": {},
}
# Fields whose content is free-form here and checked by the module that owns it.
_OPEN_FIELDS = ("sensors",)


class ConfigError(ValueError):
    """A config field that cannot be used; the message names the field and the fix."""


def _merge(defaults, given, where, errors):
    merged = {}
    for key in defaults:
        merged[key] = defaults[key]
    for key in given:
        path = where + key
        if key in _OPEN_FIELDS and not where:
            merged[key] = given[key]
            continue
        if key not in defaults:
            errors.append(
                "%s: unknown field; known fields here: %s" % (path, ", ".join(sorted(defaults)))
            )
            continue
        if isinstance(defaults[key], dict):
            if not isinstance(given[key], dict):
                errors.append("%s: must be an object like %s" % (path, json.dumps(defaults[key])))
                continue
            merged[key] = _merge(defaults[key], given[key], path + ".", errors)
        else:
            merged[key] = given[key]
    return merged


def _check_int(errors, cfg, path, low, high):
    value = _lookup(cfg, path)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.append("%s: must be a whole number from %d to %d, got %r" % (path, low, high, value))


def _check_number(errors, cfg, path, low, high):
    value = _lookup(cfg, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        errors.append("%s: must be a number from %s to %s, got %r" % (path, low, high, value))


def _check_sensors(errors, sensors):
    if not isinstance(sensors, dict):
        errors.append('sensors: must be an object like {"soil": {"interval_s": 10}}')
        return
    for name in sensors:
        try:
            component.check_config("sensors." + name, sensors[name])
        except ValueError as exc:
            errors.append(str(exc))


def _check_text(errors, cfg, path, allow_empty=True):
    value = _lookup(cfg, path)
    if not isinstance(value, str) or (not allow_empty and not value):
        errors.append(
            "%s: must be %stext, got %r" % (path, "" if allow_empty else "non-empty ", value)
        )


def _check_cmd_key(errors, key):
    if key == "":
        return  # allowed, and every command is refused (cmdauth): secure by default
    try:
        cmdauth.parse_key(key)
    except ValueError as exc:
        # The key itself is a secret: the message says what is wrong, never what it is.
        errors.append(
            "cmd_key: %s, got %s; copy the gateway's key file for this node "
            "(`neoterra keygen <node>` makes one)"
            % (exc, "%d characters" % len(key) if isinstance(key, str) else type(key).__name__)
        )


def _lookup(cfg, path):
    value = cfg
    for part in path.split("."):
        value = value[part]
    return value


def validate(given):
    """Return the full config (defaults filled in) or raise ConfigError listing every problem."""
    if not isinstance(given, dict):
        raise ConfigError("config: must be a JSON object")
    errors = []
    cfg = _merge(DEFAULTS, given, "", errors)
    for field in ("site", "node"):
        if not protocol.valid_name(cfg[field]):
            errors.append(
                "%s: %r is not a valid name; use 1-32 characters of a-z, 0-9, '-' or '_'"
                % (field, cfg[field])
            )
    if cfg["role"] not in protocol.ROLES:
        errors.append("role: must be one of %s, got %r" % (", ".join(protocol.ROLES), cfg["role"]))
    _check_text(errors, cfg, "wifi.ssid")
    _check_text(errors, cfg, "wifi.password")
    _check_text(errors, cfg, "broker.host", allow_empty=False)
    _check_int(errors, cfg, "broker.port", 1, 65535)
    _check_text(errors, cfg, "broker.username")
    _check_text(errors, cfg, "broker.password")
    _check_text(errors, cfg, "broker.ca_file")
    _check_int(errors, cfg, "broker.keepalive_s", 5, 600)
    _check_cmd_key(errors, cfg["cmd_key"])
    _check_int(errors, cfg, "report_interval_s", 1, 86400)
    _check_int(errors, cfg, "soil.dry_raw", 0, 65535)
    _check_int(errors, cfg, "soil.wet_raw", 0, 65535)
    _check_int(errors, cfg, "irrigation.max_run_s", 1, protocol.MAX_IRRIGATE_S)
    _check_number(errors, cfg, "diffusers.max_duty_pct", 0, 100)
    _check_number(errors, cfg, "diffusers.ramp_pct_per_s", 0, 1000)
    _check_int(errors, cfg, "diffusers.freq_hz", 10, 40000)
    _check_int(errors, cfg, "diffusers.max_run_s", 1, protocol.MAX_DIFFUSE_S)
    _check_number(errors, cfg, "mq135.r0_ohm", 0, 1e7)
    _check_number(errors, cfg, "mq135.rl_ohm", 100, 1e6)
    _check_number(errors, cfg, "mq135.vc", 1, 6)
    _check_number(errors, cfg, "mq135.divider_ratio", 0.05, 1)
    _check_number(errors, cfg, "mq135.clean_air_ratio", 0.1, 100)
    _check_int(errors, cfg, "mq135.warmup_s", 0, 172800)
    _check_int(errors, cfg, "ds18b20.resolution", 9, 12)
    _check_int(errors, cfg, "outbox.max_bytes", 8192, 4194304)
    _check_sensors(errors, cfg["sensors"])
    if not errors and cfg["soil"]["dry_raw"] <= cfg["soil"]["wet_raw"]:
        errors.append(
            "soil.dry_raw: must be above soil.wet_raw (capacitive probes read lower in "
            "wetter soil); recalibrate in dry and in saturated soil"
        )
    if errors:
        raise ConfigError("; ".join(errors))
    return cfg


def load(path=CONFIG_FILE):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError(
            "%s: cannot be read; write the node config there (see README, 'Node config')" % path
        ) from None
    try:
        given = json.loads(text)
    except ValueError as exc:
        raise ConfigError("%s: not valid JSON (%s)" % (path, exc)) from None
    return validate(given)
