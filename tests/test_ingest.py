"""Gateway ingest through a real mosquitto: nodes are played by paho clients sending real
protocol payloads; the store is read through its own connection, as the CLI would."""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sensornode import protocol

from edge_gateway.ingest import BrokerRefused, Gateway, decode_message
from edge_gateway.store import (
    Ack,
    DeadLetter,
    Event,
    Message,
    Status,
    Store,
    Telemetry,
    WriteResult,
)
from edge_gateway.writer import Delivery
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for

SITE = "home"
T0 = 1_790_000_000.0
WAIT_S = 10.0


class FakeNode:
    """A node as the broker sees it: birth, last will, QoS1 telemetry/events/acks."""

    def __init__(self, broker: Mosquitto, node: str, site: str = SITE) -> None:
        self.node, self.site = node, site
        self.connected = threading.Event()
        # No reconnecting: drop_connection() must leave the node gone.
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fake-{node}",
                                  protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        self.client.will_set(self.topic(protocol.STATUS), protocol.encode_status(False), qos=1,
                             retain=True)
        self.client.on_connect = lambda *args: self.connected.set()
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(WAIT_S), f"{node} could not connect"

    def topic(self, kind: str) -> str:
        return f"nt/{self.site}/{self.node}/{kind}"

    def publish(self, kind_or_topic: str, payload: bytes, retain: bool = False) -> None:
        topic = kind_or_topic if "/" in kind_or_topic else self.topic(kind_or_topic)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_S)

    def birth(self) -> None:
        self.publish(protocol.STATUS, protocol.encode_status(
            True, role="garden", fw="0.1.0", board="esp32_devkitc", uptime_s=3, seq_next=1,
            ts=T0), retain=True)

    def telemetry(self, seq: int, **values: float) -> None:
        self.publish(protocol.TELEMETRY,
                     protocol.encode_telemetry([{"seq": seq, "ts": T0 + seq, "values": values}]))

    def drop_connection(self) -> None:
        """Vanish without DISCONNECT, as a node losing power does: the broker sends the will."""
        sock: Any = self.client.socket()
        sock.shutdown(socket.SHUT_RDWR)  # paho's thread sees the socket die and ends
        self.client.loop_stop()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gw.db"


@pytest.fixture
def gateway(mosquitto: Mosquitto, db_path: Path) -> Iterator[Gateway]:
    gw = Gateway(SITE, mosquitto.host, mosquitto.port, db_path)
    gw.start()
    try:
        gw.wait_connected(WAIT_S)
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def node(mosquitto: Mosquitto) -> Iterator[FakeNode]:
    fake = FakeNode(mosquitto, "bed-1")
    yield fake
    fake.close()


@pytest.fixture
def store(db_path: Path, gateway: Gateway) -> Iterator[Store]:
    with Store(db_path) as reader:
        yield reader


def wait_messages(gateway: Gateway, count: int) -> None:
    wait_for(lambda: gateway.stats.messages >= count, WAIT_S, f"{count} messages ingested")


def test_telemetry_rows_land(gateway: Gateway, node: FakeNode, store: Store) -> None:
    for seq in range(1, 4):
        node.telemetry(seq, soil_moisture=40.0 + seq, pump=0.0)
    wait_messages(gateway, 3)
    moisture = store.readings(node="bed-1", quantity="soil_moisture")
    assert [(r.seq, r.ts, r.value) for r in moisture] == [
        (1, T0 + 1, 41.0), (2, T0 + 2, 42.0), (3, T0 + 3, 43.0)
    ]
    assert gateway.stats.readings_added == 6
    assert store.nodes()[0].last_seen is not None


def test_wait_stored_returns_once_the_messages_are_committed(
    gateway: Gateway, node: FakeNode, store: Store
) -> None:
    assert gateway.wait_stored(1, 0.05) is False  # nothing sent yet: times out
    for seq in range(1, 3):
        node.telemetry(seq, soil_moisture=40.0)
    assert gateway.wait_stored(2, WAIT_S) is True
    assert store.counts()["readings"] == 2  # committed before it returned


def test_same_seq_delivered_twice_is_stored_once(
    gateway: Gateway, node: FakeNode, store: Store
) -> None:
    node.telemetry(5, soil_moisture=40.0)
    node.telemetry(5, soil_moisture=40.0)
    wait_messages(gateway, 2)
    assert store.counts()["readings"] == 1
    assert gateway.stats.readings_duplicate == 1


