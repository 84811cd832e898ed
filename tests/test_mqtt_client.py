"""The node's asyncio MQTT client against a real mosquitto and a fault proxy in front of it.
Its behaviour against scripted fake brokers, for what a well-behaved broker never sends, is in
test_mqtt_fake_broker.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.publish as paho_publish
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sensornode.net.mqtt import (
    MAX_REMAINING_LENGTH,
    MQTTClient,
    MQTTConnectionError,
    MQTTProtocolError,
    decode_remaining_length,
    encode_remaining_length,
)

from testkit.mosquitto import Mosquitto, free_port
from testkit.mqtt_client_helpers import Recorder, eventually, new_client, run_async
from testkit.proxy import FaultProxy
from testkit.watch import Watcher

# ---- fixtures and helpers (test_mqtt_resilience.py uses them too) ----------------------------


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


@pytest.fixture
def proxy(mosquitto: Mosquitto) -> Iterator[FaultProxy]:
    """A fault-injecting path to the test's broker (testkit.proxy): cut() resets the sockets
    (a crash or a pulled cable), blackhole() keeps them open while nothing flows (a half-open
    link after a Wi-Fi or NAT drop)."""
    with FaultProxy(mosquitto.port) as running:
        yield running


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
