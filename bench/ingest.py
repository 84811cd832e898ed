"""Gateway ingest throughput against a bare paho drain of the same messages, in the same run.

Two persistent MQTT sessions subscribe to the site's telemetry first: a bare paho subscriber
and the real gateway (edge_gateway.ingest.Gateway). Each round then publishes N QoS1
telemetry messages once, into the private mosquitto, while both are offline, so the broker
holds the same backlog for each. Each drains it in turn, alone on the broker:

* bare: a paho client (CallbackAPIVersion.VERSION2, QoS1, auto-ack) that only counts
  messages; timed from connect() to the Nth message;
* gateway: the real daemon (paho's thread queues each delivery; a writer thread decodes and
  validates, commits batches in one transaction each and only then acknowledges them; the
  gap tracker follows every commit), timed from the
  end of Gateway.start() - which opens the store and loads the gap tracker's state before it
  connects; timed separately as gateway_start_s - until its writer has committed the Nth
  message (Gateway.wait_stored, woken once per commit: polling, or querying the database from
  this process, would slow the gateway down); the store must then hold all 3·N readings.

The order alternates between rounds; the figures are medians over the rounds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sensornode import protocol

from bench.report import BenchError, median
from edge_gateway.ingest import Gateway, IngestStats
from edge_gateway.store import Store

SITE = "bench"
NODE = "bench-node"
QUANTITIES_PER_MESSAGE = 3
BARE_CLIENT_ID = "bench-bare-drain"
PUBLISH_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 45.0
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class IngestRound:
    index: int
    first: str  # which one drained first: "bare" or "gateway"
    publish_s: float
    bare_s: float
    gateway_s: float
    gateway_start_s: float  # Gateway.start() before connecting: not in gateway_s
    gateway_batches: int  # transactions the drain took
    gateway_largest_batch: int
    bare_msgs_per_s: float
    gateway_msgs_per_s: float
    ratio: float


@dataclass(frozen=True)
class IngestResult:
    messages_per_round: int
    rounds: list[IngestRound]
    gateway_msgs_per_s: float  # medians over the rounds
    gateway_readings_per_s: float
    bare_msgs_per_s: float
    ratio: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def telemetry_payload(seq: int, ts: float) -> bytes:
    values = {
        "soil_moisture": round(20.0 + (seq % 600) / 10.0, 1),
        "soil_raw": 24000 + (seq * 37) % 26000,
        "pump": seq % 2,
    }
    assert len(values) == QUANTITIES_PER_MESSAGE
    return protocol.encode_telemetry([{"seq": seq, "ts": ts, "values": values}])


def _wait(event: threading.Event, timeout: float, what: str) -> None:
    if not event.wait(timeout):
        raise BenchError(f"timed out after {timeout:g} s waiting for {what}")


def _new_client(client_id: str, clean_session: bool) -> mqtt.Client:
    return mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
    )


def _connected_event(client: mqtt.Client) -> threading.Event:
    connected = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                   reason_code: ReasonCode, properties: Properties | None) -> None:
        if not reason_code.is_failure:
            connected.set()

    client.on_connect = on_connect
    return connected


def publish_backlog(host: str, port: int, n: int, first_seq: int) -> float:
    """Publish n QoS1 telemetry messages (seq first_seq..); return seconds until all PUBACKed."""
    client = _new_client(f"bench-publisher-{first_seq}", clean_session=True)
    connected = _connected_event(client)
    acked = 0
    all_acked = threading.Event()

    def on_publish(client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                   properties: Properties | None) -> None:
        nonlocal acked
        acked += 1
        if acked >= n:
            all_acked.set()

    client.on_publish = on_publish
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        _wait(connected, CONNECT_TIMEOUT_S, "the publisher's CONNACK")
        topic = protocol.node_topic(SITE, NODE, protocol.TELEMETRY)
        ts = time.time()
        start = time.perf_counter()
        for i in range(n):
            info = client.publish(topic, telemetry_payload(first_seq + i, ts + i / 1000), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BenchError(f"publish {i} failed: {mqtt.error_string(info.rc)}")
        _wait(all_acked, PUBLISH_TIMEOUT_S, f"PUBACKs for {n} messages ({acked} so far)")
        return time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()


def register_bare_session(host: str, port: int) -> None:
    """Create the bare subscriber's persistent session and subscription, then go offline."""
    client = _new_client(BARE_CLIENT_ID, clean_session=False)
    connected = _connected_event(client)
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        _wait(connected, CONNECT_TIMEOUT_S, "the bare subscriber's CONNACK")
        client.subscribe(protocol.site_filter(SITE, protocol.TELEMETRY), qos=1)
        _wait(subscribed, CONNECT_TIMEOUT_S, "the bare subscriber's SUBACK")
    finally:
        client.disconnect()
        client.loop_stop()


