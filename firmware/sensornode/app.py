# The node application: sensor components report into the flash outbox, the sender moves it to
# the broker, commands go to the role (garden or drone), and actuator runs are bounded by the
# node's own timers so a lost link can never leave anything running.
import asyncio

from sensornode import compat, component, protocol
from sensornode.cmdauth import CommandAuth
from sensornode.drivers.status_led import StatusLed
from sensornode.link import Link
from sensornode.net.mqtt import MQTTClient, MQTTError
from sensornode.outbox import Outbox
from sensornode.sender import EVENT, TELEMETRY, Sender
from sensornode.sensors import SensorSet
from sensornode.sequence import Sequence
from sensornode.timesync import Clock

FW_VERSION = "0.3.0"
OUTBOX_DIR = "outbox"
CLOCK_FILE = "clock.json"
SEQ_FILE = "seq.json"
CMD_COUNTER_FILE = "cmd_counter.json"


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
        site, node = cfg["site"], cfg["node"]
        self.topic_telemetry = protocol.node_topic(site, node, protocol.TELEMETRY)
        self.topic_event = protocol.node_topic(site, node, protocol.EVENT)
        self.topic_cmd = protocol.node_topic(site, node, protocol.CMD)
        self.topic_ack = protocol.node_topic(site, node, protocol.ACK)
        self.topic_time = protocol.site_topic(site, protocol.TIME)
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
        if outbox.torn:
            self._event(
                "fault",
                "outbox",
                "torn",
                "%d torn record(s) skipped at boot (power cut)" % outbox.torn,
            )

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

    def _fault(self, component_name, state, detail):
        log("component", component_name, state, detail)
        self._event("fault", component_name, state, detail)
        self._show_health()

    def actuator_changed(self, name, state, reason):
        log(name, state, reason)
        self._event("actuator", name, state, reason)

    def _event(self, kind, name, state, detail):
        ts = self.clock.stamp()
        seq = self.seq.take()
        self._store(EVENT, seq, protocol.encode_event(seq, ts, kind, name, state, detail[:120]))

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
        await self._send_ack(
            protocol.encode_ack(
                cmd["id"], ok, "started" if ok else "refused", compat.unix_time(), detail
            )
        )

    def obey(self, cmd):
        """Carry out a decoded command; return (ok, detail)."""
        result = self.role.obey(cmd)
        if result is None:
            return False, "%s is not something a %s node can do" % (cmd["action"], self.cfg["role"])
        return result

    async def _send_ack(self, payload):
        if not self.link.is_up:
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
        birth = protocol.encode_status(
            True,
            self.cfg["role"],
            FW_VERSION,
            self.board.name,
            compat.monotonic_ms() // 1000,
            self.seq.first,
            compat.unix_time(),
            self.seq.last,
        )
        await client.publish(self.link.topic_status, birth, qos=1, retain=True)
        log("online as", self.cfg["node"])

    def _link_changed(self):
        self._show_health()
        self.sender.wake()

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
            asyncio.create_task(component.run_all(self.sensors.components)),
            asyncio.create_task(self.led.run()),
            asyncio.create_task(self.sender.run()),
        ]
        for coroutine in self.role.tasks():
            self._tasks.append(asyncio.create_task(coroutine))
        try:
            await self.link.run(self._link_changed)
        finally:
            for task in self._tasks:
                task.cancel()


def main(cfg, board):
    asyncio.run(Node(cfg, board).run())
