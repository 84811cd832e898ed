# The drone payload role: aroma and air sensors, PWM flavor diffusers, and a closed aroma loop
# per diffuser channel. Every diffuser change goes through the node's safety layer
# (node.safety: duty caps, max on-time, tank and arm interlocks, e-stop, safe mode), whoever
# asks: a gateway command ("diffuse"), or the channel's aroma loop (after a "setpoint").
#
# Arm input: the board's arm switch (pins.arm_switch, board.arm_switch()), debounced, is fed
# to the safety layer as each diffuser's armed_input (default "armed"); a board without one
# counts as always armed. Opening the switch disarms at the next control tick, and the safety
# layer stops the diffusers then; closing it arms once it stayed closed ARM_DEBOUNCE_MS.
#
# Aroma loops (sensornode.aroma.AromaLoop): each raw sample of the SGP40's VOC index or of
# the BME680's gas ratio (clean-air resistance / resistance now, the clean air being the
# highest resistance seen since boot) updates the loops that hold that quantity, and the duty
# goes to the safety layer as a short run (LOOP_RUN_S, source "local aroma_<n>"), renewed
# while the loop has fresh readings: a loop that stalls stops its diffuser within LOOP_RUN_S.
# The safety layer's cap (allowed_max) is the loop's output clamp, so the integral never winds
# up while the tank is empty or the payload is disarmed; the loop resumes when they clear.
# A run the safety layer ends at max_on_s is started again as soon as it grants one (after
# min_off_s); while it refuses, the loop holds duty 0 and asks again after a backoff.
# An e-stop or safe mode cancels every loop: after a reset nothing restarts until asked.
# Small duty changes (below a deadband) are not sent: each grant is an event and a state save.
from sensornode.aroma import AromaLoop
from sensornode.compat import ticks_add, ticks_diff, ticks_ms
from sensornode.drivers.diffuser import Diffuser
from sensornode.sensors import Outputs

LOOP_RUN_S = 30  # each aroma run asked of the safety layer; renewed every half of it
ARM_DEBOUNCE_MS = 100  # arming only; sampled every node control tick (<= 200 ms)
AROMA_TICK_MS = 1000  # loops without a new reading renew (or drop) their run this often
# Duty changes (percentage points) not worth a new request: wide while the reading is on
# target (there the duty only follows the sensor's jitter), narrow while it is off.
DEADBAND_PCT = 0.1
DEADBAND_OFF_TARGET_PCT = 0.02
ON_TARGET = {"voc_index": 3.0, "gas_ratio": 0.03}
RETRY_MIN_MS = 2000  # after a refusal; doubles up to RETRY_MAX_MS while refused
RETRY_MAX_MS = 60000
QUANTITY_SENSORS = {"voc_index": "sgp40", "gas_ratio": "bme680"}


def log(*parts):
    print("[drone]", *parts)


class Tap:
    """A sensor driver whose every raw reading also goes to `sink`: the component's filters
    report only changes, a control loop needs each sample."""

    def __init__(self, driver, sink):
        self._driver = driver
        self._sink = sink

    def setup(self):
        setup = getattr(self._driver, "setup", None)
        return setup() if setup is not None else None

    async def read(self):
        values = self._driver.read()
        if hasattr(values, "send"):  # a coroutine, on MicroPython and CPython
            values = await values
        try:
            self._sink(values)
        except Exception as exc:  # the loop's trouble must not fail the sensor
            log("aroma sample not used:", type(exc).__name__, exc)
        return values