BAD_MESSAGES = [
    ("telemetry", b'{"v": 1, "batch": [', "telemetry: not JSON"),
    ("telemetry", protocol.encode_telemetry([{"seq": 2, "ts": T0, "values": {"soil_moist": 1}}]),
     "telemetry.batch[0].values.soil_moist: unknown quantity"),
    ("nt/home/Bed 1/telemetry",
     protocol.encode_telemetry([{"seq": 2, "ts": T0, "values": {"pump": 1}}]),
     "topic node: 'Bed 1' is not a valid name"),
    ("telemetry", b'{"v": 1, "batch": [{"seq": 2, "ts": 1790000000, "values": {"pump": NaN}}]}',
     "telemetry.batch[0].values.pump: must be a finite number"),
    ("event", b"[" * 100_000, "event: not JSON"),
    ("status", b'{"v": 1, "online": "yes"}', "status.online: must be true or false"),
]


def test_bad_messages_become_dead_letters_between_good_ones(
    mosquitto: Mosquitto, db_path: Path, gateway: Gateway, node: FakeNode, store: Store
) -> None:
    node.telemetry(1, soil_moisture=40.0)
    for topic, payload, _ in BAD_MESSAGES:
        node.publish(topic, payload)
    node.telemetry(3, soil_moisture=42.0)
    wait_messages(gateway, len(BAD_MESSAGES) + 2)

    assert [r.seq for r in store.readings()] == [1, 3]
    letters = store.dead_letters()
    assert gateway.stats.dead_letters == len(letters) == len(BAD_MESSAGES)
    for letter, (topic, payload, reason) in zip(letters, BAD_MESSAGES, strict=True):
        assert letter.topic == (topic if "/" in topic else node.topic(topic))
        assert letter.payload == payload
        assert reason in letter.reason

    # They were acknowledged: a new gateway on the same session gets none of them again.
    gateway.stop()
    again = Gateway(SITE, mosquitto.host, mosquitto.port, db_path)
    again.start()
    try:
        again.wait_connected(WAIT_S)
        node.telemetry(4, soil_moisture=43.0)
        wait_messages(again, 1)
        assert again.stats.messages == 1
        assert store.counts()["dead_letters"] == len(BAD_MESSAGES)
    finally:
        again.stop()


def test_birth_and_last_will_are_logged_once_each(
    gateway: Gateway, mosquitto: Mosquitto, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_gateway.ingest")
    node = FakeNode(mosquitto, "bed-2")
    node.birth()
    node.birth()  # e.g. the node reconnected: still online, nothing to say
    wait_messages(gateway, 2)
    assert store.nodes()[0].online is True

    node.drop_connection()
    wait_for(lambda: store.nodes()[0].online is False, WAIT_S, "bed-2 offline after its will")

    def logged_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "node bed-2 is" in r.getMessage()]

    # Logged by the writer thread just after the commit the store shows.
    wait_for(lambda: len(logged_lines()) >= 2, WAIT_S, "the offline line")
    logged = logged_lines()
    assert logged == [
        "node bed-2 is online (garden, fw 0.1.0, board esp32_devkitc)",
        "node bed-2 is offline",
    ]


def test_messages_sent_while_gateway_is_down_are_stored_after_restart(
    mosquitto: Mosquitto, db_path: Path, gateway: Gateway, node: FakeNode, store: Store
) -> None:
    gateway.stop()  # the broker keeps the session and queues for it
    for seq in range(1, 21):
        node.telemetry(seq, soil_moisture=float(seq))
    restarted = Gateway(SITE, mosquitto.host, mosquitto.port, db_path)
    restarted.start()
    try:
        wait_for(lambda: store.counts()["readings"] == 20, WAIT_S, "20 queued readings")
    finally:
        restarted.stop()


