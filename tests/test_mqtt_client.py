"""The node's asyncio MQTT client against a real mosquitto, a fault proxy in front of it,
and scripted fake brokers for what a well-behaved broker never sends."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any

import paho.mqtt.publish as paho_publish
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sensornode.net.mqtt import (
    MAX_REMAINING_LENGTH,
    MQTTClient,
    MQTTConnectionError,
    MQTTConnectionRefused,
    MQTTError,
    MQTTProtocolError,
    MQTTTimeout,
    decode_remaining_length,
    encode_remaining_length,
)

from testkit.mosquitto import Mosquitto, free_port
from testkit.proxy import FaultProxy
from testkit.watch import Watcher

TEST_TIMEOUT_S = 15

AsyncTest = Callable[..., Coroutine[Any, Any, None]]


def run_async(test: AsyncTest) -> Callable[..., None]:
    """Run an async test body in a fresh event loop, bounded as a whole."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), TEST_TIMEOUT_S))

    return wrapper


async def eventually(predicate: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def new_client(port: int, host: str = "127.0.0.1", **kwargs: Any) -> MQTTClient:
    return MQTTClient(f"node-{uuid.uuid4().hex[:8]}", host, port, **kwargs)


class Recorder:
    """Collects what a client reports through its callbacks."""

    def __init__(self, client: MQTTClient) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.disconnects: list[str] = []
        self.disconnected_at: float | None = None
        client.on_message = lambda topic, payload, retained: self.messages.append(
            (topic, payload, retained)
        )
        client.on_disconnect = self._disconnected

    def _disconnected(self, reason: str) -> None:
        self.disconnects.append(reason)
        self.disconnected_at = time.monotonic()


@pytest.fixture
def watch(mosquitto: Mosquitto) -> Iterator[Callable[[str], Watcher]]:
    watchers: list[Watcher] = []

    def start(topic: str) -> Watcher:
        watchers.append(Watcher(mosquitto, topic))
        return watchers[-1]

    yield start
    for watcher in watchers:
        watcher.close()


async def paho_send(
    broker: Mosquitto, topic: str, payload: bytes, qos: int = 1, retain: bool = False
) -> None:
    await asyncio.to_thread(
        paho_publish.single,
        topic,
        payload,
        qos=qos,
        retain=retain,
        hostname=broker.host,
        port=broker.port,
    )


async def closed(writer: asyncio.StreamWriter) -> None:
    """Wait for a stream to close, taking its reset error (if any) along: an error nobody
    retrieves gets logged at interpreter exit."""
    with contextlib.suppress(OSError):
        await writer.wait_closed()


@pytest.fixture
def proxy(mosquitto: Mosquitto) -> Iterator[FaultProxy]:
    """A fault-injecting path to the test's broker (testkit.proxy): cut() resets the sockets
    (a crash or a pulled cable), blackhole() keeps them open while nothing flows (a half-open
    link after a Wi-Fi or NAT drop)."""
    with FaultProxy(mosquitto.port) as running:
        yield running


# ---- scripted fake brokers -------------------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def fake_broker(script: Script) -> AsyncIterator[int]:
    """Serve `script` as the broker for every connection; yields the port."""
    sessions: list[asyncio.Task[Any]] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        assert current is not None
        sessions.append(current)
        try:
            await script(reader, writer)
        finally:
            writer.close()
            await closed(writer)

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The test's own minimal MQTT framing, independent of the code under test."""
    first = (await reader.readexactly(1))[0]
    length = shift = 0
    while True:
        digit = (await reader.readexactly(1))[0]
        length |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            return first, await reader.readexactly(length)


CONNACK_OK = b"\x20\x02\x00\x00"


async def accept_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    first, body = await read_packet(reader)
    assert first == 0x10
    writer.write(CONNACK_OK)
    await writer.drain()
    return body


async def forever() -> None:
    await asyncio.Event().wait()


# ---- remaining-length codec ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"),
        (MAX_REMAINING_LENGTH, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length_matches_spec_examples(length: int, encoded: bytes) -> None:
    assert encode_remaining_length(length) == encoded
    assert decode_remaining_length(encoded) == (length, len(encoded))


@pytest.mark.parametrize("length", [-1, MAX_REMAINING_LENGTH + 1])
def test_remaining_length_outside_mqtt_range_is_refused(length: int) -> None:
    with pytest.raises(ValueError):
        encode_remaining_length(length)


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff\xff", b"\x80\x80\x80\x80\x01"])
def test_truncated_or_overlong_remaining_length_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(MQTTProtocolError):
        decode_remaining_length(data)


@given(st.integers(0, MAX_REMAINING_LENGTH), st.binary(max_size=5), st.binary(max_size=5))
def test_remaining_length_round_trips_inside_a_buffer(
    length: int, before: bytes, after: bytes
) -> None:
    encoded = encode_remaining_length(length)
    minimal_size = 1 + (length > 127) + (length > 16383) + (length > 2097151)
    assert len(encoded) == minimal_size
    assert decode_remaining_length(before + encoded + after, len(before)) == (
        length,
        len(before) + len(encoded),
    )


# ---- against a real mosquitto ----------------------------------------------------------------


@pytest.mark.parametrize("handler_kind", ["plain", "async"])
@run_async
async def test_subscribe_then_receive_what_paho_publishes(
    mosquitto: Mosquitto, handler_kind: str
) -> None:
    client = new_client(mosquitto.port)
    received: list[tuple[str, bytes, bool]] = []
    if handler_kind == "plain":
        client.on_message = lambda *message: received.append(message)
    else:

        async def handle(*message: Any) -> None:
            await asyncio.sleep(0)
            received.append(message)

        client.on_message = handle
    await client.connect()
    assert client.is_connected
    assert await client.subscribe("nt/s1/n1/cmd", qos=1) == 1
    assert await client.subscribe("nt/s1/+/config", qos=0) == 0
    await paho_send(mosquitto, "nt/s1/n1/cmd", b'{"id":"c1"}', qos=1)
    await paho_send(mosquitto, "nt/s1/n1/config", b"\x00\xffbinary", qos=0)
    await eventually(lambda: len(received) == 2, "both messages")
    assert sorted(received) == [
        ("nt/s1/n1/cmd", b'{"id":"c1"}', False),
        ("nt/s1/n1/config", b"\x00\xffbinary", False),
    ]
    assert client.stats["received"] == 2
    await client.disconnect()
    assert not client.is_connected


@run_async
async def test_qos1_publish_reaches_the_broker(
    mosquitto: Mosquitto, watch: Callable[[str], Watcher]
) -> None:
    watcher = await asyncio.to_thread(watch, "nt/s1/n1/telemetry")
    client = new_client(mosquitto.port)
    await client.connect()
    big = bytes(range(256)) * 80  # 20 KB: a 3-byte remaining length
    await client.publish("nt/s1/n1/telemetry", b"first", qos=1)
    await client.publish("nt/s1/n1/telemetry", big, qos=1)
    await client.publish("nt/s1/n1/telemetry", "text", qos=0)
    await eventually(lambda: len(watcher.messages) == 3, "three messages at the watcher")
    assert watcher.payloads() == [b"first", big, b"text"]
    assert client.stats["sent"] == 3
    await client.disconnect()


@run_async
async def test_retained_flag_is_reported_to_late_subscribers(mosquitto: Mosquitto) -> None:
    publisher = new_client(mosquitto.port)
    await publisher.connect()
    await publisher.publish("nt/s1/n1/status", b"online", qos=1, retain=True)
    subscriber = new_client(mosquitto.port)
    seen = Recorder(subscriber)
    await subscriber.connect()
    await subscriber.subscribe("nt/s1/n1/status")
    await eventually(lambda: seen.messages, "the retained message")
    await publisher.publish("nt/s1/n1/status", b"live", qos=1, retain=True)
    await eventually(lambda: len(seen.messages) == 2, "the live message")
    # Retained only when replayed from the store; a live one arrives with retain clear.
    assert seen.messages == [
        ("nt/s1/n1/status", b"online", True),
        ("nt/s1/n1/status", b"live", False),
    ]
    await publisher.disconnect()
    await subscriber.disconnect()


@run_async
async def test_will_is_published_when_the_link_breaks_without_disconnect(
    proxy: FaultProxy, watch: Callable[[str], Watcher]
) -> None:
    watcher = await asyncio.to_thread(watch, "nt/s1/n1/status")
    client = new_client(proxy.port, will=("nt/s1/n1/status", b"offline", 1, True))
    seen = Recorder(client)
    await client.connect()
    await client.publish("nt/s1/n1/status", b"online", qos=1, retain=True)
    proxy.cut()
    await eventually(lambda: watcher.payloads() == [b"online", b"offline"], "the will")
    await eventually(lambda: seen.disconnects, "on_disconnect")
    assert not client.is_connected


@run_async
async def test_clean_disconnect_suppresses_the_will(
    mosquitto: Mosquitto, watch: Callable[[str], Watcher]
) -> None:
    watcher = await asyncio.to_thread(watch, "nt/s1/#")
    client = new_client(mosquitto.port, will=("nt/s1/n1/status", b"offline", 1, False))
    seen = Recorder(client)
    await client.connect()
    await client.disconnect()
    await client.disconnect()  # a second call is a no-op
    await eventually(lambda: seen.disconnects, "on_disconnect")
    assert seen.disconnects == ["client disconnected"]
    # A marker published after the disconnect: once it arrives, a will would have too.
    await paho_send(mosquitto, "nt/s1/marker", b"m")
    await eventually(lambda: watcher.messages, "the marker")
    assert watcher.payloads() == [b"m"]


@run_async
async def test_keepalive_pings_keep_an_idle_link_up(
    mosquitto: Mosquitto, watch: Callable[[str], Watcher]
) -> None:
    watcher = await asyncio.to_thread(watch, "nt/s1/n1/#")
    client = new_client(mosquitto.port, keepalive_s=1, will=("nt/s1/n1/status", b"dead", 0, False))
    seen = Recorder(client)
    await client.connect()
    # The subject of this test is elapsed idle time: mosquitto drops a client that is silent
    # for 1.5 x keepalive, so 3.2 s of idleness is two such windows.
    await asyncio.sleep(3.2)
    assert client.is_connected and seen.disconnects == []
    assert client.stats["pings"] >= 2
    await client.publish("nt/s1/n1/telemetry", b"still here", qos=1)
    await eventually(lambda: watcher.messages, "the publish after idling")
    assert watcher.payloads() == [b"still here"]  # and no will: the broker never dropped us
    await client.disconnect()


@run_async
async def test_broker_stop_reports_disconnect_and_publish_fails_fast(mosquitto: Mosquitto) -> None:
    client = new_client(mosquitto.port)
    seen = Recorder(client)
    await client.connect()
    await asyncio.to_thread(mosquitto.stop)
    await eventually(lambda: seen.disconnects, "on_disconnect", timeout=2)
    assert seen.disconnects == ["connection closed by broker"]
    started = time.monotonic()
    for qos in (0, 1):
        with pytest.raises(MQTTConnectionError):
            await client.publish("nt/s1/n1/telemetry", b"x", qos=qos, timeout_ms=5000)
    with pytest.raises(MQTTConnectionError):
        await client.subscribe("nt/s1/n1/cmd")
    assert (
        time.monotonic() - started < 2.5
    )  # well before the 5 s timeout: the loss is noticed, not waited out
    # The same client object reconnects once the broker is back.
    await asyncio.to_thread(mosquitto.start)
    await client.connect()
    await client.publish("nt/s1/n1/telemetry", b"back", qos=1)
    await client.disconnect()
    await eventually(lambda: len(seen.disconnects) == 2, "the second on_disconnect")
    assert seen.disconnects == ["connection closed by broker", "client disconnected"]


@run_async
async def test_async_on_disconnect_may_reconnect(proxy: FaultProxy) -> None:
    client = new_client(proxy.port)
    reasons: list[str] = []

    async def reconnect(reason: str) -> None:
        reasons.append(reason)
        if len(reasons) == 1:
            await client.connect()

    client.on_disconnect = reconnect
    await client.connect()
    proxy.cut()
    await eventually(lambda: reasons and client.is_connected, "the reconnect")
    await client.publish("nt/s1/n1/telemetry", b"again", qos=1)
    await client.disconnect()
    await eventually(lambda: len(reasons) == 2, "on_disconnect after disconnect()")
    assert reasons[1] == "client disconnected"


@run_async
async def test_publish_waiting_for_puback_fails_when_the_link_breaks(proxy: FaultProxy) -> None:
    client = new_client(proxy.port)
    await client.connect()
    proxy.blackhole()  # the PUBACK will never come back
    publish = asyncio.create_task(
        client.publish("nt/s1/n1/telemetry", b"x", qos=1, timeout_ms=10000)
    )
    await asyncio.sleep(0.05)
    assert not publish.done()
    proxy.cut()
    started = time.monotonic()
    with pytest.raises(MQTTConnectionError, match="connection lost"):
        await publish
    assert time.monotonic() - started < 5  # well before the 10 s timeout


@run_async
async def test_handler_may_await_a_qos1_publish(
    mosquitto: Mosquitto, watch: Callable[[str], Watcher]
) -> None:
    """The command -> ack pattern: the reader must keep reading while a handler waits."""
    watcher = await asyncio.to_thread(watch, "nt/s1/n1/ack")
    client = new_client(mosquitto.port)

    async def answer(topic: str, payload: bytes, retained: bool) -> None:
        await client.publish("nt/s1/n1/ack", b"ack:" + payload, qos=1, timeout_ms=2000)

    client.on_message = answer
    await client.connect()
    await client.subscribe("nt/s1/n1/cmd")
    for number in range(3):
        await paho_send(mosquitto, "nt/s1/n1/cmd", b"c%d" % number)
    await eventually(lambda: len(watcher.messages) == 3, "three acks")
    assert watcher.payloads() == [b"ack:c0", b"ack:c1", b"ack:c2"]
    assert client.stats["callback_errors"] == 0
    await client.disconnect()


@run_async
async def test_inbox_overflow_is_dropped_and_counted(mosquitto: Mosquitto) -> None:
    client = new_client(mosquitto.port)
    release = asyncio.Event()
    handled: list[bytes] = []

    async def slow_handler(topic: str, payload: bytes, retained: bool) -> None:
        await release.wait()
        handled.append(payload)

    client.on_message = slow_handler
    await client.connect()
    await client.subscribe("nt/s1/flood", qos=0)
    sender = new_client(mosquitto.port)
    await sender.connect()
    for number in range(20):
        await sender.publish("nt/s1/flood", b"%d" % number, qos=0)
    await eventually(lambda: client.stats["received"] == 20, "all 20 at the client")
    # One message is in the handler, INBOX_SIZE wait behind it, the rest were dropped.
    assert client.stats["drops"] in (20 - MQTTClient.INBOX_SIZE - 1, 20 - MQTTClient.INBOX_SIZE)
    release.set()
    await eventually(lambda: len(handled) + client.stats["drops"] == 20, "the queue to drain")
    assert handled == sorted(handled, key=int)  # in arrival order
    assert client.is_connected
    await client.publish("nt/s1/flood", b"after", qos=1)  # the link is healthy
    await sender.disconnect()
    await client.disconnect()


@run_async
async def test_handler_errors_are_counted_not_fatal(mosquitto: Mosquitto) -> None:
    client = new_client(mosquitto.port)

    def broken(topic: str, payload: bytes, retained: bool) -> None:
        raise ValueError(payload)

    client.on_message = broken
    await client.connect()
    await client.subscribe("nt/s1/n1/cmd")
    await client.publish("nt/s1/n1/cmd", b"boom", qos=1)
    await eventually(lambda: client.stats["callback_errors"] == 1, "the handler error")
    assert isinstance(client.last_callback_error, ValueError)
    assert client.is_connected
    await client.publish("nt/s1/n1/cmd", b"boom again", qos=1)
    await eventually(lambda: client.stats["callback_errors"] == 2, "the second error")
    await client.disconnect()


@run_async
async def test_connect_to_a_closed_port_fails_fast() -> None:
    client = new_client(free_port())
    started = time.monotonic()
    with pytest.raises(MQTTConnectionError, match="cannot connect"):
        await client.connect(timeout_ms=3000)
    assert time.monotonic() - started < 1.5  # well before the 3 s timeout
    assert not client.is_connected


# ---- scripted fake brokers -------------------------------------------------------------------


@run_async
async def test_connect_packet_carries_credentials_will_and_session_flags() -> None:
    connects: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connects.append(await accept_connect(reader, writer))
        await forever()

    async with fake_broker(script) as port:
        client = MQTTClient(
            "n1",
            "127.0.0.1",
            port,
            username="user",
            password="pw",
            keepalive_s=300,
            clean_session=False,
            will=("nt/s/n1/status", b"off", 1, True),
        )
        await client.connect()
        assert connects == [
            b"\x00\x04MQTT\x04"
            + bytes([0x80 | 0x40 | 0x20 | 1 << 3 | 0x04])  # user, password, will retain/qos/flag
            + b"\x01\x2c"  # keepalive 300 s
            + b"\x00\x02n1"
            + b"\x00\x0ent/s/n1/status"
            + b"\x00\x03off"
            + b"\x00\x04user"
            + b"\x00\x02pw"
        ]
        await client.disconnect()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (1, "broker refused connection: unacceptable protocol version (CONNACK 1)"),
        (4, "broker refused connection: bad username or password (CONNACK 4)"),
        (5, "broker refused connection: not authorized (CONNACK 5)"),
        (42, "broker refused connection: unknown reason (CONNACK 42)"),
    ],
)
@run_async
async def test_connack_refusal_is_explained(code: int, message: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader)
        writer.write(bytes([0x20, 2, 0, code]))
        await writer.drain()
        await forever()

    async with fake_broker(script) as port:
        client = new_client(port)
        with pytest.raises(MQTTConnectionRefused) as refused:
            await client.connect()
        assert str(refused.value) == message
        assert refused.value.code == code
        assert not client.is_connected


