"""The node's asyncio MQTT client against scripted fake brokers (testkit.fake_broker): what a
well-behaved broker never sends, and exact bytes on the wire."""

from __future__ import annotations

import asyncio
import time

import pytest
from sensornode.net.mqtt import (
    MQTTClient,
    MQTTConnectionError,
    MQTTConnectionRefused,
    MQTTError,
    MQTTProtocolError,
    MQTTTimeout,
)

from testkit.fake_broker import accept_connect, fake_broker, forever, read_packet
from testkit.mqtt_client_helpers import Recorder, eventually, new_client, run_async


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
