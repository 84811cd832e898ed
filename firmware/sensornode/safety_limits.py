# The safety layer's limits: the `safety` section of the node config, validated as a whole so a
# bad field is reported by name (with the allowed range as the fix) and no half-valid set of
# limits is ever used. MicroPython subset.
#
# {"failsafe_s": 60,
#  "pumps": {"pump": {"max_on_s": 600, "min_off_s": 60, "flow_l_per_min": 1.0,
#                     "daily_budget_l": 20, "dry_input": "water_float"}},
#  "diffusers": {"diffuser_1": {"max_duty_pct": 80, "max_on_s": 600, "min_off_s": 0,
#                               "tank_input": "tank_switch_1", "armed_input": "armed"}}}
#
# Inputs name the interlock signals the node feeds to Safety.set_input (True = running is
# permitted: water present, liquid in the tank, payload armed). "" means no such interlock,
# except armed_input, which every diffuser must have.
from sensornode import protocol

PUMP_DEFAULTS = {
    "max_on_s": 600,
    "min_off_s": 60,
    "flow_l_per_min": 1.0,
    "daily_budget_l": 20,
    "dry_input": "",
}
DIFFUSER_DEFAULTS = {
    "max_duty_pct": 80,
    "max_on_s": 600,
    "min_off_s": 0,
    "tank_input": "",
    "armed_input": "armed",
}
FAILSAFE_S = 60
_TOP_FIELDS = ("failsafe_s", "pumps", "diffusers")


class SafetyConfigError(ValueError):
    """Safety limits that cannot be used; the message names every bad field and its fix."""


def parse_limits(section, pumps=None, diffusers=None, where="safety"):
    """The limits of `section` with defaults filled in, or SafetyConfigError listing every
    problem. pumps/diffusers: the actuator names this board has; when given, each gets
    default limits unless configured, and a configured name the board lacks is an error."""
    errors = []
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise SafetyConfigError(
            '%s: must be an object like {"failsafe_s": %d, "pumps": {}, "diffusers": {}}'
            % (where, FAILSAFE_S)
        )
    for key in section:
        if key not in _TOP_FIELDS:
            errors.append("%s.%s: unknown field; known fields here: %s"
                          % (where, key, ", ".join(_TOP_FIELDS)))
    limits = {"failsafe_s": section.get("failsafe_s", FAILSAFE_S)}
    _check_number(errors, where + ".failsafe_s", limits["failsafe_s"], 5, 86400, True)
    limits["pumps"] = _actuators(errors, section, where, "pumps", pumps, PUMP_DEFAULTS,
                                 _check_pump)
    limits["diffusers"] = _actuators(errors, section, where, "diffusers", diffusers,
                                     DIFFUSER_DEFAULTS, _check_diffuser)
    for name in limits["pumps"]:
        if name in limits["diffusers"]:
            errors.append("%s.diffusers.%s: the name is taken by a pump, give every actuator "
                          "its own name" % (where, name))
    if errors:
        raise SafetyConfigError("; ".join(errors))
    return limits


def _actuators(errors, section, where, kind, present, defaults, check):
    given = section.get(kind, {})
    path = where + "." + kind
    if not isinstance(given, dict):
        errors.append('%s: must be an object of actuator name -> limits, like {"%s": %s}'
                      % (path, "pump" if kind == "pumps" else "diffuser_1", _show(defaults)))
        return {}
    names = list(given)
    if present is not None:
        for name in names:
            if name not in present:
                errors.append("%s.%s: this board has no such actuator; it has: %s"
                              % (path, name, ", ".join(sorted(present)) or "none"))
        names = list(present)
    result = {}
    for name in names:
        field_path = path + "." + name
        if not protocol.valid_name(name):
            errors.append("%s: %r is not a valid actuator name; use 1-32 characters of a-z, "
                          "0-9, '-' or '_'" % (field_path, name))
            continue
        own = given.get(name, {})
        if not isinstance(own, dict):
            errors.append("%s: must be an object like %s" % (field_path, _show(defaults)))
            continue
        merged = {}
        for key in defaults:
            merged[key] = own.get(key, defaults[key])
        for key in own:
            if key not in defaults:
                errors.append("%s.%s: unknown field; known fields here: %s"
                              % (field_path, key, ", ".join(sorted(defaults))))
        check(errors, field_path, merged)
        result[name] = merged
    return result


def _check_pump(errors, path, lim):
    _check_number(errors, path + ".max_on_s", lim["max_on_s"], 1, protocol.MAX_IRRIGATE_S, True)
    _check_number(errors, path + ".min_off_s", lim["min_off_s"], 0, 86400, True)
    _check_number(errors, path + ".flow_l_per_min", lim["flow_l_per_min"], 0.01, 1000, False)
    _check_number(errors, path + ".daily_budget_l", lim["daily_budget_l"], 0, 100000, False)
    _check_input(errors, path + ".dry_input", lim["dry_input"], True)


def _check_diffuser(errors, path, lim):
    _check_number(errors, path + ".max_duty_pct", lim["max_duty_pct"], 0, 100, False)
    _check_number(errors, path + ".max_on_s", lim["max_on_s"], 1, protocol.MAX_DIFFUSE_S, True)
    _check_number(errors, path + ".min_off_s", lim["min_off_s"], 0, 86400, True)
    _check_input(errors, path + ".tank_input", lim["tank_input"], True)
    # Diffusers run only while the payload is armed: there is no way to switch that off.
    _check_input(errors, path + ".armed_input", lim["armed_input"], False)


def _check_number(errors, path, value, low, high, whole):
    if whole:
        good = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        if not good:
            errors.append("%s: must be a whole number from %d to %d, got %r"
                          % (path, low, high, value))
        return
    good = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    if not good:
        errors.append("%s: must be a number from %s to %s, got %r" % (path, low, high, value))


def _check_input(errors, path, value, allow_empty):
    if allow_empty and value == "":
        return
    if not protocol.valid_name(value):
        errors.append(
            "%s: must be %san input name (1-32 characters of a-z, 0-9, '-' or '_', e.g. the "
            "sensor component that reads it), got %r"
            % (path, 'empty (no interlock) or ' if allow_empty else "", value)
        )


def _show(defaults):
    parts = []
    for key in sorted(defaults):
        value = defaults[key]
        parts.append('"%s": %s' % (key, '"%s"' % value if isinstance(value, str) else value))
    return "{" + ", ".join(parts) + "}"