@run_async
async def test_missing_connack_is_a_timeout() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader)
        await forever()

    async with fake_broker(script) as port:
        client = new_client(port)
        started = time.monotonic()
        with pytest.raises(MQTTTimeout, match="within 300 ms while waiting for CONNACK"):
            await client.connect(timeout_ms=300)
        assert 0.29 <= time.monotonic() - started < 2  # ms ticks may round down
        assert not client.is_connected


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"\xff\xff\xff\xff\xff", MQTTProtocolError),  # remaining length over 4 bytes
        (b"\x20\x03\x00\x00\x00", MQTTProtocolError),  # CONNACK of the wrong size
        (b"\x90\x02\x00\x01", MQTTProtocolError),  # not a CONNACK at all
        (b"\x20\xff\xff\xff\x7f", MQTTProtocolError),  # announces 256 MB: never buffered
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", MQTTConnectionError),  # PUBACK of 84 bytes, then EOF
        (b"", MQTTConnectionError),  # closes straight away
    ],
)
@run_async
async def test_garbage_instead_of_connack_fails_fast(reply: bytes, error: type) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader)
        writer.write(reply)
        await writer.drain()

    async with fake_broker(script) as port:
        client = new_client(port)
        started = time.monotonic()
        with pytest.raises(error):
            await client.connect(timeout_ms=3000)
        assert time.monotonic() - started < 1.5  # well before the 3 s timeout


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"\x00\x00", "unexpected packet type 0x00"),
        (b"\x40\x03\x00\x01\x00", "ack type 0x40 with 3 bytes"),
        (b"\x34\x05\x00\x01t\x00\x01", "PUBLISH with QoS 2"),
        (b"\x32\x03\x00\x05t", "PUBLISH shorter than its topic"),
        (b"\x30\x04\x00\x02\xff\xfe", "topic is not UTF-8"),
        (b"\x90\x03\x00\x01\x07", "SUBACK return code 0x07"),
    ],
)
@run_async
async def test_malformed_packet_closes_the_link_and_fails_waiters(
    garbage: bytes, reason: str
) -> None:
    got_publish = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_connect(reader, writer)
        await read_packet(reader)  # the QoS1 PUBLISH, never acked
        got_publish.set()
        writer.write(garbage)
        await writer.drain()
        await forever()

    async with fake_broker(script) as port:
        client = new_client(port)
        seen = Recorder(client)
        await client.connect()
        with pytest.raises(MQTTConnectionError, match="protocol error"):
            await client.publish("nt/s/n1/telemetry", b"x", qos=1, timeout_ms=3000)
        assert got_publish.is_set()
        assert len(seen.disconnects) == 1
        assert seen.disconnects[0].startswith("protocol error")
        assert reason in seen.disconnects[0]
        assert not client.is_connected


