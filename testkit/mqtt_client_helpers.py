"""Helpers for the tests of the node's MQTT client (sensornode.net.mqtt) under CPython: async
test bodies in a bounded event loop, polling for a condition, a client with a unique id, and a
recorder of what the client reports through its callbacks."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from sensornode.net.mqtt import MQTTClient

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
