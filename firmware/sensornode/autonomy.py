# Local autonomy of a garden node: while the gateway is unreachable the node waters by its own
# per-plant profile, within a daily water budget, and keeps a log of what it did to report
# once the gateway is back. While the gateway is reachable it is in charge and this asks for
# nothing. Pure: the caller passes the time, the moisture and whether the gateway is reachable,
# sends each request through the safety layer and tells this what came of it.
#
#   auto = GardenAutonomy({"name": "tomatoes", "moisture_low": 30, "moisture_high": 45,
#                          "soak_s": 900, "max_run_s": 60, "budget_l_per_day": 20,
#                          "flow_l_per_min": 2})
#   request = auto.tick(now_s, moisture_pct, gateway_reachable)
#   if request:                                  # ("local tomatoes", seconds)
#       ok, detail = safety.request("pump", 1, request[0], request[1])
#       if not ok:
#           auto.refused(now_s, detail)
#   ...  auto.stopped(now_s, reason)             # the run ended early (e-stop, dry run)
#   for entry in auto.report():                  # once the gateway is back; then
#       publish(entry)                           # auto.reported(len(sent))
#
# Profile: moisture band with hysteresis (asks to water once moisture is below moisture_low,
# keeps asking, one run per soak, until it is above moisture_high); soak_s after each run
# (from its start to its end plus soak_s) no reading counts and nothing is asked: water takes
# time to reach the probe; max_run_s per request; budget_l_per_day litres in any 24 h (a
# rolling window, so no wall-clock midnight is needed), charged when a run is asked for at
# flow_l_per_min; takeover_s: how long the gateway must have been unreachable before the node
# acts (a short blip is not an outage).
#
# Time: now_s is seconds on a clock that moves forward (compat.unix_time() once synced, so the
# state saved with to_state() stays meaningful across reboots). If it jumps back, a run that
# now lies in the future is re-dated to now: it keeps counting against the budget for a full
# 24 h, never less.
#
# MicroPython subset: no typing at runtime.
try:
    from typing import Any, Dict, List, Optional, Tuple
except ImportError:
    pass

DAY_S = 86400
LOG_MAX = 48  # runs kept for the report; older ones are counted in `dropped`
MIN_RUN_S = 1

# field: (lowest, highest, what it is)
PROFILE_FIELDS = {
    "moisture_low": (0, 100, "% soil moisture below which watering starts"),
    "moisture_high": (0, 100, "% soil moisture above which watering stops"),
    "soak_s": (0, DAY_S, "seconds after a run before moisture counts again"),
    "max_run_s": (MIN_RUN_S, 3600, "seconds of one run at most"),
    "budget_l_per_day": (0, 100000, "litres in any 24 h at most"),
    "flow_l_per_min": (0.001, 10000, "litres per minute the pump delivers"),
    "takeover_s": (0, DAY_S, "seconds without the gateway before the node waters by itself"),
}
DEFAULT_TAKEOVER_S = 60


def _is_number(value: "Any") -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) \
        and value == value and -1e30 < value < 1e30


def check_profile(profile: "Any", where: str = "autonomy") -> "Dict[str, Any]":
    """The profile with its defaults; ValueError naming the first bad field and the fix."""
    if not isinstance(profile, dict):
        raise ValueError('%s: must be an object like {"name": "tomatoes", "moisture_low": 30, '
                         '...}, got %r' % (where, profile))
    name = profile.get("name")
    if not isinstance(name, str) or not name or " " in name or len(name) > 32:
        raise ValueError("%s.name: must be a profile name of 1..32 characters without spaces, "
                         "got %r" % (where, name))
    out = {"name": name, "takeover_s": DEFAULT_TAKEOVER_S}  # type: Dict[str, Any]
    for key in profile:
        if key != "name" and key not in PROFILE_FIELDS:
            raise ValueError("%s.%s: unknown field; known: name, %s"
                             % (where, key, ", ".join(sorted(PROFILE_FIELDS))))
    for key in sorted(PROFILE_FIELDS):
        low, high, what = PROFILE_FIELDS[key]
        if key not in profile:
            if key in out:
                continue
            raise ValueError("%s.%s: missing; set the %s (%g..%g)" % (where, key, what, low, high))
        value = profile[key]
        if not _is_number(value) or not low <= value <= high:
            raise ValueError("%s.%s: must be %g..%g (%s), got %r"
                             % (where, key, low, high, what, value))
        out[key] = value
    if out["moisture_low"] >= out["moisture_high"]:
        raise ValueError("%s.moisture_high: must be above moisture_low (%g), got %g"
                         % (where, out["moisture_low"], out["moisture_high"]))
    return out