@run_async
async def test_refused_subscription_raises() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_connect(reader, writer)
        first, body = await read_packet(reader)
        assert first == 0x82
        assert body[2:] == b"\x00\x09nt/secret\x01"
        writer.write(b"\x90\x03" + body[:2] + b"\x80")
        await writer.drain()
        await forever()

    async with fake_broker(script) as port:
        client = new_client(port)
        await client.connect()
        with pytest.raises(MQTTError, match="refused subscription to 'nt/secret'"):
            await client.subscribe("nt/secret", qos=1)
        assert client.is_connected
        await client.disconnect()


@run_async
async def test_incoming_qos1_is_acked_after_the_handler_returns() -> None:
    events: list[str] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_connect(reader, writer)
        writer.write(b"\x32\x09\x00\x03a/b\x00\x07hi")  # QoS1, packet id 7, payload "hi"
        await writer.drain()
        first, body = await read_packet(reader)
        events.append(f"broker got {first:#04x} {body.hex()}")
        await forever()

    async def handler(topic: str, payload: bytes, retained: bool) -> None:
        events.append(f"handler start {topic} {payload!r}")
        await asyncio.sleep(0.05)  # a slow handler: the PUBACK must still wait for it
        events.append("handler end")

    async with fake_broker(script) as port:
        client = new_client(port)
        client.on_message = handler
        await client.connect()
        await eventually(lambda: len(events) == 3, "the PUBACK")
        assert events == ["handler start a/b b'hi'", "handler end", "broker got 0x40 0007"]
        await client.disconnect()