def test_gateway_reconnects_after_broker_restart(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker-with-persistence", extra_config="") as broker:
        gw = Gateway(SITE, broker.host, broker.port, tmp_path / "gw.db")
        gw.start()
        try:
            gw.wait_connected(WAIT_S)
            broker.restart()  # the gateway's session and subscriptions survive in the broker
            node = FakeNode(broker, "bed-3")
            try:
                node.telemetry(1, pump=1.0)  # queued for the gateway until it reconnects
                wait_messages(gw, 1)
                gw.wait_connected(WAIT_S)
            finally:
                node.close()
        finally:
            gw.stop()


def test_message_that_could_not_be_stored_is_not_acked_and_comes_back(
    mosquitto: Mosquitto, db_path: Path, gateway: Gateway, node: FakeNode, store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def disk_full(self: Store, messages: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Store, "write", disk_full)
    node.telemetry(1, soil_moisture=40.0)
    wait_for(lambda: gateway.stats.store_errors >= 1, WAIT_S, "the failed write")
    gateway.stop()
    monkeypatch.undo()

    restarted = Gateway(SITE, mosquitto.host, mosquitto.port, db_path)
    restarted.start()
    try:
        wait_for(lambda: store.counts()["readings"] == 1, WAIT_S, "the redelivered reading")
    finally:
        restarted.stop()


def test_ack_and_event_are_stored(gateway: Gateway, node: FakeNode, store: Store) -> None:
    node.publish(protocol.ACK, protocol.encode_ack("abc123", True, "started", T0))
    node.publish(protocol.EVENT, protocol.encode_event(9, T0, "actuator", "pump", "on"))
    wait_messages(gateway, 2)
    assert store.acks() == [Ack(SITE, "bed-1", "abc123", True, "started", "", T0,
                                store.acks()[0].received_at)]
    assert [(e.seq, e.kind, e.name, e.state) for e in store.events()] == [
        (9, "actuator", "pump", "on")
    ]


def test_wrong_password_is_a_clear_refusal(tmp_path: Path) -> None:
    password_file = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(password_file), "gw", "right"],
                   check=True, capture_output=True, timeout=WAIT_S)
    config = f"allow_anonymous false\npassword_file {password_file}\n"
    with Mosquitto(tmp_path / "broker-with-passwords", extra_config=config) as broker:
        wrong = Gateway(SITE, broker.host, broker.port, tmp_path / "gw.db", username="gw",
                        password="wrong")
        wrong.start()
        try:
            with pytest.raises(BrokerRefused, match=r"Not authorized.*--password-file"):
                wrong.wait_connected(WAIT_S)
        finally:
            wrong.stop()
        right = Gateway(SITE, broker.host, broker.port, tmp_path / "gw.db", username="gw",
                        password="right")
        right.start()
        try:
            right.wait_connected(WAIT_S)
        finally:
            right.stop()


# ---- decoding, without a broker ---------------------------------------------------------------


def test_decode_maps_each_topic_kind() -> None:
    def decode(kind: str, payload: bytes) -> object:
        return decode_message(SITE, f"nt/{SITE}/bed-1/{kind}", payload, T0 + 1)

    telemetry = decode("telemetry", protocol.encode_telemetry(
        [{"seq": 1, "ts": T0, "values": {"pump": 1, "soil_raw": 30000}}]))
    assert isinstance(telemetry, Telemetry)
    assert [(r.quantity, r.value) for r in telemetry.readings] == [("pump", 1.0),
                                                                   ("soil_raw", 30000.0)]
    assert decode("status", protocol.encode_status(False)) == Status(SITE, "bed-1", False, T0 + 1)
    event = decode("event", protocol.encode_event(2, T0, "fault", "soil", "missing", "ENODEV"))
    assert event == Event(SITE, "bed-1", 2, T0, "fault", "soil", "missing", "ENODEV", T0 + 1)
    ack = decode("ack", protocol.encode_ack("id1", False, "refused", T0, "tank empty"))
    assert ack == Ack(SITE, "bed-1", "id1", False, "refused", "tank empty", T0, T0 + 1)


@pytest.mark.parametrize(("topic", "reason"), [
    ("nt/elsewhere/bed-1/telemetry", "not this gateway's"),
    ("nt/home/bed-1/cmd", "does not ingest 'cmd'"),
    ("nt/home/bed-1/telemetry/extra", "not of the form"),
])
def test_decode_refuses_topics_outside_the_ingest_set(topic: str, reason: str) -> None:
    letter = decode_message(SITE, topic, b"{}", T0)
    assert isinstance(letter, DeadLetter)
    assert reason in letter.reason


# ---- time sync and gap reporting, through the real gateway ------------------------------------