def drain_bare(host: str, port: int, n: int) -> float:
    """Seconds from connect() until the bare subscriber has received n messages."""
    client = _new_client(BARE_CLIENT_ID, clean_session=False)
    received = 0
    done = threading.Event()
    finished_at = 0.0

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal received, finished_at
        if msg.dup:
            # Sent again from an earlier round: its PUBACK was still queued behind on_message
            # when that round's drain disconnected. Acknowledged now, not part of this backlog.
            return
        received += 1
        if received == n:
            finished_at = time.perf_counter()
            done.set()

    client.on_message = on_message
    start = time.perf_counter()
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        _wait(done, DRAIN_TIMEOUT_S, f"the bare subscriber to drain {n} messages")
    finally:
        client.disconnect()
        client.loop_stop()
    if received != n:
        raise BenchError(f"bare subscriber received {received} messages, expected {n}")
    return finished_at - start


def register_gateway_session(host: str, port: int, db: Path) -> None:
    gateway = Gateway(SITE, host, port, db)
    gateway.start()
    try:
        gateway.wait_connected(CONNECT_TIMEOUT_S)
    finally:
        gateway.stop()


def drain_gateway(host: str, port: int, db: Path, expected_rows: int, n: int
                  ) -> tuple[float, float, IngestStats]:
    """(seconds from the gateway's connect until it has committed n messages, seconds its
    start() took before connecting, its counters). The store is checked afterwards."""
    gateway = Gateway(SITE, host, port, db)
    started = time.perf_counter()
    gateway.start()  # opens the store, loads the gap tracker's state, then connects
    start = time.perf_counter()
    try:
        # Woken by the writer after each commit: polling the counters or the database instead
        # would cost the gateway CPU and GIL time that the bare drain does not pay.
        if not gateway.wait_stored(n, DRAIN_TIMEOUT_S):
            raise BenchError(f"gateway committed {gateway.stats.messages} of {n} messages in "
                             f"{DRAIN_TIMEOUT_S:g} s (stats: {gateway.stats})")
        elapsed = time.perf_counter() - start
    finally:
        gateway.stop()
    with Store(db) as probe:
        counts = probe.counts()
    stats = gateway.stats
    if counts["readings"] != expected_rows or counts["dead_letters"]:
        raise BenchError(f"store after the drain: {counts}, expected {expected_rows} readings")
    # A redelivered message (QoS1: committed, but the session ended before its PUBACK went out)
    # is stored once and counted as duplicate readings; that is the protocol working.
    if stats.messages < n or stats.dead_letters:
        raise BenchError(f"gateway stats after the drain: {stats}")
    return elapsed, start - started, stats


def run_ingest(host: str, port: int, workdir: Path, n: int, rounds: int) -> IngestResult:
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "gateway.db"
    register_bare_session(host, port)
    register_gateway_session(host, port, db)
    results: list[IngestRound] = []
    for index in range(rounds):
        publish_s = publish_backlog(host, port, n, first_seq=index * n)
        expected_rows = (index + 1) * n * QUANTITIES_PER_MESSAGE
        bare_first = index % 2 == 0
        if bare_first:
            bare_s = drain_bare(host, port, n)
            gateway_s, start_s, stats = drain_gateway(host, port, db, expected_rows, n)
        else:
            gateway_s, start_s, stats = drain_gateway(host, port, db, expected_rows, n)
            bare_s = drain_bare(host, port, n)
        bare_rate, gateway_rate = n / bare_s, n / gateway_s
        results.append(IngestRound(
            index=index, first="bare" if bare_first else "gateway", publish_s=publish_s,
            bare_s=bare_s, gateway_s=gateway_s, gateway_start_s=start_s,
            gateway_batches=stats.batches, gateway_largest_batch=stats.largest_batch,
            bare_msgs_per_s=bare_rate, gateway_msgs_per_s=gateway_rate,
            ratio=gateway_rate / bare_rate,
        ))
    gateway_rate = median([r.gateway_msgs_per_s for r in results])
    return IngestResult(
        messages_per_round=n,
        rounds=results,
        gateway_msgs_per_s=gateway_rate,
        gateway_readings_per_s=gateway_rate * QUANTITIES_PER_MESSAGE,
        bare_msgs_per_s=median([r.bare_msgs_per_s for r in results]),
        ratio=median([r.ratio for r in results]),
    )


def main() -> None:
    """`python -m bench.ingest [N] [ROUNDS]`: this benchmark alone, on a private mosquitto."""
    import shutil
    import sys
    import tempfile

    from testkit.mosquitto import Mosquitto

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    workdir = Path(tempfile.mkdtemp(prefix="neoterra-bench-ingest-"))
    broker = Mosquitto(workdir / "mosquitto")
    broker.start()
    try:
        result = run_ingest(broker.host, broker.port, workdir / "ingest", n, rounds)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    for r in result.rounds:
        print(f"round {r.index} ({r.first} first): bare {r.bare_msgs_per_s:.0f} msgs/s, gateway "
              f"{r.gateway_msgs_per_s:.0f} msgs/s in {r.gateway_batches} batches (largest "
              f"{r.gateway_largest_batch}), start {r.gateway_start_s * 1000:.0f} ms, "
              f"ratio {r.ratio:.3f}")
    print(f"BENCH ingest_ratio {result.ratio:.3f} ratio")


if __name__ == "__main__":
    main()
