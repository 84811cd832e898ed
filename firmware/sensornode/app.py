# The node application: report readings on a fixed interval and obey commands, with the pump's
# off-timer owned by the node itself so a lost link can never leave it running.
import asyncio
import random

from sensornode import compat, protocol
from sensornode.drivers.relay import Relay
from sensornode.drivers.soil_moisture import CapacitiveSoilMoisture
from sensornode.net.mqtt import MQTTClient, MQTTError
from sensornode.sequence import Sequence

FW_VERSION = "0.1.0"
# Readings kept in RAM while the broker is unreachable; the flash outbox replaces this later.
MAX_PENDING = 120
MAX_BATCH = 20
_WIFI_WAIT_MS = 10000
_BACKOFF_MAX_S = 30


def log(*parts):
    print("[node]", *parts)


class Irrigation:
    """One pump run at a time, never longer than max_run_s, switched off by our own timer."""

    def __init__(self, relay, max_run_s, on_change):
        self._relay = relay
        self._max_run_s = max_run_s
        self._on_change = on_change
        self._task = None
        self._ends_ms = 0

    @property
    def running(self):
        return self._relay.is_on

    def remaining_s(self):
        if not self.running:
            return 0
        return max(0, compat.ticks_diff(self._ends_ms, compat.ticks_ms()) // 1000)

    def start(self, seconds, reason):
        """Return (ok, detail); on ok the pump is already on."""
        if seconds > self._max_run_s:
            return False, "seconds=%d exceeds irrigation.max_run_s=%d" % (seconds, self._max_run_s)
        if self.running:
            return False, "already irrigating, %d s left" % self.remaining_s()
        self._ends_ms = compat.ticks_add(compat.ticks_ms(), seconds * 1000)
        self._relay.on()
        self._on_change("on", reason)
        self._task = asyncio.create_task(self._stop_after(seconds * 1000, reason))
        return True, "pump on for %d s" % seconds

    async def _stop_after(self, ms, reason):
        try:
            await asyncio.sleep(ms / 1000)
        finally:
            self._relay.off()
            self._on_change("off", reason)


class GardenNode:
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
        self.soil = CapacitiveSoilMoisture(
            board.soil_adc(),
            cfg["soil"]["dry_raw"],
            cfg["soil"]["wet_raw"],
            samples=board.profile.get("adc_samples", 8),
        )
        self.pump = Relay(
            board.pump_relay_pin(), active_low=board.profile.get("relay_active_low", False)
        )
        led_pin = board.status_led_pin()
        self.led = (
            Relay(led_pin, active_low=board.profile.get("status_led_active_low", False))
            if led_pin
            else None
        )
        self.irrigation = Irrigation(self.pump, cfg["irrigation"]["max_run_s"], self._pump_changed)
        self.client = None
        self.pending = []  # [(kind, obj)] in send order; kind is "telemetry" or "event"
        self.dropped = 0
        self._in_flight = 0  # leading entries of pending being published right now
        self._wake_sender = asyncio.Event()
        self._command_tasks = []
        self._report_task = None

    # ---- readings and events -------------------------------------------------------------

    def _queue(self, kind, obj):
        if len(self.pending) >= MAX_PENDING:
            # Drop the oldest entry that is not being published, so the flush can still
            # remove exactly what the broker acknowledged.
            self.pending.pop(self._in_flight)
            self.dropped += 1
        self.pending.append((kind, obj))
        self._wake_sender.set()

    def sample(self):
        percent, raw = self.soil.read()
        values = {
            "soil_moisture": round(percent, 1),
            "soil_raw": raw,
            "pump": 1 if self.pump.is_on else 0,
        }
        self._queue(
            "telemetry", {"seq": self.seq.take(), "ts": compat.unix_time(), "values": values}
        )
        return values

    def _pump_changed(self, state, reason):
        log("pump", state, reason)
        event = protocol.encode_event(
            self.seq.take(), compat.unix_time(), "actuator", "pump", state, reason
        )
        self._queue("event", event)

    async def _report_loop(self):
        interval_ms = self.cfg["report_interval_s"] * 1000
        next_ms = compat.ticks_ms()
        while True:
            try:
                self.sample()
            except OSError as exc:
                log("soil read failed:", exc)
            next_ms = compat.ticks_add(next_ms, interval_ms)
            delay = compat.ticks_diff(next_ms, compat.ticks_ms())
            if delay < 0:  # fell behind (e.g. a long blocking call); do not burst to catch up
                next_ms = compat.ticks_ms()
                delay = 0
            await asyncio.sleep(delay / 1000)

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
            self._queue(
                "event",
                protocol.encode_event(
                    self.seq.take(), compat.unix_time(), "fault", "cmd", "refused", str(exc)[:120]
                ),
            )
            return
        ok, detail = self.obey(cmd)
        await self._send_ack(
            protocol.encode_ack(
                cmd["id"], ok, "started" if ok else "refused", compat.unix_time(), detail
            )
        )

    def obey(self, cmd):
        """Carry out a decoded command; return (ok, detail). Roles add their own actions."""
        if cmd["action"] == "irrigate":
            return self.irrigation.start(cmd["params"]["seconds"], "cmd " + cmd["id"])
        return False, "%s is not something a %s node can do" % (cmd["action"], self.cfg["role"])

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
        if self.led:
            self.led.on()
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
            if self.led:
                self.led.off()
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
            "reset cause",
            self.board.reset_cause(),
            "seq from",
            self.seq.first,
        )
        self._report_task = asyncio.create_task(self._report_loop())
        await self._connection_loop()


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
    asyncio.run(GardenNode(cfg, board).run())