def test_gateway_sends_the_time_once_connected_and_when_a_node_comes_online(
    mosquitto: Mosquitto, db_path: Path
) -> None:
    from tests.test_timesync import TimeListener

    listener = TimeListener(mosquitto, SITE)
    gw = Gateway(SITE, mosquitto.host, mosquitto.port, db_path, time_interval_s=3600)
    node = FakeNode(mosquitto, "bed-4")
    try:
        gw.start()
        gw.wait_connected(WAIT_S)
        wait_for(lambda: listener.count() == 1, WAIT_S, "the time at connect")
        node.birth()  # a node that just booted gets the time now, not an hour later
        wait_for(lambda: listener.count() == 2, WAIT_S, "the time after the birth")
        _, msg, retained = listener.messages[1]
        assert msg["interval_s"] == 3600 and not retained
    finally:
        node.close()
        gw.stop()
        listener.close()


def test_gateway_reports_a_gap_and_closes_it_after_a_restart(
    mosquitto: Mosquitto, db_path: Path, node: FakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    from edge_gateway.gaps import LOST, list_gaps

    caplog.set_level(logging.WARNING, logger="edge_gateway.gaps")
    gw = Gateway(SITE, mosquitto.host, mosquitto.port, db_path, gap_settle_s=0.2)
    gw.start()
    try:
        gw.wait_connected(WAIT_S)
        node.birth()  # seq_next 1
        for seq in (1, 2, 4, 5):
            node.telemetry(seq, soil_moisture=40.0)
        with Store(db_path) as store:
            wait_for(lambda: list_gaps(store) != [], WAIT_S, "the gap to be reported")
            [gap] = list_gaps(store)
        assert (gap.node, gap.first_seq, gap.last_seq, gap.cause) == ("bed-1", 3, 3, LOST)
        assert caplog.messages == ["node bed-1: seq 3 (1) lost: never stored, not a reboot skip"]
    finally:
        gw.stop()
    again = Gateway(SITE, mosquitto.host, mosquitto.port, db_path, gap_settle_s=0.2)
    again.start()
    try:
        again.wait_connected(WAIT_S)
        node.telemetry(3, soil_moisture=40.0)  # late after all
        with Store(db_path) as store:
            wait_for(lambda: list_gaps(store, open_only=True) == [], WAIT_S, "the gap closed")
            assert list_gaps(store)[0].filled_at is not None
    finally:
        again.stop()


# ---- batching, graceful stop, acknowledgements ------------------------------------------------


def test_stop_stores_and_acknowledges_what_is_queued(
    mosquitto: Mosquitto, db_path: Path, gateway: Gateway, node: FakeNode, store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate, entered = threading.Event(), threading.Event()
    original_write = Store.write

    def gated_write(self: Store, messages: list[Message]) -> WriteResult:
        entered.set()
        assert gate.wait(WAIT_S)
        return original_write(self, messages)

    monkeypatch.setattr(Store, "write", gated_write)
    node.telemetry(1, pump=1.0)
    assert entered.wait(WAIT_S)  # the writer holds the first one
    for seq in range(2, 21):
        node.telemetry(seq, pump=1.0)
    wait_for(lambda: gateway.stats.pending == 19, WAIT_S, "19 deliveries queued")
    stopper = threading.Thread(target=gateway.stop)
    stopper.start()
    gate.set()
    stopper.join(WAIT_S)
    assert not stopper.is_alive()
    assert store.counts()["readings"] == 20
    assert gateway.stats.batches == 2  # the one held, then the 19 queued behind it
    monkeypatch.undo()

    again = Gateway(SITE, mosquitto.host, mosquitto.port, db_path)
    again.start()
    try:
        again.wait_connected(WAIT_S)
        node.telemetry(21, pump=1.0)
        wait_messages(again, 1)
        assert again.stats.messages == 1  # all 20 were acknowledged before the DISCONNECT
    finally:
        again.stop()


def test_a_delivery_from_an_ended_connection_is_stored_but_not_acknowledged(
    gateway: Gateway,
) -> None:
    old = Delivery("nt/home/bed-1/telemetry", b"{", 7, 1, gateway._session - 1, T0)
    gateway._ack([old])  # a PUBACK for mid 7 now could acknowledge another message
    assert gateway.stats.not_acked_reconnected == 1
