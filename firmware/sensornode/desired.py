# The node's side of the desired config the gateway publishes retained on
# nt/<site>/<node>/config (edge_gateway/config_desired.py makes it): the fields the gateway may
# set here are the report interval and, for a garden node, the plant profile it waters by while
# the gateway is away (sensornode.autonomy). A document is checked as a whole; a bad one is
# refused with the reason and nothing of it is used. A good one is saved to flash (tmp +
# rename) and merged over config.json at the next boot (config.load), and the node reboots on
# purpose to apply it, so that every module starts from one consistent config. Its version is
# reported in the birth; the same version again changes nothing, so there is no reboot loop.
# MicroPython subset.
import json
import os

DESIRED_FILE = "desired.json"
_MAX_INTERVAL_S = 86400
# gateway plant profile field -> autonomy profile field
_PLANT_FIELDS = (
    ("moisture_low_pct", "moisture_low"),
    ("moisture_high_pct", "moisture_high"),
    ("soak_s", "soak_s"),
    ("max_run_s", "max_run_s"),
    ("daily_budget_l", "budget_l_per_day"),
    ("flow_l_per_min", "flow_l_per_min"),
)


def overrides_from(payload, node, role):
    """(version, {config field: value}) from a desired config message; ValueError naming the
    field when the document cannot be used by this node."""
    try:
        doc = json.loads(payload)
    except ValueError:
        raise ValueError("config: not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("config: must be a JSON object")
    version = doc.get("version")
    if not isinstance(version, str) or not 1 <= len(version) <= 32:
        raise ValueError("config.version: must be text of 1..32 characters, got %r" % (version,))
    if doc.get("node") != node:
        raise ValueError("config.node: is %r, this node is %r" % (doc.get("node"), node))
    if doc.get("role") != role:
        raise ValueError("config.role: is %r, this node is a %s node" % (doc.get("role"), role))
    overrides = {}
    interval = doc.get("report_interval_s")
    if interval is not None:
        if not isinstance(interval, int) or isinstance(interval, bool) \
                or not 1 <= interval <= _MAX_INTERVAL_S:
            raise ValueError("config.report_interval_s: must be 1..%d s, got %r"
                             % (_MAX_INTERVAL_S, interval))
        overrides["report_interval_s"] = interval
    plant = doc.get("plant")
    if plant is not None:
        if role != "garden":
            raise ValueError("config.plant: only a garden node waters by a plant profile")
        overrides["autonomy"] = _autonomy_profile(plant)
    return version, overrides


def _autonomy_profile(plant):
    from sensornode.autonomy import check_profile  # garden nodes only

    if not isinstance(plant, dict):
        raise ValueError("config.plant: must be an object")
    profile = {"name": plant.get("name")}
    for given, ours in _PLANT_FIELDS:
        if given not in plant:
            raise ValueError("config.plant.%s: missing" % given)
        profile[ours] = plant[given]
    return check_profile(profile, "config.plant")


def load(root=""):
    """(version, overrides) saved by the last applied config, or ("", {})."""
    try:
        with open(root + DESIRED_FILE) as f:
            saved = json.loads(f.read())
        version, overrides = saved["version"], saved["overrides"]
    except (OSError, ValueError, KeyError, TypeError):
        return "", {}
    if not isinstance(version, str) or not isinstance(overrides, dict):
        return "", {}
    return version, overrides


def save(root, version, overrides):
    path = root + DESIRED_FILE
    with open(path + ".tmp", "w") as f:
        f.write(json.dumps({"version": version, "overrides": overrides}))
    os.rename(path + ".tmp", path)  # a power cut leaves the old or the new one
