# The node's one safety layer: every actuator output (pumps on/off, diffuser duty) is decided
# here, whoever asks (a gateway command, a rule, the node's own profile, a show, the boot), so
# no command, stall or fault can leave anything running past its limits. MicroPython subset,
# no I/O but its state file: time comes in as arguments (or from the injected clocks), the
# hardware is driven through the injected `apply(actuator, value)`, and every change, refusal
# and forced stop goes out through `on_event(kind, name, state, detail)`.
#
# Durations use monotonic ms (compat.monotonic_ms: never wraps in practice). The daily water
# budget uses the wall clock's day, as a high-water mark: it resets only when the clock shows a
# day later than any seen, so a clock stepped back (or flipping between two sources) never
# gives a second budget, while a forward jump by days starts a new one. Until the wall clock
# is known, water keeps counting against the last day seen.
#
# A pump's run charges its whole allowed water to the day when it starts (refunded for the
# part it did not run when it stops), so a reboot mid-run cannot lose what it used. After a
# reboot nothing is resumed: outputs boot off, an interrupted run keeps its full charge and its
# min_off_s counts from the boot. A damaged state file latches the e-stop (an operator has to
# look: it may have held a latched e-stop) and counts today's budget as used.
#
# Failsafe: from comms(False) on, the gateway is unreachable; failsafe_s later every run not
# held by a "local <profile>" request stops, and only local requests are granted until
# comms(True). At boot the gateway counts as unreachable until comms(True).
from sensornode import compat, safety_store
from sensornode.safety_actuator import DIFFUSER, PUMP, Actuator, restore
from sensornode.safety_limits import SafetyConfigError as SafetyConfigError  # part of the API
from sensornode.safety_limits import parse_limits as parse_limits  # part of this module's API
from sensornode.timesync import RTC_PLAUSIBLE_S

SOURCE_PREFIXES = ("cmd ", "rule ", "local ", "show ")
BOOT = "boot"
LOCAL = "local "
DAY_S = 86400
MIN_GRANT_MS = 1000  # a run shorter than this is refused rather than blinked on
DAMAGED = "damaged state file"


def _ignore(*args):
    pass


