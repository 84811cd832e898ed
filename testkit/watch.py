"""A paho subscriber for tests: the independent witness of what reached the broker."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from paho.mqtt.client import Client as PahoClient
from paho.mqtt.client import MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion

from testkit.mosquitto import Mosquitto


class Watcher:
    """Subscribes to `topic` (again after every reconnect) and records each message.

    With a fixed client_id and clean_session=False the broker queues what arrives while the
    watcher is away, e.g. across a broker restart with persistence.
    """

    def __init__(
        self,
        broker: Mosquitto,
        topic: str,
        client_id: str | None = None,
        clean_session: bool = True,
    ) -> None:
        self.messages: list[MQTTMessage] = []
        self._arrived = threading.Condition()
        self._cursor = 0
        subscribed = threading.Event()
        self.client = PahoClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"watch-{uuid.uuid4().hex}",
            clean_session=clean_session,
        )

        def subscribe_when_connected(client: PahoClient, *_: object) -> None:
            client.subscribe(topic, qos=1)

        self.client.on_connect = subscribe_when_connected
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._record
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not subscribed.wait(5):
            self.close()
            raise AssertionError(f"paho watcher could not subscribe to {topic}")

    def _record(self, client: PahoClient, userdata: Any, message: MQTTMessage) -> None:
        with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()

    def payloads(self, topic: str | None = None) -> list[bytes]:
        with self._arrived:
            return [bytes(m.payload) for m in self.messages if topic in (None, m.topic)]

    def next_payload(self, timeout: float = 5) -> bytes:
        """The next message not yet taken by next_payload, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while self._cursor >= len(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no message within {timeout}s")
                self._arrived.wait(remaining)
            self._cursor += 1
            return bytes(self.messages[self._cursor - 1].payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