class DroneRole:
    def __init__(self, node, board, cfg, clock=ticks_ms):
        self._node = node
        self._clock = clock
        node.sensors.add_board_sensors(board, drone=True)
        settings = cfg["diffusers"]
        self._max_duty_pct = settings["max_duty_pct"]
        self.diffusers = {}
        for channel in board.diffuser_channels():
            self.diffusers[channel] = Diffuser(
                board.diffuser_pwm(channel),
                freq_hz=settings["freq_hz"],
                max_duty_pct=settings["max_duty_pct"],
                ramp_pct_per_s=settings["ramp_pct_per_s"],
                channel=channel,
                clock=clock,
            )
        self._tanks = board.tank_switches()
        pin = board.arm_switch()
        self._arm = pin
        self._arm_closed_ms = None  # ticks ms since the arm switch reads closed
        self.armed = None  # what the safety layer was last told; None: not yet
        self._arm_inputs = _armed_inputs(cfg, self.diffusers)
        self.loops = {}  # channel -> AromaLoop holding a target
        self._sent = {}  # channel -> (duty, ticks ms) last granted to its loop
        self._retry = {}  # channel -> (ticks ms of the next try, backoff ms) after a refusal
        self._gas_clean_ohm = 0.0
        self.aroma = {}  # quantity -> its latest value
        self._next_tick_ms = clock()
        self._tap("sgp40", self._voc_sample)
        self._tap("bme680", self._gas_sample)
        node.sensors.add("outputs", Outputs(self.outputs))

    # ---- the safety layer's side (contract: Node builds node.safety from these) -------------

    def actuators(self):
        names = ["diffuser_%d" % channel for channel in sorted(self.diffusers)]
        return {"pumps": [], "diffusers": names}

    def drive(self, name, value):
        """Hardware only: the safety layer decided. Up with the ramp, off at once."""
        diffuser = self.diffusers[int(name[len("diffuser_"):])]
        if value > 0:
            diffuser.set(value)
        else:
            diffuser.off()

    def outputs(self):
        out = {}
        for channel in self.diffusers:
            out["diffuser_duty_%d" % channel] = round(self.diffusers[channel].duty_pct, 1)
        return out

    # ---- commands ---------------------------------------------------------------------------

    def obey(self, cmd):
        action = cmd["action"]
        if action not in ("diffuse", "setpoint"):
            return None
        channel = cmd["params"]["channel"]
        if channel not in self.diffusers:
            return False, "this payload has no diffuser channel %d (it has %s)" % (
                channel,
                ", ".join(str(c) for c in sorted(self.diffusers)) or "none",
            )
        self.poll_arm(self._clock())
        if action == "diffuse":
            return self._diffuse(cmd, channel)
        return self._setpoint(cmd, channel)

    def _diffuse(self, cmd, channel):
        params = cmd["params"]
        source = "cmd " + cmd["id"]
        # A command takes the channel over from its loop; its own request replaces the run.
        self._stop_loop(channel, source, False)
        return self._node.safety.request(
            "diffuser_%d" % channel, params["duty_pct"], source, params["seconds"]
        )

    def _setpoint(self, cmd, channel):
        params = cmd["params"]
        source = "cmd " + cmd["id"]
        target = params["target"]
        quantity = params.get("quantity", "voc_index")
        if not target:
            if self._stop_loop(channel, source, True):
                return True, "aroma_%d off, diffuser_%d off" % (channel, channel)
            return True, "aroma_%d was not running" % channel
        refusal = self._why_not(channel, quantity)
        if refusal:
            return False, refusal
        loop = self.loops.get(channel)
        if loop is not None and loop.quantity != quantity:
            self._stop_loop(channel, source, True)
            loop = None
        fresh = loop is None
        if fresh:
            loop = AromaLoop(channel, quantity, max_duty_pct=self._max_duty_pct)
        try:
            loop.set_target(target)
        except ValueError as exc:
            return False, "refused: %s" % exc
        name = "diffuser_%d" % channel
        if fresh:
            # The loop owns the channel from here: a command's run on it ends now.
            self._node.safety.request(name, 0, source, 1)
            self._sent.pop(channel, None)
            self._retry.pop(channel, None)
        self.loops[channel] = loop
        detail = "aroma_%d holding %s at %g with %s" % (channel, quantity, target, name)
        self._node.event("actuator", "aroma_%d" % channel, "target", "%s: %s" % (source, detail))
        now = self._clock()
        if quantity in self.aroma:
            self._steer(channel, loop, self.aroma[quantity], now)
        return True, detail

    def _why_not(self, channel, quantity):
        # (A stale command never gets here: the node refuses it first.)
        safety = self._node.safety
        if self._node.sensors.find(QUANTITY_SENSORS[quantity]) is None:
            return "refused: %s needs the %s, this payload has none" % (
                quantity, QUANTITY_SENSORS[quantity].upper())
        if safety.estop_by:
            return "refused: e-stop latched (%s); reset it first" % safety.estop_by
        if safety.disabled:
            return "refused: " + safety.disabled
        if not safety.allowed_max("diffuser_%d" % channel):
            if not self.armed:
                return "refused: payload disarmed (%s)" % ", ".join(self._arm_inputs)
            return "refused: diffuser_%d may not run now (tank empty)" % channel
        return ""

    # ---- the aroma loops --------------------------------------------------------------------

    def _tap(self, component_name, sink):
        comp = self._node.sensors.find(component_name)
        if comp is not None:
            comp.sensor = Tap(comp.sensor, sink)

    def _voc_sample(self, values):
        self.sample("voc_index", values.get("voc_index"))

    def _gas_sample(self, values):
        ohm = values.get("gas_resistance")
        if not isinstance(ohm, (int, float)) or ohm <= 0:
            return
        if ohm > self._gas_clean_ohm:
            self._gas_clean_ohm = float(ohm)
        self.sample("gas_ratio", self._gas_clean_ohm / ohm)

    def sample(self, quantity, value, now_ms=None):
        """One reading of an aroma quantity: every loop holding it steers on it."""
        now = self._clock() if now_ms is None else now_ms
        self.aroma[quantity] = value
        if self._cancel_if_stopped():
            return
        for channel in sorted(self.loops):
            loop = self.loops[channel]
            if loop.quantity == quantity:
                self._steer(channel, loop, value, now)

    def tick(self, now_ms=None):
        """Between readings: renew the loops' runs, or drop them once their readings are
        stale (AromaLoop.update with no value)."""
        now = self._clock() if now_ms is None else now_ms
        if self._cancel_if_stopped():
            return
        for channel in sorted(self.loops):
            self._steer(channel, self.loops[channel], None, now)

    def _cancel_if_stopped(self):
        safety = self._node.safety
        why = ""
        if safety.estop_by:
            why = "e-stop (%s)" % safety.estop_by
        elif safety.disabled:
            why = safety.disabled
        if why and self.loops:
            for channel in sorted(self.loops):
                self._stop_loop(channel, "stopped: " + why, False)
        return bool(why)

    def _steer(self, channel, loop, value, now):
        name = "diffuser_%d" % channel
        safety = self._node.safety
        retry = self._retry.get(channel)
        held = retry is not None and ticks_diff(now, retry[0]) < 0
        cap = 0 if held else safety.allowed_max(name)
        duty = loop.update(value, now, cap)
        running = safety.outputs().get(name, 0) > 0
        source = "local aroma_%d" % channel
        if duty <= 0:
            if running:
                safety.request(name, 0, source, 1)
            self._sent.pop(channel, None)
            return
        last = self._sent.get(channel)
        deadband = DEADBAND_OFF_TARGET_PCT
        if loop.last_value is not None and \
                abs(loop.last_value - loop.target) <= ON_TARGET[loop.quantity]:
            deadband = DEADBAND_PCT
        if running and last is not None and abs(duty - last[0]) < deadband \
                and ticks_diff(now, last[1]) < LOOP_RUN_S * 500:
            return
        ok, why = safety.request(name, round(duty, 3), source, LOOP_RUN_S)
        if ok:
            self._sent[channel] = (duty, now)
            self._retry.pop(channel, None)
            return
        self._sent.pop(channel, None)
        backoff = RETRY_MIN_MS if retry is None else min(RETRY_MAX_MS, retry[1] * 2)
        self._retry[channel] = (ticks_add(now, backoff), backoff)
        log(source, "refused:", why)

    def _stop_loop(self, channel, why, switch_off):
        loop = self.loops.pop(channel, None)
        self._sent.pop(channel, None)
        self._retry.pop(channel, None)
        if loop is None:
            return False
        loop.set_target(None)
        if switch_off:
            self._node.safety.request("diffuser_%d" % channel, 0, "local aroma_%d" % channel, 1)
        self._node.event("actuator", "aroma_%d" % channel, "off", why)
        return True

    def status(self):
        """Each loop's status (AromaLoop.status), by channel."""
        out = {}
        for channel in self.loops:
            out[channel] = self.loops[channel].status()
        return out

    # ---- the arm input ----------------------------------------------------------------------

    def poll_arm(self, now_ms):
        """Sample the arm switch; tell the safety layer when the debounced state changes."""
        armed = self.armed
        if self._arm is None:
            armed = True
        elif self._arm.value() != 0:  # open (pulled up): disarmed at once, no debounce
            self._arm_closed_ms = None
            armed = False
        elif self._arm_closed_ms is None:
            self._arm_closed_ms = now_ms
        elif ticks_diff(now_ms, self._arm_closed_ms) >= ARM_DEBOUNCE_MS:
            armed = True  # closed long enough: not a bounce
        # Until the first reading the safety layer counts the input as "not read yet".
        if armed is None or armed == self.armed:
            return
        self.armed = armed
        for name in self._arm_inputs:
            self._node.safety.set_input(name, armed)
        if self._arm is not None:
            self._node.event("actuator", "arm_switch", "armed" if armed else "disarmed",
                              "arm switch")

    # ---- the node's hooks -------------------------------------------------------------------

    def control(self):
        """Each control tick of the node (at most CONTROL_TICK_MS apart), after the safety
        layer's own tick: the arm switch, and the loops between their readings."""
        now = self._clock()
        self.poll_arm(now)
        if ticks_diff(now, self._next_tick_ms) >= 0:
            self._next_tick_ms = ticks_add(now, AROMA_TICK_MS)
            self.tick(now)

    def safety_event(self, kind, name, state, detail):
        # An e-stop or safe mode ends the loops at once, not at their next reading.
        if (name, state) in (("estop", "latched"), ("safety", "disabled")):
            self._cancel_if_stopped()

    def safety_defaults(self):
        """Default limits for the safety layer: each diffuser stops when its tank's float
        switch says empty (channel n on tank ((n - 1) mod tanks) + 1: odd channels on tank 1,
        even ones on tank 2 when there are two; config safety.diffusers.<name>.tank_input
        overrides it)."""
        tanks = self._tanks
        out = {}
        if tanks:
            for channel in self.diffusers:
                tank = tanks[(channel - 1) % len(tanks)]
                out["diffuser_%d" % channel] = {"tank_input": "tank_switch_%d" % tank}
        return out

    def tasks(self):
        # Ramps move the duty a little every few tens of ms.
        return [diffuser.run() for diffuser in self.diffusers.values()]


def _armed_inputs(cfg, diffusers):
    """The safety layer's armed_input names of this payload's diffusers (default "armed")."""
    configured = (cfg.get("safety") or {}).get("diffusers") or {}
    names = []
    for channel in sorted(diffusers):
        own = configured.get("diffuser_%d" % channel) or {}
        name = own.get("armed_input", "armed") if isinstance(own, dict) else "armed"
        if name not in names:
            names.append(name)
    return names
