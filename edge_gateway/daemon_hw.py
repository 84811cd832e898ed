"""The gateway Pi's own hardware inside the daemon ([local_hardware]): e-stop button, status
LED, master valve and I2C sensors, wired to the broker and the store.

- e-stop: a press latches the button (edge_gateway.localhw.estop), locks the master valve shut
  and publishes the site e-stop retained on nt/<site>/estop. The daemon follows that topic
  too: an e-stop from anyone (`neoterra estop`, another gateway) locks the valve and shows on
  the LED; a reset clears the button's latch and lets the valve open again — unless the button
  is still held down, then the e-stop is published again;
- status LED: broker connection, nodes stale or with open faults, e-stop (localhw.status_led),
  refreshed every `HEALTH_INTERVAL_S`;
- master valve: open while some node irrigates, known from the committed pump actuator events;
  an "on" whose node never said "off" counts only until its plant's max_run_s plus a margin
  (the node's own timer has stopped the pump by then; its "off" is merely late or lost);
- local sensors: read every poll_interval_s in a worker thread and stored, through this
  module's own Store, as telemetry and fault events of the gateway's own node (`node`,
  "gateway" by default), its seqs continuing after the highest one stored for it.

The real pin factory and I2C bus exist only on a Raspberry Pi; tests inject gpiozero's
MockFactory and a fake I2C bus instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as mqtt
from gpiozero import Device, Factory
from sensornode import protocol

from edge_gateway.config import Config
from edge_gateway.config_checks import ConfigErrors
from edge_gateway.configerror import ConfigError
from edge_gateway.localhw import (
    Health,
    LocalHardwareConfig,
    fault_event,
    open_i2c,
    open_local_hardware,
    parse_local_hardware,
    telemetry,
)
from edge_gateway.localhw.i2c import board_model
from edge_gateway.registry import fleet
from edge_gateway.store import Event, Message, Status, Store

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 1.0
PUMP_MARGIN_S = 30.0  # an "on" outlives its max_run_s by this much before it is disbelieved
BUTTON = "button"  # `by` of an e-stop from the gateway's own button
PUMP_OFF_STATES = frozenset({"off", "stopped"})
ORPHAN_STALE_S = 300.0  # the gateway node's own stale limit is at least this


# ---- the master valve's input ----------------------------------------------------------------

class IrrigationTracker:
    """Which nodes irrigate now, from their pump actuator events (and boots: pumps start off)."""

    def __init__(self, max_run_s: Mapping[str, float], default_max_run_s: float,
                 margin_s: float = PUMP_MARGIN_S) -> None:
        self._limit = {node: run + margin_s for node, run in max_run_s.items()}
        self._default_limit = default_max_run_s + margin_s
        self._lock = threading.Lock()
        # (node, pump) -> (seq of the latest event, ts of its "on" or None when off)
        self._pumps: dict[tuple[str, str], tuple[int, float | None]] = {}

    def observe(self, messages: Iterable[Message]) -> bool:
        """Take in committed messages; True if a pump changed."""
        changed = False
        with self._lock:
            for message in messages:
                if not isinstance(message, Event):
                    continue
                if message.kind == "boot":
                    for key, (seq, _) in list(self._pumps.items()):
                        if key[0] == message.node and seq < message.seq:
                            self._pumps[key] = (message.seq, None)
                            changed = True
                    continue
                if message.kind != "actuator" or not message.name.startswith("pump"):
                    continue
                if message.state == "on":
                    since: float | None = message.ts
                elif message.state in PUMP_OFF_STATES:
                    since = None
                else:
                    continue  # "refused": nothing changed at the pump
                key = (message.node, message.name)
                previous = self._pumps.get(key)
                if previous is None or previous[0] < message.seq:  # redelivery can reorder
                    self._pumps[key] = (message.seq, since)
                    changed = True
        return changed

    def irrigating(self, now: float) -> frozenset[str]:
        with self._lock:
            return frozenset(
                node for (node, _), (_, since) in self._pumps.items()
                if since is not None and now - since <= self._limit.get(node,
                                                                        self._default_limit))


# ---- the real hardware, only on a Pi ---------------------------------------------------------

def real_factories(hw: LocalHardwareConfig, pin_factory: Factory | None,
                   i2c_factory: Callable[[], Any] | None,
                   model: Callable[[], str] = board_model) -> tuple[Factory | None,
                                                                    Callable[[], Any]]:
    """The injected factories, else the real ones; ConfigErrors when they would be needed on a
    machine that is not a Raspberry Pi."""
    needs_gpio = bool(hw.pins) and pin_factory is None
    needs_i2c = bool(hw.sensors) and i2c_factory is None
    if needs_gpio or needs_i2c:
        found = model()
        if not found.startswith("Raspberry Pi"):
            parts = [part for part, needed in (("GPIO", needs_gpio), ("I2C", needs_i2c))
                     if needed]
            raise ConfigErrors([ConfigError(
                "local_hardware", f"needs a Raspberry Pi's {' and '.join(parts)}, but this is "
                f"{found or 'not a Raspberry Pi'}",
                "run this config on the garden's Raspberry Pi, or remove the [local_hardware] "
                "section (and its sub-tables) on this machine")])
    if needs_gpio:
        Device.ensure_pin_factory()  # gpiozero's own choice: lgpio, RPi.GPIO, pigpio, native
        pin_factory = Device.pin_factory
    return pin_factory, i2c_factory or open_i2c


def parse_for_site(config: Config) -> LocalHardwareConfig:
    """[local_hardware] checked, also against [nodes]: its node name must be its own."""
    hw = parse_local_hardware(dict(config.local_hardware_table))
    if hw.node in config.nodes:
        raise ConfigErrors([ConfigError(
            "local_hardware.node", f"{hw.node!r} is also a node in [nodes]",
            'give the gateway\'s own readings a name of their own, e.g. node = "gateway"')])
    return hw


# ---- the daemon's part -----------------------------------------------------------------------

class LocalSite:
    """Built in the daemon's constructor (fails there if the hardware cannot be had); its
    hooks are the gateway's on_client / on_connected / after_commit; `start` after them,
    `stop` once the gateway has stopped."""

    def __init__(self, config: Config, db_path: Path, pin_factory: Factory | None = None,
                 i2c_factory: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.time,
                 health_interval_s: float = HEALTH_INTERVAL_S) -> None:
        self.site = config.site
        self.db_path = db_path
        self.clock = clock
        self.health_interval_s = health_interval_s
        self.hw_config = parse_for_site(config)
        self.node = self.hw_config.node
        self.estop_topic = protocol.site_topic(config.site, protocol.ESTOP)
        max_run = {name: float(config.plants[node.plant].max_run_s)
                   for name, node in config.nodes.items() if node.plant is not None}
        self.irrigation = IrrigationTracker(max_run, float(protocol.MAX_IRRIGATE_S))
        self._stale = {name: float(node.stale_after_s) for name, node in config.nodes.items()}
        self._stale[self.node] = max(ORPHAN_STALE_S, 3 * self.hw_config.poll_interval_s)
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._button_ts: float | None = None  # when our button latched the e-stop
        self._button_sent: mqtt.MQTTMessageInfo | None = None
        self._site_estop: dict[str, Any] | None = None  # the latest latched e-stop heard
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stores: list[Store] = []
        pins, i2c = real_factories(self.hw_config, pin_factory, i2c_factory)
        # Without GPIO devices configured there may be no pin factory, and none is used.
        self.hardware = open_local_hardware(self.hw_config, cast(Factory, pins), self._pressed,
                                            i2c)

    @property
    def estop_latched(self) -> bool:
        with self._lock:
            return self._site_estop is not None or self.hardware.estop_latched

    # ---- gateway hooks ----

    def client_ready(self, client: mqtt.Client) -> None:
        with self._lock:
            self._client = client
        client.message_callback_add(self.estop_topic, self._estop_message)

    def connected(self, client: mqtt.Client) -> None:
        with self._lock:
            ts, sent = self._button_ts, self._button_sent
        if ts is not None and (sent is None or not sent.is_published()):
            self._publish_button_estop(ts)
        # QoS 0: the retained e-stop comes with every subscription; nothing to acknowledge
        # under the gateway's manual_ack, and nothing stale queued while we were away.
        client.subscribe(self.estop_topic, qos=0)

    def committed(self, messages: list[Message]) -> None:
        if self.irrigation.observe(messages) and self.hardware.valve is not None:
            self.hardware.valve.set_irrigating(self.irrigation.irrigating(self.clock()))
        if any((isinstance(m, Event) and m.kind == "fault") or isinstance(m, Status)
               for m in messages):
            self.refresh()

    # ---- e-stop ----

    def _pressed(self) -> None:
        """The button latched (gpiozero's thread; the valve is already locked)."""
        ts = self.clock()
        with self._lock:
            self._button_ts = ts
        self._publish_button_estop(ts)
        self.refresh()

    def _publish_button_estop(self, ts: float) -> None:
        with self._lock:
            client = self._client
        if client is None:
            return  # published on the first connect
        # QoS 1: paho keeps it while the broker is away and sends it once connected.
        info = client.publish(self.estop_topic, protocol.encode_estop(True, BUTTON, ts),
                              qos=1, retain=True)
        with self._lock:
            self._button_sent = info
        log.warning("site e-stop published on %s", self.estop_topic)

    def _estop_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        if not payload:
            return  # the retained e-stop was deleted: no news either way
        try:
            estop = protocol.decode_estop(payload)
        except protocol.ProtocolError as exc:
            # Safe side, as the nodes do: what cannot be read as a reset is an e-stop.
            log.warning("unreadable site e-stop on %s taken as latched: %s", msg.topic, exc)
            estop = {"latched": True, "by": "unreadable", "ts": self.clock(), "reason": str(exc)}
        if estop["latched"]:
            self._latched(estop)
        else:
            self._reset(estop)
        self.refresh()

    def _latched(self, estop: dict[str, Any]) -> None:
        with self._lock:
            known = self._site_estop is not None
            self._site_estop = estop
        if self.hardware.valve is not None:
            self.hardware.valve.lock_out()
        if not known:
            log.warning("site e-stop latched by %s%s", estop["by"],
                        f": {estop['reason']}" if estop["reason"] else "")

    def _reset(self, estop: dict[str, Any]) -> None:
        with self._lock:
            button_ts = self._button_ts
        if button_ts is not None and estop["ts"] < button_ts:
            log.warning("site e-stop reset by %s ignored: it is older than the button's "
                        "e-stop", estop["by"])
            return
        if not self.hardware.reset_estop():
            log.warning("site e-stop reset by %s refused: the e-stop button is still pressed; "
                        "release it, then reset again", estop["by"])
            ts = self.clock()
            with self._lock:
                self._button_ts = ts
            self._publish_button_estop(ts)
            return
        with self._lock:
            was = self._site_estop is not None or button_ts is not None
            self._site_estop = None
            self._button_ts = self._button_sent = None
        if self.hardware.valve is not None:
            self.hardware.valve.set_irrigating(self.irrigation.irrigating(self.clock()))
        if was:
            log.warning("site e-stop reset by %s", estop["by"])

    # ---- health and sensors ----

    def refresh(self) -> None:
        """Have the health thread look again now (from any thread: it alone reads the store
        and drives the LED)."""
        self._wake.set()

    def _refresh(self, store: Store) -> None:
        now = self.clock()
        if self.hardware.valve is not None:  # runs whose "off" never came expire here
            self.hardware.valve.set_irrigating(self.irrigation.irrigating(now))
        if self.hardware.led is None:
            return
        trouble = sum(1 for state in fleet(store, now, per_node=self._stale)
                      if (state.stale and state.node != self.node) or state.open_faults)
        with self._lock:
            client = self._client
        connected = client is not None and client.is_connected()
        self.hardware.led.show(Health(connected, trouble, self.estop_latched))

    def start(self) -> None:
        """The health thread and, with sensors configured, the polling one; each reads or
        writes through its own Store."""
        self._stopping.clear()
        workers = [("neoterra-health", self._health_loop)]
        if self.hardware.sensors is not None:
            workers.append(("neoterra-local-sensors", self._sensor_loop))
        for name, loop in workers:
            store = Store(self.db_path)
            self._stores.append(store)
            thread = threading.Thread(target=loop, args=(store,), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def _health_loop(self, store: Store) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._refresh(store)
            except Exception:  # e.g. the database locked for long: try again next tick
                log.exception("status LED / master valve refresh failed")
            self._wake.wait(self.health_interval_s)

    def _sensor_loop(self, store: Store) -> None:
        sensors = self.hardware.sensors
        assert sensors is not None
        seq = next_seq(store, self.node)
        while not self._stopping.is_set():
            try:
                poll = sensors.poll()
                now = self.clock()
                messages: list[Message] = []
                if poll.values:
                    messages.append(telemetry(self.site, self.node, seq, now, poll.values, now))
                    seq += 1
                for change in poll.changes:
                    messages.append(fault_event(self.site, self.node, seq, now, change, now))
                    seq += 1
                if messages:
                    store.write(messages)
            except Exception:  # one bad poll must not end the polling
                log.exception("local sensors: poll failed")
            if self._stopping.wait(self.hw_config.poll_interval_s):
                return

    def stop(self) -> None:
        """Threads first, then the hardware (the valve closes before anything else)."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=10.0)
        self._threads.clear()
        self.hardware.close()
        for store in self._stores:
            store.close()
        self._stores.clear()


def next_seq(store: Store, node: str) -> int:
    """The seq after the highest stored for `node` (readings and events), 1 for a new one."""
    rows = store.query("SELECT max(seq) FROM (SELECT max(seq) AS seq FROM readings WHERE node = ?"
                       " UNION ALL SELECT max(seq) FROM events WHERE node = ?)", (node, node))
    highest = rows[0][0] if rows else None
    return 1 if highest is None else int(highest) + 1


def build_local_site(config: Config, db_path: Path, pin_factory: Factory | None,
                     i2c_factory: Callable[[], Any] | None,
                     clock: Callable[[], float]) -> LocalSite | None:
    """The one place the daemon builds the Pi's hardware: None without [local_hardware]."""
    if not config.local_hardware_table:
        return None
    return LocalSite(config, db_path, pin_factory, i2c_factory, clock)
