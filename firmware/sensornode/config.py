# Node configuration: a JSON file on flash, merged over defaults and validated as a whole, so a
# bad field is reported by name and nothing of a half-valid config is ever applied.
import json

from sensornode import cmdauth, component, protocol
from sensornode.safety_limits import SafetyConfigError, parse_limits

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
    # Battery garden nodes: wake, measure, report (or keep in the outbox), switch everything
    # off and deep-sleep this long (sensornode.deepsleep). 0: always on.
    "power": {"deep_sleep_s": 0},
    # Per sensor component (soil, sht4x, bme680, sgp40, ds18b20, mq135, tank_switch_1, ...):
    # {"interval_s": 10, "fail_after": 3, "stuck_after": 0, "backoff_max_s": 300,
    #  "filters": [{"median": 5}, {"delta": 0.5, "heartbeat_s": 300}]}
    "sensors": {},
    # The safety layer's limits (sensornode.safety_limits): failsafe_s and per actuator
    # max_on_s, min_off_s, duty caps, water budget and interlock inputs. Unset pump and
    # diffuser limits come from irrigation.max_run_s and diffusers.max_duty_pct/max_run_s.
    "safety": {},
    # Garden nodes: the per-plant profile the node waters by while the gateway is unreachable
    # (sensornode.autonomy: name, moisture_low, moisture_high, soak_s, max_run_s,
    # budget_l_per_day, flow_l_per_min, takeover_s). Empty: the node never waters by itself.
    "autonomy": {},
}
# Fields whose content is free-form here and checked by the module that owns it.
_OPEN_FIELDS = ("sensors", "safety", "autonomy")


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


def _check_safety(errors, section):
    try:
        parse_limits(section)
    except SafetyConfigError as exc:
        errors.append(str(exc))


def _check_autonomy(errors, cfg):
    profile = cfg["autonomy"]
    if profile == {}:
        return
    if cfg["role"] != "garden":
        errors.append("autonomy: only a garden node waters by itself; remove it from this "
                      "%s node's config" % cfg["role"])
        return
    from sensornode.autonomy import check_profile  # only nodes that water by themselves

    try:
        check_profile(profile)
    except ValueError as exc:
        errors.append(str(exc))


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
    _check_int(errors, cfg, "power.deep_sleep_s", 0, 86400)
    if cfg["power"]["deep_sleep_s"] != 0 and cfg["role"] != "garden":
        errors.append("power.deep_sleep_s: only garden nodes deep-sleep (a %s node's payload "
                      "needs it awake); set 0" % cfg["role"])
    _check_sensors(errors, cfg["sensors"])
    _check_safety(errors, cfg["safety"])
    _check_autonomy(errors, cfg)
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
    cfg = validate(given)
    # What the gateway's desired config set (sensornode.desired), over the file's own fields.
    from sensornode import desired

    version, overrides = desired.load(path[: len(path) - len(CONFIG_FILE)]
                                      if path.endswith(CONFIG_FILE) else "")
    if overrides and isinstance(given, dict):
        merged = dict(given)
        merged.update(overrides)
        try:
            cfg = validate(merged)
        except ConfigError as exc:  # never stop a node over it: run on the file alone
            print("[config] desired config %s not applied: %s" % (version, exc))
            version = ""
    cfg["config_version"] = version
    return cfg