class GardenAutonomy:
    def __init__(self, profile: "Any", state: "Optional[Dict[str, Any]]" = None) -> None:
        self.profile = check_profile(profile)
        self.name = self.profile["name"]
        self.reason = "local " + self.name
        self._lps = self.profile["flow_l_per_min"] / 60.0
        # [start_s, seconds, litres, moisture at the start] of every run in the last 24 h
        self._runs = []  # type: List[List[float]]
        self._log = []  # type: List[Dict[str, Any]]
        self.dropped = 0
        self.watering = False  # inside the band's lower half on the way up
        self._busy_until = None  # type: Optional[float]
        self._away_since = None  # type: Optional[float]
        self._last_now = None  # type: Optional[float]
        if state:
            self._restore(state)

    # ---- what the caller persists ------------------------------------------------------

    def to_state(self) -> "Dict[str, Any]":
        """A JSON-able snapshot (budget window, busy time, unreported log) to save on flash
        so a reboot neither forgets the water used nor the report owed."""
        return {"runs": [list(r) for r in self._runs], "log": list(self._log),
                "dropped": self.dropped, "busy_until": self._busy_until,
                "watering": self.watering}

    def _restore(self, state: "Dict[str, Any]") -> None:
        runs = state.get("runs") or []
        self._runs = [[float(x) for x in r] for r in runs if isinstance(r, list) and len(r) == 4]
        self._log = [e for e in (state.get("log") or []) if isinstance(e, dict)][-LOG_MAX:]
        self.dropped = int(state.get("dropped") or 0)
        busy = state.get("busy_until")
        self._busy_until = None
        if isinstance(busy, (int, float)) and _is_number(busy):
            self._busy_until = float(busy)
        self.watering = bool(state.get("watering"))

    # ---- budget ------------------------------------------------------------------------

    def _age_runs(self, now_s: float) -> None:
        kept = []
        for run in self._runs:
            if run[0] > now_s:
                run[0] = now_s  # the clock went back: count it from now, a full day
            if now_s - run[0] < DAY_S:
                kept.append(run)
        self._runs = kept
        if self._busy_until is not None and self._busy_until - now_s > \
                self.profile["max_run_s"] + self.profile["soak_s"]:
            self._busy_until = now_s + self.profile["max_run_s"] + self.profile["soak_s"]

    def used_l(self, now_s: float) -> float:
        """Litres charged in the 24 h up to now_s."""
        self._age_runs(now_s)
        return sum(run[2] for run in self._runs)

    def left_l(self, now_s: float) -> float:
        return max(0.0, self.profile["budget_l_per_day"] - self.used_l(now_s))

    # ---- the loop ----------------------------------------------------------------------

    def busy(self, now_s: float) -> bool:
        """A run or its soak is in progress: no request, moisture does not count."""
        return self._busy_until is not None and now_s < self._busy_until

    def tick(self, now_s: float, moisture: "Optional[float]",
             gateway_reachable: bool) -> "Optional[Tuple[str, int]]":
        """A run to ask the safety layer for now: (reason, seconds), or None."""
        self._last_now = now_s
        self._age_runs(now_s)
        if gateway_reachable:
            self._away_since = None
            self.watering = False  # the gateway's rules decide from here on
            return None
        if self._away_since is None or self._away_since > now_s:
            self._away_since = now_s
        if now_s - self._away_since < self.profile["takeover_s"]:
            return None
        if self.busy(now_s) or moisture is None or not _is_number(moisture):
            return None  # soaking, or no reading: never water blind
        if moisture > self.profile["moisture_high"]:
            self.watering = False
        elif moisture < self.profile["moisture_low"]:
            self.watering = True
        if not self.watering:
            return None
        left = self.profile["budget_l_per_day"] - sum(run[2] for run in self._runs)
        seconds = int(min(self.profile["max_run_s"], left / self._lps))
        while seconds >= MIN_RUN_S and seconds * self._lps > left:
            seconds -= 1  # float rounding must never put a run over the budget
        if seconds < MIN_RUN_S:
            return None
        self._runs.append([float(now_s), float(seconds), seconds * self._lps, float(moisture)])
        self._busy_until = now_s + seconds + self.profile["soak_s"]
        self._log_run(now_s, seconds, moisture)
        return self.reason, seconds

    def _log_run(self, now_s: float, seconds: int, moisture: float) -> None:
        self._log.append({"profile": self.name, "start_s": now_s, "seconds": seconds,
                          "litres": round(seconds * self._lps, 3),
                          "moisture": round(moisture, 1), "result": "ran"})
        if len(self._log) > LOG_MAX:
            self._log.pop(0)
            self.dropped += 1

    def refused(self, now_s: float, detail: str) -> None:
        """The safety layer refused the last request: no water was used, it is not charged;
        the node waits one soak period before asking again (an interlock that holds is not
        asked every tick)."""
        if self._runs:
            self._runs.pop()
        if self._log:
            entry = self._log[-1]
            entry["seconds"] = 0
            entry["litres"] = 0.0
            entry["result"] = "refused: " + detail
        self._busy_until = now_s + self.profile["soak_s"]

    def stopped(self, now_s: float, reason: str) -> None:
        """The last run ended before its time (e-stop, dry run, a gateway command): the log
        and the budget keep what really ran, and the soak starts now."""
        if not self._runs:
            return
        run = self._runs[-1]
        ran = max(0.0, min(run[1], now_s - run[0]))
        run[1] = ran
        run[2] = ran * self._lps
        if self._log:
            entry = self._log[-1]
            entry["seconds"] = round(ran, 1)
            entry["litres"] = round(run[2], 3)
            entry["result"] = "stopped: " + reason
        self._busy_until = now_s + self.profile["soak_s"]

    # ---- reporting ---------------------------------------------------------------------

    def report(self) -> "List[Dict[str, Any]]":
        """What the node did on its own, oldest first, not yet confirmed as reported."""
        return list(self._log)

    def reported(self, count: int) -> None:
        """The gateway has the first `count` entries of report(): forget them."""
        del self._log[:max(0, count)]
        self.dropped = 0
