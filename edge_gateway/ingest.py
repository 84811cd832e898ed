"""The gateway daemon's ingest path: MQTT (paho) → protocol decode → batched SQLite → PUBACK.

paho's network thread only queues each delivery as it came; the writer thread
(edge_gateway.writer) decodes it (edge_gateway.decoding), stores batches, one transaction each,
and acknowledges a batch's deliveries (manual_ack) only after its commit. paho's thread is the
bottleneck (a bare paho subscriber spends nearly all its time there), and the two threads share
one GIL, so every microsecond of Python kept out of it counts (bench/ingest.py).

The session is persistent (clean_session=False), so a crash or restart loses nothing: the
broker redelivers what was not acknowledged, and the store's (node, seq) dedup makes that
harmless. Payloads the protocol refuses are kept as dead letters and acknowledged, so one bad
node can neither crash the gateway nor block its queue with endless redelivery.

A delivery is acknowledged only on the connection it came on: after a reconnect the broker
resends what was unacknowledged, possibly reusing message ids, so acknowledging an old mid on
the new connection could acknowledge a different, not yet stored message.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sensornode import protocol

from edge_gateway.decoding import Decoder, decode_message
from edge_gateway.gaps import SETTLE_S, GapTracker
from edge_gateway.pubacks import ack_all
from edge_gateway.store import DeadLetter, Message, Status, Store, WriteResult
from edge_gateway.timesync import DEFAULT_INTERVAL_S, TimeBroadcaster
from edge_gateway.writer import (
    DEFAULT_LINGER_S,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_PENDING,
    BatchWriter,
    Delivery,
)

__all__ = ["BrokerRefused", "Gateway", "GatewayError", "IngestStats", "decode_message"]

log = logging.getLogger(__name__)

SUBSCRIBED_KINDS = (protocol.STATUS, protocol.TELEMETRY, protocol.EVENT, protocol.ACK)
KEEPALIVE_S = 30
# The broker may be down for a while (restart, power cut); retry patiently but not too slowly.
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30
# The one CONNACK refusal that can heal by itself; the others (credentials, client id, protocol)
# will not change by retrying, so the daemon stops and says why.
TRANSIENT_REFUSALS = ("Server unavailable",)


class GatewayError(Exception):
    """The gateway cannot run as configured; the message says what to change."""


class BrokerRefused(GatewayError):
    pass


def default_client_id(site: str) -> str:
    # Stable per site: the broker keeps the session (and queues messages) under this id.
    return f"neoterra-gw-{site}"


# ---- the daemon ---------------------------------------------------------------------------


@dataclass
class IngestStats:
    """Counters since start(). Everything but the writer's own counters is counted after the
    commit, by the writer thread."""

    messages: int = 0  # stored (committed), dead letters included
    readings_added: int = 0
    readings_duplicate: int = 0
    seq_conflicts: int = 0
    events_added: int = 0
    acks_added: int = 0
    dead_letters: int = 0
    batches: int = 0
    largest_batch: int = 0
    store_errors: int = 0  # failed write attempts; the batch was retried
    not_acked_reconnected: int = 0  # stored, but their connection had ended (sent again)
    producer_waits: int = 0  # deliveries that waited for room in the writer's queue
    pending: int = 0  # deliveries queued for the writer right now


class Gateway:
    def __init__(
        self,
        site: str,
        broker_host: str,
        broker_port: int,
        db_path: str | Path,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        time_interval_s: float = DEFAULT_INTERVAL_S,
        gap_settle_s: float = SETTLE_S,
        batch_max: int = DEFAULT_MAX_BATCH,
        batch_linger_s: float = DEFAULT_LINGER_S,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.site = protocol.check_name("site", site)
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.db_path = Path(db_path)
        self.client_id = client_id or default_client_id(site)
        self.username = username
        self.password = password
        self.time_interval_s = time_interval_s
        self.gap_settle_s = gap_settle_s
        self.batch_max = batch_max
        self.batch_linger_s = batch_linger_s
        self.max_pending = max_pending
        self._counts = IngestStats()
        self._stored = threading.Condition()  # notified after each commit is counted
        self._decoder = Decoder(self.site)
        self._writer: BatchWriter | None = None
        self._time: TimeBroadcaster | None = None  # started once connected
        self._gaps: GapTracker | None = None  # with its own Store: it writes from its thread
        self._client: mqtt.Client | None = None
        # Which connection deliveries came on: bumped on connect and disconnect, under
        # _ack_lock so that no acknowledgement is queued for a connection that has ended.
        self._session = 0
        self._ack_lock = threading.Lock()
        self._subscribe_mid: int | None = None
        self._ready = threading.Event()  # connected and subscribed
        self._halt = threading.Event()  # run_forever() should return
        self._fatal: GatewayError | None = None
        self._stopping = False
        # Extensions (the daemon's services): called with the new paho client before it
        # connects, after each connect (paho's thread), after each commit (the writer's).
        self.on_client: list[Callable[[mqtt.Client], None]] = []
        self.on_connected: list[Callable[[mqtt.Client], None]] = []
        self.after_commit: list[Callable[[list[Message]], None]] = []

    @property
    def broker(self) -> str:
        return f"{self.broker_host}:{self.broker_port}"

    @property
    def stats(self) -> IngestStats:
        """A snapshot of the counters since start()."""
        counts = replace(self._counts)
        writer = self._writer
        if writer is not None:
            counts.batches = writer.stats.batches
            counts.largest_batch = writer.stats.largest_batch
            counts.store_errors = writer.stats.store_errors
            counts.producer_waits = writer.stats.producer_waits
            counts.pending = writer.pending
        return counts

    # ---- lifecycle ----

    def start(self) -> None:
        """Open the store and connect in the background; paho's thread reconnects by itself."""
        if self._client is not None:
            raise RuntimeError("gateway already started")
        self._counts = IngestStats()
        self._fatal = None
        self._stopping = False
        self._halt.clear()
        store = Store(self.db_path)
        try:
            self._gaps = GapTracker(Store(self.db_path), settle_s=self.gap_settle_s)
            self._gaps.load()
        except BaseException:
            store.close()
            raise
        self._gaps.start()
        self._writer = BatchWriter(store, self._decoder.decode, self._ack, self._committed,
                                   max_batch=self.batch_max, linger_s=self.batch_linger_s,
                                   max_pending=self.max_pending)
        self._writer.start()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if log.isEnabledFor(logging.DEBUG):
            # Only when debugging: paho 2.2 logs a spurious ERROR ("Client is not connected")
            # after a clean disconnect; our callbacks already log what an operator needs.
            client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        for hook in self.on_client:
            hook(client)
        self._time = TimeBroadcaster(client, self.site, self.time_interval_s)
        log.info("gateway for site %r: broker %s, database %s", self.site, self.broker,
                 self.db_path)
        # connect_async: a broker that is not up yet is retried, not a startup failure.
        client.connect_async(self.broker_host, self.broker_port, keepalive=KEEPALIVE_S)
        client.loop_start()

    def stop(self) -> None:
        """Store and acknowledge what is queued, then disconnect, wait for the MQTT thread and
        close the database. Deliveries arriving meanwhile are left for the next session."""
        client = self._client
        time_sync, self._time = self._time, None
        if time_sync is not None:
            time_sync.stop()
        self._stopping = True
        writer = self._writer
        if writer is not None:
            # The acknowledgements it queues go out before the DISCONNECT queued below.
            writer.close()
        self._client = None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._ready.clear()
        if self._gaps is not None:
            self._gaps.stop()
            self._gaps.store.close()
            self._gaps = None
        if writer is not None:
            writer.store.close()

    def wait_connected(self, timeout: float) -> None:
        """Block until connected and subscribed; raise BrokerRefused or TimeoutError."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if self._fatal is not None:
                raise self._fatal
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"not connected to the MQTT broker at {self.broker} within {timeout:g} s"
                )

    def wait_stored(self, count: int, timeout: float) -> bool:
        """Block until `count` messages (dead letters included) have been committed since
        start(), or `timeout` seconds; whether they were. Cheaper than polling `stats`: the
        writer wakes the caller once per commit."""
        with self._stored:
            return self._stored.wait_for(lambda: self._counts.messages >= count, timeout)

    def run_forever(self) -> None:
        """Run until SIGINT/SIGTERM (then stop cleanly) or until the broker refuses us."""
        restore = self._install_signal_handlers()
        try:
            self.start()
            self._halt.wait()
        finally:
            self.stop()
            restore()
        if self._fatal is not None:
            raise self._fatal

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # only the main thread may set handlers; the caller stops us

        def request_stop(signum: int, frame: FrameType | None) -> None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            self._halt.set()

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT,
                                                                     signal.SIGTERM)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    # ---- paho callbacks (run in paho's network thread) ----

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        self._new_session()
        if reason_code.is_failure:
            if reason_code.getName() in TRANSIENT_REFUSALS:
                log.warning("broker %s refused the connection (%s); retrying", self.broker,
                            reason_code)
                return
            hint = " — check --username and --password-file" if reason_code.getName() in (
                "Bad user name or password", "Not authorized") else ""
            self._fail(BrokerRefused(
                f"broker {self.broker} refused client {self.client_id!r}: {reason_code}{hint}"
            ))
            return
        log.info("connected to broker %s as %s (session %s)", self.broker, self.client_id,
                 "resumed" if flags.session_present else "new")
        # Subscribing again even when the session survived is harmless and covers a broker
        # that lost its persistence; retained status messages come with it.
        _, mid = client.subscribe(
            [(protocol.site_filter(self.site, kind), 1) for kind in SUBSCRIBED_KINDS]
        )
        self._subscribe_mid = mid
        _call_each(self.on_connected, client)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [kind for kind, code in zip(SUBSCRIBED_KINDS, reason_codes, strict=False)
                   if code.is_failure]
        if refused:
            filters = ", ".join(protocol.site_filter(self.site, kind) for kind in refused)
            self._fail(BrokerRefused(
                f"broker {self.broker} refused the subscription to {filters} — check its ACL"
            ))
            return
        self._ready.set()
        time_sync = self._time
        if time_sync is not None:
            # Nodes that booted while we were away get the time now, not an interval later.
            if time_sync.running:
                time_sync.poke()
            else:
                time_sync.start()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log.warning("cannot reach broker %s; retrying", self.broker)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        self._new_session()
        self._ready.clear()
        if not self._stopping and self._fatal is None:
            log.warning("lost the broker %s (%s); reconnecting", self.broker, reason_code)

    def _fail(self, error: GatewayError) -> None:
        # Whoever waits on us (run_forever, wait_connected) raises it and stops the client;
        # disconnecting from inside this callback would make paho log a spurious error.
        self._fatal = error
        self._halt.set()

    def _new_session(self) -> None:
        with self._ack_lock:
            self._session += 1

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        received_at = time.time()
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = repr(msg._topic)  # brokers should refuse these; keep the evidence anyway
        writer = self._writer
        if writer is not None:
            # Blocks while the writer's queue is full (backpressure); refused once stopping,
            # and then not acknowledged: the broker sends it again to the next session.
            writer.put(Delivery(topic, bytes(msg.payload), msg.mid, msg.qos, self._session,
                                received_at))

    # ---- after a commit (run in the writer's thread) ----

    def _ack(self, deliveries: Sequence[Delivery]) -> None:
        client = self._client
        if client is None:
            return
        with self._ack_lock:  # no session change between the check and the queueing
            session = self._session
            mids = [d.mid for d in deliveries if d.session == session and d.qos == 1]
            ack_all(client, mids)
        stale = sum(1 for d in deliveries if d.session != session)
        if stale:
            self._counts.not_acked_reconnected += stale
            log.info("%d stored messages arrived on an earlier connection: not acknowledged "
                     "(the broker resends them; they are stored once)", stale)

    def _committed(self, messages: list[Message], result: WriteResult) -> None:
        self._report(result, messages)
        with self._stored:
            self._counts.messages += len(messages)
            self._stored.notify_all()
        self._track(messages)

    def _track(self, messages: list[Message]) -> None:
        """After the commit: seq gaps, and the time for a node that just came online."""
        time_sync = self._time
        if time_sync is not None and any(isinstance(m, Status) and m.online for m in messages):
            time_sync.poke()
        try:
            if self._gaps is not None:
                self._gaps.observe(messages)
        except Exception:  # the data is stored and acked; gap tracking must not stop ingest
            log.exception("gap tracking failed")
        _call_each(self.after_commit, messages)

    def _report(self, result: WriteResult, messages: list[Message]) -> None:
        stats = self._counts
        stats.readings_added += result.readings_added
        stats.readings_duplicate += result.readings_duplicate
        stats.seq_conflicts += len(result.seq_conflicts)
        stats.events_added += result.events_added
        stats.acks_added += result.acks_added
        stats.dead_letters += result.dead_letters
        if result.dead_letters:
            for message in messages:
                if isinstance(message, DeadLetter):
                    log.warning("dead letter on %s: %s", message.topic, message.reason)
        for status in result.availability_changes:
            if status.online:
                log.info("node %s is online (%s, fw %s, board %s)", status.node, status.role,
                         status.fw, status.board)
            else:
                log.info("node %s is offline", status.node)
        for reading in result.seq_conflicts:
            log.warning(
                "node %s sent seq %d (%s) again with a different ts or value; the first one "
                "is kept — did the node lose its sequence counter?", reading.node, reading.seq,
                reading.quantity,
            )


def _call_each(hooks: Sequence[Callable[[Any], None]], arg: Any) -> None:
    for hook in hooks:
        try:
            hook(arg)
        except Exception:  # an extension's failure must not stop ingest
            log.exception("gateway extension %r failed", hook)
