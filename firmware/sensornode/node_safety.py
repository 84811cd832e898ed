# The node's side of its safety layer that is not the layer itself: the limits it is built
# with (the `safety` config section over defaults from the older irrigation / diffusers
# fields), and the site e-stop topic (nt/<site>/estop, docs/protocol.md "estop") turned into
# latches and resets. MicroPython subset.
from sensornode import protocol
from sensornode.safety import parse_limits

SITE = "site "  # source prefix of an e-stop latched from the site topic


def limits_for(cfg, actuators, role_defaults=None):
    """The Safety limits for this node's actuators ({"pumps": [..], "diffusers": [..]}):
    cfg["safety"] wins, then role_defaults ({actuator: {field: value}}), then the limits the
    config had before the safety section existed. SafetyConfigError names a bad field."""
    section = cfg["safety"]
    derived = {"pumps": {"max_on_s": cfg["irrigation"]["max_run_s"]},
               "diffusers": {"max_duty_pct": cfg["diffusers"]["max_duty_pct"],
                             "max_on_s": cfg["diffusers"]["max_run_s"]}}
    if cfg["autonomy"]:
        derived["pumps"]["flow_l_per_min"] = cfg["autonomy"]["flow_l_per_min"]
    merged = {}
    for key in section:
        merged[key] = section[key]
    for kind in ("pumps", "diffusers"):
        given = section.get(kind, {})
        out = {}
        for name in given:
            out[name] = given[name]  # a name the board lacks: parse_limits says so
        for name in actuators[kind]:
            own = {}
            for source in (derived[kind], (role_defaults or {}).get(name, {}),
                           given.get(name, {})):
                for field in source:
                    own[field] = source[field]
            out[name] = own
        merged[kind] = out
    return parse_limits(merged, pumps=actuators["pumps"], diffusers=actuators["diffusers"])


def site_estop(safety, payload, log):
    """Apply one message of the site e-stop topic; returns whether the site says latched
    (None for an empty payload: a deleted retained message changes nothing)."""
    if not payload:
        return None
    try:
        msg = protocol.decode_estop(payload)
    except protocol.ProtocolError as exc:
        # The safe reading of nonsense on this topic is "stop".
        log("unreadable site e-stop taken as latched:", exc)
        safety.estop(SITE + "unreadable e-stop message")
        return True
    if msg["latched"]:
        source = "%sts=%d by %s" % (SITE, int(msg["ts"]), msg["by"])
        if msg["reason"]:
            source += ": " + msg["reason"]
        safety.estop(source)
        return True
    latched_by = safety.estop_by
    if not latched_by:
        return False
    if not latched_by.startswith(SITE):
        # Latched by a command, a local input or a damaged state file: it needs its own reset.
        log("site e-stop reset does not clear an e-stop latched by", latched_by)
        return False
    latched_ts = _latched_ts(latched_by)
    if latched_ts is not None and msg["ts"] < latched_ts:
        log("site e-stop reset older than the e-stop it would clear: ignored")
        return False
    safety.reset_estop("%sreset by %s" % (SITE, msg["by"]))
    return False


def _latched_ts(source):
    # "site ts=1795300000 by button: reason"
    head = source[len(SITE):]
    if not head.startswith("ts="):
        return None
    digits = head[3:].split(" ")[0]
    return int(digits) if digits.isdigit() else None
