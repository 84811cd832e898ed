"""testkit.proxy.FaultProxy against a real mosquitto, driven with raw MQTT over blocking sockets
(the test's own framing, independent of the proxy's) and with paho."""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator

import paho.mqtt.publish as paho_publish
import pytest

from testkit.mosquitto import Mosquitto, free_port
from testkit.proxy import MAX_FRAME, FaultProxy, FrameSplitter, Publish, frame_size
from testkit.watch import Watcher

PINGREQ, PINGRESP = b"\xc0\x00", b"\xd0\x00"


def mqtt_str(text: str) -> bytes:
    return struct.pack(">H", len(text)) + text.encode()


def packet(first: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes((first, len(body))) + body


def connect_packet(client_id: str) -> bytes:
    return packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c" + mqtt_str(client_id))


def publish_packet(topic: str, payload: bytes, packet_id: int, dup: bool = False) -> bytes:
    return packet(0x32 | (0x08 if dup else 0), mqtt_str(topic) + struct.pack(">H", packet_id)
                  + payload)


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack(">H", packet_id)


class RawClient:
    """A blocking-socket MQTT client: every read has a deadline."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float = 5) -> bytes:
        """The next whole packet; socket.timeout if none within timeout; b"" at EOF."""
        self.sock.settimeout(timeout)
        while (size := frame_size(self.buf)) is None or len(self.buf) < size:
            data = self.sock.recv(4096)
            if not data:
                return b""
            self.buf += data
        frame, self.buf = self.buf[:size], self.buf[size:]
        return frame

    def connect(self) -> None:
        self.send(connect_packet(f"raw-{uuid.uuid4().hex[:8]}"))
        assert self.read() == b"\x20\x02\x00\x00"

    def closed(self) -> bool:
        """True if the proxy closed the connection (FIN, or RST as an abort may send)."""
        try:
            return self.read() == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def proxy(mosquitto: Mosquitto) -> Iterator[FaultProxy]:
    with FaultProxy(mosquitto.port) as running:
        yield running


@pytest.fixture
def raw(proxy: FaultProxy) -> Iterator[RawClient]:
    client = RawClient(proxy)
    client.connect()
    yield client
    client.close()


# ---- the frame splitter ----------------------------------------------------------------------


def test_splitter_reassembles_packets_split_anywhere() -> None:
    big = bytes((0x30, 0x80, 0x01)) + bytes(128)  # a 2-byte remaining length
    stream = PINGREQ + publish_packet("a/b", b"x" * 100, 7) + puback(7) + big
    for cut_at in range(len(stream) + 1):
        splitter = FrameSplitter()
        frames = splitter.feed(stream[:cut_at]) + splitter.feed(stream[cut_at:])
        assert frames == [PINGREQ, publish_packet("a/b", b"x" * 100, 7), puback(7),
                          big]


def test_splitter_turns_raw_on_an_oversized_or_malformed_packet() -> None:
    splitter = FrameSplitter(max_frame=MAX_FRAME)
    huge = bytes((0x30, 0xFF, 0xFF, 0x7F))  # announces 2 MB
    assert splitter.feed(PINGREQ + huge) == [PINGREQ, huge]
    assert splitter.raw and splitter.feed(b"abc") == [b"abc"]
    malformed = FrameSplitter()
    assert malformed.feed(b"\x30\xff\xff\xff\xff\x01") == [b"\x30\xff\xff\xff\xff\x01"]
    assert malformed.raw


def test_only_loopback_addresses_are_accepted() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(1883, target_host="192.0.2.1")
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(1883, listen_host="0.0.0.0")


# ---- modes against mosquitto -------------------------------------------------------------------


def test_pass_forwards_both_ways_and_records_client_publishes(
    mosquitto: Mosquitto, proxy: FaultProxy, raw: RawClient
) -> None:
    watcher = Watcher(mosquitto, "t/#")
    try:
        raw.send(publish_packet("t/a", b"hello", 5))
        assert raw.read() == puback(5)
        raw.send(publish_packet("t/a", b"again", 5, dup=True))
        assert raw.read() == puback(5)
        assert watcher.next_payload() == b"hello"
        assert watcher.next_payload() == b"again"
    finally:
        watcher.close()
    assert proxy.publishes() == [
        Publish(1, False, 1, False, 5, "t/a", b"hello"),
        Publish(1, True, 1, False, 5, "t/a", b"again"),
    ]
    stats = proxy.stats
    assert (stats.connections, stats.active, stats.dropped_pubacks) == (1, 1, 0)
    connect_size = len(connect_packet("raw-12345678"))
    assert stats.bytes_to_broker == connect_size + 2 * len(publish_packet("t/a", b"hello", 5))
    assert stats.bytes_to_client == 4 + 2 * 4  # CONNACK, two PUBACKs


def test_paho_works_through_the_proxy(mosquitto: Mosquitto, proxy: FaultProxy) -> None:
    watcher = Watcher(mosquitto, "t/paho")
    try:
        paho_publish.single("t/paho", b"via proxy", qos=1, hostname=proxy.host, port=proxy.port)
        assert watcher.next_payload() == b"via proxy"
    finally:
        watcher.close()
    assert [p.payload for p in proxy.publishes()] == [b"via proxy"]


def test_blackhole_holds_traffic_without_closing_then_delivers_it(
    proxy: FaultProxy, raw: RawClient
) -> None:
    proxy.blackhole()
    assert proxy.mode == "blackhole"
    raw.send(PINGREQ)
    # A negative check needs time: the answer would be back within a millisecond if it flowed.
    with pytest.raises(TimeoutError):
        raw.read(timeout=0.5)  # neither an answer nor EOF: the link is half-open
    assert proxy.stats.active == 1
    proxy.pass_through()
    assert raw.read() == PINGRESP  # nothing was lost, as with TCP once the path is back


def test_new_connection_during_blackhole_gets_no_connack(proxy: FaultProxy) -> None:
    proxy.blackhole()
    late = RawClient(proxy)
    try:
        late.send(connect_packet("late"))
        with pytest.raises(TimeoutError):
            late.read(timeout=0.5)
        proxy.pass_through()
        assert late.read() == b"\x20\x02\x00\x00"
    finally:
        late.close()


def test_delay_adds_latency_each_way(proxy: FaultProxy, raw: RawClient) -> None:
    started = time.monotonic()
    raw.send(PINGREQ)
    assert raw.read() == PINGRESP
    direct = time.monotonic() - started
    proxy.delay(150)
    started = time.monotonic()
    raw.send(PINGREQ)
    assert raw.read() == PINGRESP
    delayed = time.monotonic() - started
    assert 0.3 <= delayed < 0.3 + 1.0, (direct, delayed)  # 150 ms there, 150 ms back
    proxy.pass_through()
    started = time.monotonic()
    raw.send(PINGREQ)
    assert raw.read() == PINGRESP
    assert time.monotonic() - started < 0.25


@pytest.mark.parametrize("reset", [True, False])
def test_cut_closes_every_connection_and_accepts_new_ones(
    proxy: FaultProxy, raw: RawClient, reset: bool
) -> None:
    other = RawClient(proxy)
    try:
        other.connect()
        assert proxy.cut(reset=reset) == 2
        for client in (raw, other):
            if reset:
                with pytest.raises(ConnectionResetError):
                    client.read()
            else:
                assert client.read() == b""  # FIN: a clean end of stream
    finally:
        other.close()
    stats = proxy.stats
    assert (stats.cut_connections, stats.active) == (2, 0)
    again = RawClient(proxy)
    try:
        again.connect()
    finally:
        again.close()


def test_drop_puback_drops_the_next_n_and_nothing_else(proxy: FaultProxy, raw: RawClient) -> None:
    proxy.drop_puback(count=2)
    for packet_id in (1, 2, 3):
        raw.send(publish_packet("t/drop", b"%d" % packet_id, packet_id))
    raw.send(PINGREQ)
    assert raw.read() == puback(3)  # 1 and 2 were dropped
    assert raw.read() == PINGRESP
    assert proxy.stats.dropped_pubacks == 2
    raw.send(publish_packet("t/drop", b"4", 4))
    assert raw.read() == puback(4)


def test_drop_puback_for_a_duration(proxy: FaultProxy, raw: RawClient) -> None:
    window_s = 0.5
    proxy.drop_puback(duration_s=window_s)
    window_ends = time.monotonic() + window_s
    raw.send(publish_packet("t/drop", b"in window", 1))
    proxy.wait_for(lambda: proxy.stats.dropped_pubacks == 1, 5, "the dropped PUBACK")
    # The subject is the window's length: wait it out, then PUBACKs flow again.
    time.sleep(max(0.0, window_ends - time.monotonic()) + 0.05)
    raw.send(publish_packet("t/drop", b"after", 2))
    assert raw.read() == puback(2)
    assert proxy.stats.dropped_pubacks == 1


def test_pass_through_ends_dropping(proxy: FaultProxy, raw: RawClient) -> None:
    proxy.drop_puback()
    raw.send(publish_packet("t/drop", b"x", 1))
    proxy.wait_for(lambda: proxy.stats.dropped_pubacks == 1, 5, "the dropped PUBACK")
    proxy.pass_through()
    raw.send(publish_packet("t/drop", b"y", 2))
    assert raw.read() == puback(2)


def test_broker_down_closes_the_client_connection(tmp_path: object) -> None:
    with FaultProxy(free_port()) as proxy:
        client = RawClient(proxy)
        try:
            client.send(connect_packet("nobody-home"))
            assert client.closed()
        finally:
            client.close()
        proxy.wait_for(lambda: proxy.stats.active == 0, 5, "the connection to end")


def test_stop_closes_connections_and_ends_the_thread(mosquitto: Mosquitto) -> None:
    before = {thread.ident for thread in threading.enumerate()}
    proxy = FaultProxy(mosquitto.port).start()
    client = RawClient(proxy)
    try:
        client.connect()
        proxy.blackhole()  # held data and a half-open link must not keep stop() waiting
        client.send(PINGREQ)
        proxy.stop()
        assert client.closed()
    finally:
        client.close()
        proxy.stop()  # a second stop is a no-op
    assert {thread.ident for thread in threading.enumerate()} <= before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=2).close()


def test_a_side_closing_during_blackhole_is_not_replayed_later(
    mosquitto: Mosquitto, proxy: FaultProxy, raw: RawClient
) -> None:
    watcher = Watcher(mosquitto, "t/stale")
    try:
        proxy.blackhole()
        raw.send(publish_packet("t/stale", b"never", 1))
        raw.close()  # the client gives up on the dead link
        proxy.wait_for(lambda: proxy.stats.closed_in_blackhole == 1, 5, "the client's close")
        assert proxy.stats.active == 1  # the broker side stays open: half-open
        proxy.pass_through()
        proxy.wait_for(lambda: proxy.stats.active == 0, 5, "the broker side to be closed")
        paho_publish.single("t/stale", b"marker", qos=1, hostname=mosquitto.host,
                            port=mosquitto.port)
        assert watcher.next_payload() == b"marker"  # and not the held PUBLISH before it
    finally:
        watcher.close()
    assert proxy.stats.bytes_to_broker == len(connect_packet("raw-12345678"))