@run_async
async def test_a_stalled_write_closes_the_link() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_connect(reader, writer)
        await forever()  # never reads again: socket buffers fill up

    async with fake_broker(script) as port:
        client = new_client(port)
        client.SEND_TIMEOUT_MS = 300
        seen = Recorder(client)
        await client.connect()
        huge = bytes(32 * 1024 * 1024)  # far more than loopback socket buffers hold
        started = time.monotonic()
        with pytest.raises(MQTTTimeout, match="link closed"):
            await client.publish("t/x", huge, qos=0, timeout_ms=10000)
        assert time.monotonic() - started < 5  # well before the 10 s timeout
        await eventually(lambda: seen.disconnects, "on_disconnect")
        assert seen.disconnects == ["send stalled"]
        assert not client.is_connected


@run_async
async def test_missing_puback_is_a_timeout_that_keeps_the_link() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_connect(reader, writer)
        while True:
            _, body = await read_packet(reader)
            if body.endswith(b"ack me"):
                writer.write(b"\x40\x02" + body[5:7])  # id after the 3-byte topic field
                await writer.drain()

    async with fake_broker(script) as port:
        client = new_client(port)
        await client.connect()
        started = time.monotonic()
        with pytest.raises(MQTTTimeout, match="PUBACK"):
            await client.publish("t/x", b"lost", qos=1, timeout_ms=300)
        assert 0.29 <= time.monotonic() - started < 2  # ms ticks may round down
        assert client.is_connected
        await client.publish("t/x", b"ack me", qos=1, timeout_ms=2000)
        await client.disconnect()