class Safety:
    def __init__(self, limits, path="safety.json", on_event=None, apply=None,
                 mono=compat.monotonic_ms, wall=compat.unix_time, now_ms=None):
        """limits: parse_limits(...). wall: Unix seconds, or None while unknown (the node's
        timesync Clock.now). apply(actuator, value) drives the hardware; it is called with 0
        for every actuator here, before anything else."""
        self.failsafe_s = limits["failsafe_s"]
        self._acts = {}
        for name in limits["pumps"]:
            self._acts[name] = Actuator(name, PUMP, limits["pumps"][name])
        for name in limits["diffusers"]:
            self._acts[name] = Actuator(name, DIFFUSER, limits["diffusers"][name])
        # One fixed order (MicroPython dicts keep none), so events come alike on every port.
        self._list = [self._acts[name] for name in sorted(self._acts)]
        self._path = path
        self._event = on_event or _ignore
        self._apply = apply or _ignore
        self._mono = mono
        self._wall = wall
        self._inputs = {}
        self.estop_by = ""  # who latched the e-stop; "" while clear
        self.disabled = ""  # why the node is in safe mode; "" while not
        self.day = None  # the budget day (Unix days), None until the wall clock was known
        self._carry = {}  # pump -> ml an interrupted run may have used in a day not seen yet
        self._changes = {}
        self._saved = None
        self._save_failed = False
        self.saves = 0
        now = mono() if now_ms is None else now_ms
        self._down_since = now
        self._boot(now)

    # ---- the API -----------------------------------------------------------------------------

    def request(self, actuator, value, source, seconds, expires_at=None, now_ms=None):
        """Ask for `actuator` at `value` (pump 0/1, diffuser duty 0..100) for `seconds`;
        returns (ok, reason). source: "cmd <id>", "rule <name>", "local <profile>",
        "show <name>" or "boot". Off (value 0) is always granted."""
        now, wall = self._now(now_ms)
        a = self._acts.get(actuator)
        if a is None:
            return self._refuse("safety", source, "refused: no actuator %r; this node has %s"
                                % (actuator, ", ".join(sorted(self._acts)) or "none"))
        level = a.level(value)
        if level is None:
            return self._refuse(a.name, source, "refused: value %r; %s takes %s" % (
                value, a.name, "0 or 1" if a.kind == PUMP else "a duty from 0 to 100"))
        if level == 0:
            if not a.on:
                return True, "%s already off" % a.name
            self._off(a, now, wall, "off", "%s: off" % source)
            self._persist_quietly()
            return True, "%s off" % a.name
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
            return self._refuse(a.name, source, "refused: seconds must be a whole number of at "
                                "least 1, got %r" % (seconds,))
        reason = self._why_not(a, source, expires_at, now, wall)
        if reason:
            return self._refuse(a.name, source, reason)
        return self._grant(a, level, source, seconds, now, wall)

    def tick(self, now_ms=None):
        """Enforce max-on, the budget, failsafe and interlocks; {actuator: value} changed."""
        self._now(now_ms)
        self._persist_quietly()
        return self._changes

    def set_input(self, name, ok, now_ms=None):
        """An interlock input: True when it permits running (water present, liquid in the
        tank, payload armed). Inputs never set count as not permitting."""
        self._inputs[name] = bool(ok)
        return self.tick(now_ms)

    def comms(self, up, now_ms=None):
        """Whether the gateway is reachable now; {actuator: value} changed."""
        now, wall = self._now(now_ms)
        if up:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = now
        self._enforce(now, wall)
        self._persist_quietly()
        return self._changes

    def estop(self, source, now_ms=None):
        """Latch the emergency stop: everything off, every request refused until reset."""
        now, wall = self._now(now_ms)
        if not self.estop_by:
            self.estop_by = source or "unknown"
            for a in self._list:
                if a.on:
                    self._off(a, now, wall, "stopped", "stopped: e-stop (%s)" % source)
            self._event("actuator", "estop", "latched", source)
            self._persist_quietly()
        return self._changes

    def reset_estop(self, source, now_ms=None):
        """Clear a latched e-stop (nothing switches back on); returns (ok, reason)."""
        self._now(now_ms)
        was = self.estop_by
        if not was:
            return True, "e-stop not latched"
        self.estop_by = ""
        self._event("actuator", "estop", "reset", "%s (latched by %s)" % (source, was))
        self._persist_quietly()
        return True, "e-stop reset (latched by %s)" % was

    def disable(self, reason, now_ms=None):
        """Safe mode (bootguard): everything off and refused until enable(); not saved here,
        the boot guard keeps it across reboots."""
        now, wall = self._now(now_ms)
        if not self.disabled:
            self.disabled = reason or "disabled"
            for a in self._list:
                if a.on:
                    self._off(a, now, wall, "stopped", "stopped: " + self.disabled)
            self._event("actuator", "safety", "disabled", self.disabled)
            self._persist_quietly()
        return self._changes

    def enable(self, source):
        if self.disabled:
            self._event("actuator", "safety", "enabled", "%s (was %s)" % (source, self.disabled))
            self.disabled = ""

    def allowed_max(self, actuator):
        """The highest value `actuator` may have now, interlocks, e-stop and caps considered
        (not min_off_s, max_on_s or the failsafe): a closed loop's output clamp."""
        a = self._acts[actuator]
        if self.estop_by or self.disabled or a.blocked(self._inputs):
            return 0
        return 1 if a.kind == PUMP else a.lim["max_duty_pct"]

    def outputs(self):
        """{actuator: value} the hardware must show."""
        out = {}
        for a in self._list:
            out[a.name] = a.value
        return out

    def next_due_ms(self):
        """Monotonic ms of the next forced change (a run's end or failsafe), None if none:
        tick() then at the latest."""
        due = None
        for a in self._list:
            if a.on:
                end = a.end_ms
                failsafe = self._failsafe_at(a)
                if failsafe is not None and failsafe < end:
                    end = failsafe
                if due is None or end < due:
                    due = end
        return due

    def water_used_ml(self):
        """{pump: ml counted against today's budget} (a running run's whole charge included)."""
        used = {}
        for a in self._list:
            if a.kind == PUMP:
                used[a.name] = a.used_ml
        return used

    # ---- decisions ---------------------------------------------------------------------------

    def _why_not(self, a, source, expires_at, now, wall):
        if self.estop_by:
            return "refused: e-stop latched (%s); reset it first" % self.estop_by
        if self.disabled:
            return "refused: " + self.disabled
        if source == BOOT:
            return "refused: boot never switches anything on"
        if not _known_source(source):
            return "refused: unknown source %r; use cmd/rule/local/show <name>" % (source,)
        if expires_at is not None:
            if wall is None:
                return "refused: cannot tell if stale, the node's clock is not set " \
                       "(expires_at=%s)" % expires_at
            if wall >= expires_at:
                return "refused: stale, expired %d s ago (expires_at=%s)" % (
                    int(wall - expires_at), expires_at)
        blocked = a.blocked(self._inputs)
        if blocked:
            return "refused: " + blocked
        if not source.startswith(LOCAL) and self._down_since is not None:
            away_ms = now - self._down_since
            if away_ms + MIN_GRANT_MS > self.failsafe_s * 1000:
                return "refused: failsafe_s=%d, gateway unreachable for %d s; only local " \
                       "requests run" % (self.failsafe_s, away_ms // 1000)
        if not a.on and a.off_ms is not None and now - a.off_ms < a.min_off_ms:
            return "refused: %s, off only %d s ago" % (
                a.limit_text("min_off_s"), (now - a.off_ms) // 1000)
        return ""

    def _grant(self, a, level, source, seconds, now, wall):
        end, by, used = a.plan(now, seconds * 1000)
        if end - now < MIN_GRANT_MS:
            if by == "max_on_s":
                why = "%s reached (on %d s); off for %s first" % (
                    a.limit_text("max_on_s"), (now - a.start_ms) // 1000,
                    a.limit_text("min_off_s"))
            else:
                why = "%s used up (%d ml today)" % (a.limit_text("daily_budget_l"), used)
            return self._refuse(a.name, source, "refused: " + why)
        note = ""
        if a.kind == DIFFUSER and level > a.lim["max_duty_pct"]:
            level = a.lim["max_duty_pct"]
            note = ", duty capped by max_duty_pct=%s" % level
            if level <= 0:
                return self._refuse(a.name, source, "refused: max_duty_pct=0")
        a.start(now, wall, end, by, source)
        try:
            self._persist()  # before the output: a run the file does not know never starts
        except OSError as exc:
            why = "cannot save the safety state (%s)" % exc
            self._off(a, now, wall, "stopped", "stopped: " + why)
            return self._refuse(a.name, source, "refused: " + why)
        self._output(a, level)
        if by:
            note += ", capped by " + a.limit_text(by)
        failsafe = self._failsafe_at(a)
        if failsafe is not None and failsafe < end:
            note += ", failsafe in %d s unless the gateway is back" % ((failsafe - now) // 1000)
        what = "on" if a.kind == PUMP else "at %s %%" % level
        detail = "%s %s for %d s%s" % (a.name, what, (end - now) // 1000, note)
        self._event("actuator", a.name, "on", "%s: %s" % (source, detail))
        return True, detail

    def _failsafe_at(self, a):
        if self._down_since is None or a.source.startswith(LOCAL):
            return None
        return self._down_since + self.failsafe_s * 1000

    def _enforce(self, now, wall):
        for a in self._list:
            if not a.on:
                continue
            blocked = a.blocked(self._inputs)
            failsafe = self._failsafe_at(a)
            if blocked:
                self._off(a, now, wall, "stopped", "stopped: " + blocked)
            elif failsafe is not None and now >= failsafe and failsafe <= a.end_ms:
                away_s = self.failsafe_s + (now - failsafe) // 1000
                self._off(a, now, wall, "stopped", "stopped: failsafe_s=%d, gateway unreachable "
                          "for %d s" % (self.failsafe_s, away_s))
            elif now >= a.end_ms:
                if a.end_by:
                    self._off(a, now, wall, "stopped", "stopped: %s reached"
                              % a.limit_text(a.end_by))
                else:
                    self._off(a, now, wall, "off", "%s: done, %d s as asked"
                              % (a.source, (a.end_ms - a.start_ms) // 1000))

    def _off(self, a, now, wall, state, detail):
        a.stop(now, wall)
        self._output(a, 0)
        self._event("actuator", a.name, state, detail)

    def _output(self, a, value):
        a.value = value
        self._changes[a.name] = value
        self._apply(a.name, value)

    def _refuse(self, name, source, reason):
        self._event("actuator", name, "refused", "%s: %s" % (source, reason))
        return False, reason

    # ---- time --------------------------------------------------------------------------------

    def _now(self, now_ms):
        self._changes = {}
        now = self._mono() if now_ms is None else now_ms
        wall = self._wall_now()
        self._roll_day(now, wall)
        self._enforce(now, wall)
        return now, wall

    def _wall_now(self):
        wall = self._wall()
        if wall is None or wall < RTC_PLAUSIBLE_S:
            return None  # an RTC that was never set counts from 2000 (or 1970)
        return wall

    def _roll_day(self, now, wall):
        if wall is None:
            return
        day = int(wall // DAY_S)
        if self.day is None:
            self.day = day
        elif day > self.day:
            self.day = day
            for a in self._list:
                a.new_day(now, self._carry.get(a.name, 0))
        self._carry = {}

    # ---- boot and the state file -------------------------------------------------------------

    def _boot(self, now):
        for a in self._list:
            self._apply(a.name, 0)  # boot state: all off, whatever the file says
        wall = self._wall_now()
        try:
            state = safety_store.load(self._path)
        except safety_store.DamagedState as exc:
            self._boot_damaged(now, wall, str(exc))
        else:
            if state is not None:
                self._restore(state, now, wall)
        self._roll_day(now, wall)
        self._persist_quietly()

    def _boot_damaged(self, now, wall, problem):
        # It may have held a latched e-stop and today's water: assume both.
        self.estop_by = DAMAGED
        self.day = None if wall is None else int(wall // DAY_S)
        for a in self._list:
            a.off_ms = now
            a.used_ml = a.budget_ml
        self._event("fault", "safety", "damaged", "state file unreadable (%s): e-stop latched "
                    "until reset, today's water counted as used" % problem)

    def _restore(self, state, now, wall):
        self.day = state["day"]
        self.estop_by = state["estop"]
        if self.estop_by:
            self._event("actuator", "estop", "latched", "still latched after reboot (%s)"
                        % self.estop_by)
        self._carry = restore(self._acts, state, now, wall, self._event)

    def _state(self):
        acts = {}
        for a in self._list:
            acts[a.name] = a.record()
        return {"v": safety_store.VERSION, "day": self.day, "estop": self.estop_by,
                "act": acts}

    def _persist(self):
        """Save the state if it changed since the last save; OSError if the flash refuses."""
        state = self._state()
        if state == self._saved:
            return
        safety_store.save(self._path, state)
        self._saved = state
        self.saves += 1
        self._save_failed = False

    def _persist_quietly(self):
        try:
            self._persist()
        except OSError as exc:
            if not self._save_failed:  # once per outage, not once per tick
                self._save_failed = True
                self._event("fault", "safety", "save_failed", "cannot save the safety state "
                            "(%s); a reboot may forget runs and water" % exc)


def _known_source(source):
    if not isinstance(source, str):
        return False
    for prefix in SOURCE_PREFIXES:
        if source.startswith(prefix) and len(source) > len(prefix):
            return True
    return False
