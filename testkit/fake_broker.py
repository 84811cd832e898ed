"""Scripted fake MQTT brokers for the node client's tests: a script (a coroutine given each
connection's reader and writer) plays the broker, so a test can send what a well-behaved broker
never does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any


async def closed(writer: asyncio.StreamWriter) -> None:
    """Wait for a stream to close, taking its reset error (if any) along: an error nobody
    retrieves gets logged at interpreter exit."""
    with contextlib.suppress(OSError):
        await writer.wait_closed()


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
