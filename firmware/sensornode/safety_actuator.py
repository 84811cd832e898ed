# One actuator as the safety layer sees it (limits, the running run, water counted against
# the budget), and what a state file saved by an earlier boot means for it now. MicroPython
# subset; the decisions are in safety.py.
PUMP = "pump"
DIFFUSER = "diffuser"


class Actuator:
    """One output's limits and run state (the Safety object decides; this keeps count)."""


    def __init__(self, name, kind, lim):
        self.name = name
        self.kind = kind
        self.lim = lim
        self.max_on_ms = lim["max_on_s"] * 1000
        self.min_off_ms = lim["min_off_s"] * 1000
        self.value = 0
        self.on = False
        self.source = ""
        self.start_ms = 0
        self.start_wall = None  # wall clock at the run's start, for the state file
        self.allowed_ms = 0
        self.end_ms = 0
        self.end_by = ""  # the limit that set end_ms ("" when it ends as asked)
        self.off_ms = None  # monotonic ms of the last off, for min_off_s
        self.off_wall = None
        # Water in integer ml: single-precision floats (ESP32, RP2) cannot count it exactly.
        self.flow = 1
        self.budget_ml = 0
        self.used_ml = 0  # counted against the budget day, including the running charge
        self.charge_from_ms = 0
        self.charged_ml = 0  # what the running run has charged since charge_from_ms
        if kind == PUMP:
            self.flow = int(lim["flow_l_per_min"] * 1000 + 0.5)  # ml per minute
            self.budget_ml = int(lim["daily_budget_l"] * 1000 + 0.5)
            self.interlocks = [(lim["dry_input"], "pump dry")]
        else:
            self.interlocks = [(lim["tank_input"], "tank empty"),
                               (lim["armed_input"], "payload disarmed")]

    def blocked(self, inputs):
        """The interlock that forbids running now ("" if none): an input never read forbids."""
        for name, label in self.interlocks:
            if name and not inputs.get(name, False):
                unread = "" if name in inputs else ", not read yet"
                return "%s (%s%s)" % (label, name, unread)
        return ""

    def water(self, ms):
        """ml pumped in `ms`, rounded up (what is charged is never less than what flowed)."""
        return (ms * self.flow + 59999) // 60000 if ms > 0 else 0

    def plan(self, now, ms):
        """(end, the limit that set it or "", water used if so) of a run asked for `ms` from
        now: never past max_on_s from the run's start, nor past the day's budget."""
        start = self.start_ms if self.on else now
        end = now + ms
        by = ""
        if start + self.max_on_ms < end:
            end, by = start + self.max_on_ms, "max_on_s"
        used = self.used_ml
        if self.kind == PUMP:
            if self.on:  # the running charge shrinks to what has flowed so far
                used += self.water(now - self.charge_from_ms) - self.charged_ml
            left = self.budget_ml - used
            budget_end = now + (left * 60000 // self.flow if left > 0 else 0)
            if budget_end < end:
                end, by = budget_end, "daily_budget_l"
        return end, by, used

    def start(self, now, wall, end, by, source):
        """Run (or go on running) until `end`; a pump's water to then is charged now."""
        if self.kind == PUMP:
            if self.on:
                delivered = self.water(now - self.charge_from_ms)
                self.used_ml += delivered - self.charged_ml
                self.charged_ml = delivered
            else:
                self.charge_from_ms = now
                self.charged_ml = 0
            extra = self.water(end - now)
            self.used_ml += extra
            self.charged_ml += extra
        if not self.on:
            self.start_ms = now
            self.start_wall = wall
        self.on, self.source, self.end_ms, self.end_by = True, source, end, by
        self.allowed_ms = end - self.start_ms

    def stop(self, now, wall):
        if self.kind == PUMP and self.on:
            # Refund what the charge covered but did not flow (or charge a late tick's extra).
            delivered = self.water(now - self.charge_from_ms)
            self.used_ml = max(0, self.used_ml + delivered - self.charged_ml)
            self.charged_ml = 0
        self.on = False
        self.source = ""
        self.off_ms = now
        self.off_wall = wall

    def new_day(self, now, carried_ml):
        """A new budget day: what a run interrupted by the last reboot may have pumped in it,
        and what the running run will pump from now on, count against it."""
        if self.kind != PUMP:
            return
        self.used_ml = carried_ml
        if self.on:
            self.charge_from_ms = now
            self.charged_ml = self.water(self.end_ms - now)
            self.used_ml += self.charged_ml

    def level(self, value):
        """The output `value` asks for, or None when it is not one this actuator takes."""
        if isinstance(value, bool):
            return 1 if value and self.kind == PUMP else (0 if not value else None)
        if not isinstance(value, (int, float)):
            return None
        if self.kind == PUMP:
            return int(value) if value in (0, 1) else None
        return value if 0 <= value <= 100 else None

    def record(self):
        return {"run": self.on, "start": self.start_wall, "allowed_ms": self.allowed_ms,
                "off": self.off_wall, "used_ml": self.used_ml}

    def limit_text(self, field):
        return "%s=%s" % (field, self.lim[field])


def restore(acts, state, now, wall, event):
    """Take a state file's per-actuator entries into `acts` at boot; returns {pump: ml an
    interrupted run may have pumped} (its charge if the day turns over at this boot)."""
    carry = {}
    saved = state["act"]
    for name in acts:
        a = acts[name]
        entry = saved.get(name)
        if entry is None:
            continue  # new in the config: nothing known of it
        a.used_ml = entry["used_ml"] if a.kind == PUMP else 0
        a.start_wall = entry["start"]
        a.allowed_ms = entry["allowed_ms"]
        if entry["run"]:
            # Not resumed; it may have run all it was allowed, and went off at the latest by
            # this boot, so min_off_s counts from here.
            a.off_ms = now
            a.off_wall = wall
            if a.kind == PUMP:
                carry[name] = a.water(a.allowed_ms)
            event("actuator", name, "stopped", "stopped: interrupted by a reboot, not resumed "
                  "(%d s allowed)" % (a.allowed_ms // 1000))
        else:
            a.off_wall = entry["off"]
            a.off_ms = _off_since(entry["off"], now, wall, a.min_off_ms)
    return carry


def _off_since(off_wall, now, wall, min_off_ms):
    """Monotonic ms of an off time saved by an earlier boot (None: long enough ago)."""
    if off_wall is None:
        return None
    if wall is None or wall < off_wall:
        return now  # unknown how long ago: min_off_s counts from the boot
    ago_ms = int((wall - off_wall) * 1000)
    return None if ago_ms >= min_off_ms else now - ago_ms