@run_async
async def test_qos1_publish_returns_only_after_puback_and_the_window_is_bounded() -> None:
    publishes: list[int] = []  # packet ids in arrival order
    release = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_connect(reader, writer)
        to_ack: asyncio.Queue[int] = asyncio.Queue()

        async def ack_when_released() -> None:
            await release.wait()
            while True:
                packet_id = await to_ack.get()
                writer.write(b"\x40\x02" + packet_id.to_bytes(2, "big"))
                await writer.drain()

        acker = asyncio.create_task(ack_when_released())
        try:
            while True:
                _, body = await read_packet(reader)
                packet_id = int.from_bytes(body[5:7], "big")  # after the 3-byte topic field
                publishes.append(packet_id)
                to_ack.put_nowait(packet_id)
        finally:
            acker.cancel()

    slots = MQTTClient.INFLIGHT_SLOTS
    async with fake_broker(script) as port:
        client = new_client(port)
        await client.connect()
        tasks = [
            asyncio.create_task(client.publish("t/x", b"%d" % n, qos=1)) for n in range(slots + 1)
        ]
        await eventually(lambda: len(publishes) == slots, "a full window of PUBLISHes")
        # A negative check needs some time: a wrong client would finish or overrun by now.
        await asyncio.sleep(0.1)
        assert len(publishes) == slots
        assert not any(task.done() for task in tasks)
        release.set()
        await asyncio.gather(*tasks)
        assert len(publishes) == slots + 1
        assert len(set(publishes)) == slots + 1 and 0 not in publishes
        assert client.stats["sent"] == slots + 1
        await client.disconnect()
