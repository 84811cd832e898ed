# The node application: sensor components report through one queue, commands go to the role
# (garden or drone), and actuator runs are bounded by the node's own timers so a lost link can
# never leave anything running.
import asyncio
import random

from sensornode import compat, component, protocol
from sensornode.drivers.status_led import StatusLed
from sensornode.net.mqtt import MQTTClient, MQTTError
from sensornode.sensors import SensorSet
from sensornode.sequence import Sequence

FW_VERSION = "0.2.0"
# Readings kept in RAM while the broker is unreachable; the flash outbox replaces this later.
MAX_PENDING = 120
MAX_BATCH = 20
_WIFI_WAIT_MS = 10000
_BACKOFF_MAX_S = 30


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
    def __init__(self, cfg, board, sequence=None, client_factory=MQTTClient):
        self.cfg = cfg
        self.board = board
        self.seq = sequence or Sequence()
        self._client_factory = client_factory
        site, node = cfg["site"], cfg["node"]
        self.topic_status = protocol.node_topic(site, node, protocol.STATUS)
        self.topic_telemetry = protocol.node_topic(site, node, protocol.TELEMETRY)
        self.topic_event = protocol.node_topic(site, node, protocol.EVENT)
        self.topic_cmd = protocol.node_topic(site, node, protocol.CMD)
        self.topic_ack = protocol.node_topic(site, node, protocol.ACK)
        self.client = None
        self.pending = []  # [(kind, obj)] in send order; kind is "telemetry" or "event"
        self.dropped = 0
        self._in_flight = 0  # leading entries of pending being published right now
        self._wake_sender = asyncio.Event()
        self._command_tasks = []
        self._tasks = []
        self.led = StatusLed(board.status_led_pin(), active_low=board.status_led_active_low)
        self.sensors = SensorSet(cfg, self._report, self._fault)
        self.role = _role_class(cfg["role"])(self, board, cfg)

    # ---- readings and events -------------------------------------------------------------

    def _queue(self, kind, obj):
        if len(self.pending) >= MAX_PENDING:
            # Drop the oldest entry that is not being published, so the flush can still
            # remove exactly what the broker acknowledged.
            self.pending.pop(self._in_flight)
            self.dropped += 1
        self.pending.append((kind, obj))
        self._wake_sender.set()

    def _report(self, component_name, values):
        entry = {"seq": self.seq.take(), "ts": compat.unix_time(), "values": values}
        self._queue("telemetry", entry)

    def _fault(self, component_name, state, detail):
        log("component", component_name, state, detail)
        self._event("fault", component_name, state, detail)
        self._show_health()

    def actuator_changed(self, name, state, reason):
        log(name, state, reason)
        self._event("actuator", name, state, reason)

    def _event(self, kind, name, state, detail):
        seq = self.seq.take()
        self._queue(
            "event", protocol.encode_event(seq, compat.unix_time(), kind, name, state, detail[:120])
        )

    def _show_health(self):
        if self.client is None:
            self.led.set_pattern("connecting")
        elif any(c.state in ("warning", "failed") for c in self.sensors.components):
            self.led.set_pattern("fault")
        else:
            self.led.set_pattern("online")

    async def _flush(self, client):
        while self.pending and client.is_connected:
            kind, obj = self.pending[0]
            if kind == "event":
                self._in_flight = 1
                try:
                    await client.publish(self.topic_event, obj, qos=1)
                finally:
                    self._in_flight = 0
                self.pending.pop(0)
                continue
            count = 0
            while (
                count < len(self.pending)
                and count < MAX_BATCH
                and self.pending[count][0] == "telemetry"
            ):
                count += 1
            batch = [entry for _, entry in self.pending[:count]]
            self._in_flight = count
            try:
                await client.publish(self.topic_telemetry, protocol.encode_telemetry(batch), qos=1)
            finally:
                self._in_flight = 0
            # Only what was acknowledged leaves the queue; new readings may have been appended.
            del self.pending[:count]

    # ---- commands ------------------------------------------------------------------------

    def _on_message(self, topic, payload, retained):
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
        client = self.client
        if client is None or not client.is_connected:
            log("ack not sent: offline")
            return
        try:
            await client.publish(self.topic_ack, payload, qos=1)
        except (MQTTError, OSError) as exc:
            log("ack not sent:", exc)

    # ---- connection ----------------------------------------------------------------------

    async def _wifi_up(self):
        if self.board.wlan_connected():
            return True
        self.board.wlan_connect(self.cfg["wifi"]["ssid"], self.cfg["wifi"]["password"])
        start = compat.ticks_ms()
        while compat.ticks_diff(compat.ticks_ms(), start) < _WIFI_WAIT_MS:
            if self.board.wlan_connected():
                return True
            await asyncio.sleep(0.2)
        return False

    def _new_client(self):
        broker = self.cfg["broker"]
        will = (self.topic_status, protocol.encode_status(False), 1, True)
        return self._client_factory(
            self.cfg["node"],
            broker["host"],
            port=broker["port"],
            username=broker["username"] or self.cfg["node"],
            password=broker["password"] or None,
            keepalive_s=broker["keepalive_s"],
            clean_session=True,
            will=will,
        )

    async def _session(self, client):
        link_down = asyncio.Event()
        client.on_message = self._on_message
        client.on_disconnect = lambda reason: link_down.set()
        await client.connect()
        await client.subscribe(self.topic_cmd, qos=1)
        birth = protocol.encode_status(
            True,
            self.cfg["role"],
            FW_VERSION,
            self.board.name,
            compat.monotonic_ms() // 1000,
            self.seq.first,
            compat.unix_time(),
        )
        await client.publish(self.topic_status, birth, qos=1, retain=True)
        self.client = client
        self._show_health()
        log("online as", self.cfg["node"])
        while not link_down.is_set():
            await self._flush(client)
            self._wake_sender.clear()
            if self.pending:
                continue
            await _first_of(self._wake_sender, link_down)

    async def _connection_loop(self):
        backoff_s = 1
        while True:
            client = None
            try:
                if await self._wifi_up():
                    client = self._new_client()
                    await self._session(client)
                    backoff_s = 1
                else:
                    log("wifi not connected")
            except (MQTTError, OSError) as exc:
                log("link down:", exc)
            self.client = None
            self._show_health()
            if client is not None:
                try:
                    await client.disconnect()
                except (MQTTError, OSError):
                    pass
            # Jitter spreads a fleet's reconnects after a broker restart.
            await asyncio.sleep(backoff_s + random.getrandbits(10) / 1024)
            backoff_s = min(backoff_s * 2, _BACKOFF_MAX_S)

    async def run(self):
        log(
            "boot",
            self.board.name,
            self.cfg["role"],
            "reset cause",
            self.board.reset_cause(),
            "seq from",
            self.seq.first,
        )
        self._show_health()
        # References kept: CPython's loop holds tasks weakly.
        self._tasks = [
            asyncio.create_task(component.run_all(self.sensors.components)),
            asyncio.create_task(self.led.run()),
        ]
        for coroutine in self.role.tasks():
            self._tasks.append(asyncio.create_task(coroutine))
        try:
            await self._connection_loop()
        finally:
            for task in self._tasks:
                task.cancel()


async def _first_of(*events):
    """Wait until any of the events is set (MicroPython's asyncio has no asyncio.wait)."""
    done = asyncio.Event()

    async def watch(event):
        await event.wait()
        done.set()

    tasks = [asyncio.create_task(watch(event)) for event in events]
    try:
        await done.wait()
    finally:
        for task in tasks:
            task.cancel()


def main(cfg, board):
    asyncio.run(Node(cfg, board).run())
