# The node application: sensor components report into the flash outbox, the sender moves it to
# the broker, commands go to the role (garden or drone), and every actuator change passes the
# one safety layer (sensornode.safety), ticked by the node's own control task, so a lost link,
# a stale command or a stalled gateway can never leave anything running.
import asyncio

from sensornode import compat, component, desired, node_safety, protocol
from sensornode.boot import BootSafety
from sensornode.cmdauth import CommandAuth
from sensornode.drivers.status_led import StatusLed
from sensornode.link import Link
from sensornode.net.mqtt import MQTTClient, MQTTError
from sensornode.outbox import Outbox
from sensornode.safety import Safety
from sensornode.sender import EVENT, TELEMETRY, Sender
from sensornode.sensors import SensorSet
from sensornode.sequence import Sequence
from sensornode.timesync import Clock

FW_VERSION = "0.3.0"
OUTBOX_DIR = "outbox"
CLOCK_FILE = "clock.json"
SEQ_FILE = "seq.json"
CMD_COUNTER_FILE = "cmd_counter.json"
SAFETY_FILE = "safety.json"
CONTROL_TICK_MS = 200  # the longest the safety layer goes unticked
# Actions that start something: acked "started"; the others are done when acked.
_STARTS = ("irrigate", "diffuse")


def log(*parts):
    print("[node]", *parts)


def _role_class(role):
    # Imported on demand: a garden node never loads the drone's drivers, and vice versa.
    if role == "drone":
        from sensornode.drone import DroneRole

        return DroneRole
    from sensornode.garden import GardenRole

    return GardenRole


