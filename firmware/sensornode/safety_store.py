# The safety layer's state on flash: what must survive a reboot so that a reboot never extends a
# run, resets the day's water or clears a latched e-stop. One small JSON file, written with
# tmp + rename (a power cut leaves the old or the new file, never half of one) and checked
# field by field when read back: anything that does not fit is reported as damaged, never
# half-used. MicroPython subset.
#
# {"v": 1, "day": 20400 | null, "estop": "" | "<who latched it>",
#  "act": {"<actuator>": {"run": bool, "start": unix s | null, "allowed_ms": int,
#                         "off": unix s | null, "used_ml": int}}}
#
# run: a run was on when this was written (start: its wall-clock start, allowed_ms: how long
# it was allowed from there); off: the wall-clock time it last went off; used_ml: a pump's
# water counted against `day` (the budget day, in Unix days).
import json
import os

VERSION = 1


class DamagedState(ValueError):
    """The state file exists but cannot be trusted; the message says why."""


def load(path):
    """The saved state, None when there is none (a first boot), or DamagedState."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    try:
        state = json.loads(text)
    except ValueError:
        raise DamagedState("not valid JSON (%d bytes)" % len(text)) from None
    problem = _problem(state)
    if problem:
        raise DamagedState(problem)
    return state


def save(path, state):
    """Write `state` atomically; OSError when the flash refuses (the old file stays)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(state))
    os.rename(tmp, path)  # atomic on LittleFS and POSIX


def _problem(state):
    if not isinstance(state, dict):
        return "not an object"
    if state.get("v") != VERSION:
        return "version %r, expected %d" % (state.get("v"), VERSION)
    day = state.get("day")
    if day is not None and not _count(day):
        return "day: %r" % (day,)
    if not isinstance(state.get("estop"), str):
        return "estop: %r" % (state.get("estop"),)
    acts = state.get("act")
    if not isinstance(acts, dict):
        return "act: not an object"
    for name in acts:
        entry = acts[name]
        if not isinstance(entry, dict):
            return "act.%s: not an object" % name
        if not isinstance(entry.get("run"), bool):
            return "act.%s.run: %r" % (name, entry.get("run"))
        for key in ("allowed_ms", "used_ml"):
            if not _count(entry.get(key)):
                return "act.%s.%s: %r" % (name, key, entry.get(key))
        for key in ("start", "off"):
            if key not in entry:
                return "act.%s.%s: missing" % (name, key)
            value = entry[key]
            if value is not None and not _number(value):
                return "act.%s.%s: %r" % (name, key, value)
    return None


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