class Node:
    def __init__(self, cfg, board, sequence=None, client_factory=MQTTClient, root="", clock=None):
        # root: where the node's files live ("" = the flash root, the cwd on the unix port)
        self.cfg = cfg
        self.board = board
        self.root = root
        site, node = cfg["site"], cfg["node"]
        self.topic_telemetry = protocol.node_topic(site, node, protocol.TELEMETRY)
        self.topic_event = protocol.node_topic(site, node, protocol.EVENT)
        self.topic_cmd = protocol.node_topic(site, node, protocol.CMD)
        self.topic_ack = protocol.node_topic(site, node, protocol.ACK)
        self.topic_time = protocol.site_topic(site, protocol.TIME)
        self.topic_estop = protocol.site_topic(site, protocol.ESTOP)
        self.topic_config = protocol.node_topic(site, node, protocol.CONFIG)
        self.outbox = outbox = Outbox(root + OUTBOX_DIR, max_bytes=cfg["outbox"]["max_bytes"])
        # The outbox says where the last boot stopped writing: seqs continue right after it.
        self.seq = sequence or Sequence(root + SEQ_FILE, boot_tail=outbox.boot_tail())
        self.clock = clock or Clock(boot=self.seq.boot, path=root + CLOCK_FILE)
        self.cmdauth = CommandAuth(cfg["node"], cfg["cmd_key"], root + CMD_COUNTER_FILE)
        self._reported_drops = outbox.dropped
        self.link = Link(cfg, board, self._on_message, self._link_up, log, client_factory)
        self.sender = Sender(outbox, self.link, self.topic_telemetry, self.topic_event, log,
                             self.clock, self._unstampable)
        self._command_tasks = []
        self._tasks = []
        self.led = StatusLed(board.status_led_pin(), active_low=board.status_led_active_low)
        self.sensors = SensorSet(cfg, self._report, self._fault)
        self.role = _role_class(cfg["role"])(self, board, cfg)
        actuators = self.role.actuators()
        defaults = getattr(self.role, "safety_defaults", None)
        limits = node_safety.limits_for(cfg, actuators, defaults() if defaults else None)
        # Built after the role (it drives the role's outputs) and before anything can ask for
        # an output: its constructor switches every output off, whatever its state file says.
        self.safety = Safety(limits, root + SAFETY_FILE, on_event=self._safety_event,
                             apply=self.role.drive, wall=self.clock.now)
        self.site_estop = None  # what nt/<site>/estop last said: True latched, False reset
        self.on_clear_safe_mode = None  # set by the boot module: cmd -> (ok, detail)
        if outbox.torn:
            self._event(
                "fault",
                "outbox",
                "torn",
                "%d torn record(s) skipped at boot (power cut)" % outbox.torn,
            )
        # Last, with the safety layer built: this boot is recorded (reset cause, boot loop ->
        # safe mode) and the watchdog is prepared (sensornode.boot).
        self.boot_safety = BootSafety(self, board, root)
        self.deep_sleep = None
        if cfg["power"]["deep_sleep_s"]:
            from sensornode.deepsleep import DeepSleep  # battery nodes only

            self.deep_sleep = DeepSleep(self, board, root, cfg["power"]["deep_sleep_s"],
                                        self.boot_safety.reset_cause)

    @property
    def client(self):
        return self.link.client if self.link.is_up else None

    # ---- readings and events into the outbox ------------------------------------------------

    def _store(self, kind, seq, payload):
        try:
            self.outbox.append(kind, seq, payload)
        except (OSError, ValueError) as exc:
            log("outbox append failed:", exc)  # counted in outbox.stats; the node runs on
            return
        if self.outbox.dropped != self._reported_drops:
            count = self.outbox.dropped - self._reported_drops
            self._reported_drops = self.outbox.dropped
            # The gateway files this gap as dropped on purpose, not lost.
            self._event(
                "fault",
                "outbox",
                "dropped",
                "%d records, seq %s" % (count, self.outbox.dropped_last_seq),
            )
        self.sender.wake()

    def _unstampable(self, seq):
        self._event("fault", "outbox", "dropped", "1 records, seq %d (no time known)" % seq)

    def _report(self, component_name, values):
        # Before the clock knows the time (no gateway time yet, no plausible RTC) the stamp
        # is pending; the sender puts the Unix time in once it is known.
        ts = self.clock.stamp()
        seq = self.seq.take()
        self._store(TELEMETRY, seq, protocol.encode_entry(seq, ts, values))
        if component_name.startswith("tank_switch_"):
            for quantity in values:
                if quantity.startswith("tank_ok"):
                    # The interlock input is named after the switch's component.
                    self.safety.set_input(component_name, values[quantity] == 1)

    def _fault(self, component_name, state, detail):
        log("component", component_name, state, detail)
        self._event("fault", component_name, state, detail)
        if state == "failed" and component_name.startswith("tank_switch_"):
            self.safety.set_input(component_name, False)  # unknown level: do not run dry
        self._show_health()

    def _event(self, kind, name, state, detail):
        ts = self.clock.stamp()
        seq = self.seq.take()
        self._store(EVENT, seq, protocol.encode_event(seq, ts, kind, name, state, detail[:120]))

    def event(self, kind, name, state, detail):
        """An event into the outbox (kinds: protocol.EVENT_KINDS)."""
        self._event(kind, name, state, detail)

    def _safety_event(self, kind, name, state, detail):
        log("safety:", name, state, detail)
        self._event(kind, name, state, detail)
        hook = getattr(self.role, "safety_event", None)
        if hook is not None:
            hook(kind, name, state, detail)

    def _show_health(self):
        if not self.link.is_up:
            self.led.set_pattern("connecting")
        elif any(c.state in ("warning", "failed") for c in self.sensors.components):
            self.led.set_pattern("fault")
        else:
            self.led.set_pattern("online")

    # ---- commands and time ---------------------------------------------------------------

    def _on_message(self, topic, payload, retained):
        if topic == self.topic_time:
            try:
                self.clock.handle(payload)
            except protocol.ProtocolError as exc:
                log("bad time message:", exc)
            self.sender.wake()  # records waiting for the time can go now
            return
        if topic == self.topic_estop:
            # Retained IS obeyed here: the topic holds the site's current e-stop state.
            said = node_safety.site_estop(self.safety, payload, log)
            if said is not None:
                self.site_estop = said
            return
        if topic == self.topic_config:
            self._desired_config(payload)  # retained on purpose: the gateway's current wish
            return
        if topic != self.topic_cmd:
            return
        if retained:
            # A retained command is stale by definition; obeying it at boot is how relays flood.
            log("ignored retained command")
            return
        # Keep references: CPython's loop holds tasks weakly, and a collected task never runs.
        self._command_tasks = [t for t in self._command_tasks if not t.done()]
        self._command_tasks.append(asyncio.create_task(self._handle_command(payload)))

    async def _handle_command(self, payload):
        try:
            cmd = protocol.decode_command(payload)
        except protocol.ProtocolError as exc:
            log("bad command:", exc)
            self._event("fault", "cmd", "refused", str(exc))
            return
        refusal = self.cmdauth.admit(cmd, payload)
        if refusal is not None:
            # Forged, replayed or misdirected: answered, and reported as an event so the
            # gateway's audit log has it even when the sender was not the gateway.
            log("refused command", cmd["id"], refusal)
            self._event(
                "fault", "cmd", "refused", "cmd %s %s: %s" % (cmd["id"], cmd["action"], refusal)
            )
            result = "error" if refusal.startswith("error:") else "refused"
            await self._send_ack(
                protocol.encode_ack(cmd["id"], False, result, compat.unix_time(), refusal)
            )
            return
        ok, detail = self.obey(cmd)
        result = ("started" if cmd["action"] in _STARTS else "done") if ok else "refused"
        await self._send_ack(protocol.encode_ack(cmd["id"], ok, result, compat.unix_time(), detail))

    def obey(self, cmd):
        """Carry out a decoded command; return (ok, detail)."""
        action = cmd["action"]
        source = "cmd " + cmd["id"]
        if action == "estop":
            # Never refused, not even when stale: stopping is always safe.
            reason = cmd["params"]["reason"]
            self.safety.estop(source + (": " + reason if reason else ""))
            return True, "e-stop latched (%s); everything off until reset_estop" % (
                self.safety.estop_by)
        stale = self._stale(cmd)
        if stale:
            return False, stale
        if action == "reset_estop":
            if self.site_estop:
                return False, "refused: the site e-stop (%s) is latched; reset it there " \
                              "(neoterra reset-estop)" % self.topic_estop
            return self.safety.reset_estop(source)
        if action == "clear_safe_mode":
            if self.on_clear_safe_mode is not None:
                return self.on_clear_safe_mode(cmd)
            if not self.safety.disabled:
                return True, "not in safe mode"
            return False, "refused: this firmware cannot clear safe mode (%s)" % (
                self.safety.disabled)
        result = self.role.obey(cmd)
        if result is None:
            return False, "%s is not something a %s node can do" % (action, self.cfg["role"])
        return result

    def _stale(self, cmd):
        """Why a command with an expiry must be refused ("" if it may run)."""
        expires = cmd["expires"]
        if expires is None:
            return ""
        now = self.clock.now()
        if now is None:
            return "refused: cannot tell if stale, the node's clock is not set (expires=%s)" \
                % expires
        if now >= expires:
            return "refused: stale, expired %d s ago (expires=%s)" % (int(now - expires), expires)
        return ""

    async def _send_ack(self, payload):
        # The client, not the link: a command may come in while the birth is still going out.
        if not self.link.client.is_connected:
            log("ack not sent: offline")
            return
        try:
            await self.link.client.publish(self.topic_ack, payload, qos=1)
        except (MQTTError, OSError) as exc:
            log("ack not sent:", exc)

    # ---- connection ----------------------------------------------------------------------

    async def _link_up(self, client):
        await client.subscribe(self.topic_cmd, qos=1)
        await client.subscribe(self.topic_time, qos=0)
        await client.subscribe(self.topic_estop, qos=1)
        await client.subscribe(self.topic_config, qos=1)
        birth = protocol.encode_status(
            True,
            self.cfg["role"],
            FW_VERSION,
            self.board.name,
            compat.monotonic_ms() // 1000,
            self.seq.first,
            compat.unix_time(),
            self.seq.last,
            self.cfg.get("config_version", ""),
        )
        await client.publish(self.link.topic_status, birth, qos=1, retain=True)
        log("online as", self.cfg["node"])

    def _desired_config(self, payload):
        """The gateway's desired config: saved and applied by a deliberate reboot, or refused
        with the reason (the node runs on as it is)."""
        if not payload:
            return  # the gateway withdrew it: keep what was applied
        try:
            version, overrides = desired.overrides_from(payload, self.cfg["node"],
                                                        self.cfg["role"])
        except ValueError as exc:
            log("desired config refused:", exc)
            self._event("config", "desired", "refused", str(exc))
            return
        if version == self.cfg.get("config_version", ""):
            return
        try:
            desired.save(self.root, version, overrides)
        except OSError as exc:
            self._event("config", "desired", "refused", "cannot save it: %s" % exc)
            return
        self._event("config", "desired", "applied", "version %s: rebooting to apply" % version)
        self._reboot_task = asyncio.create_task(self._reboot_soon(version))

    async def _reboot_soon(self, version):
        # The event is on flash already; a moment lets it (and the ack of anything running) go.
        await asyncio.sleep(2)
        # Not a crash: the boot guard must not count it towards safe mode. Every actuator is
        # off at boot, and the safety layer's saved state keeps a cut run within its limits.
        self.boot_safety.guard.before_deliberate_reset("config " + version)
        self.board.reset()

    def _link_changed(self):
        up = self.link.is_up
        # The broker link stands for the gateway: a node cannot tell one from the other.
        self.safety.comms(up)
        hook = getattr(self.role, "link_changed", None)
        if hook is not None:
            hook(up)
        self._show_health()
        self.sender.wake()

    # ---- control ---------------------------------------------------------------------------

    def control_tick(self):
        """One tick: the safety layer enforces its limits, then the role's own loop (local
        autonomy, aroma) may ask it for something."""
        self.safety.tick()
        hook = getattr(self.role, "control", None)
        if hook is not None:
            hook()

    async def _control(self):
        while True:
            try:
                self.control_tick()
                self.boot_safety.loop_tick()  # only a tick that went through feeds the watchdog
            except Exception as exc:  # the loop that switches outputs off must go on
                log("control tick failed:", repr(exc))
            wait_ms = CONTROL_TICK_MS
            due = self.safety.next_due_ms()
            if due is not None:
                wait_ms = max(5, min(wait_ms, due - compat.monotonic_ms()))
            await asyncio.sleep(wait_ms / 1000)

    async def run(self):
        log(
            "boot",
            self.board.name,
            self.cfg["role"],
            "reset cause",
            self.board.reset_cause(),
            "seq from",
            self.seq.first,
            "outbox",
            self.outbox.pending,
        )
        self._show_health()
        # References kept: CPython's loop holds tasks weakly.
        self._tasks = [
            asyncio.create_task(self._control()),
            asyncio.create_task(component.run_all(self.sensors.components)),
            asyncio.create_task(self.led.run()),
            asyncio.create_task(self.sender.run()),
        ]
        for coroutine in self.role.tasks():
            self._tasks.append(asyncio.create_task(coroutine))
        self._tasks.append(asyncio.create_task(self.boot_safety.task()))
        if self.deep_sleep is not None:
            self._tasks.append(asyncio.create_task(self.deep_sleep.task()))
        try:
            await self.link.run(self._link_changed)
        finally:
            for task in self._tasks:
                task.cancel()


def main(cfg, board):
    asyncio.run(Node(cfg, board).run())
