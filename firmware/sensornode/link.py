# The node's link to the broker: Wi-Fi, then one MQTT client for the node's whole life with a
# persistent session (so unacknowledged publishes are resent with DUP after a reconnect),
# reconnecting with exponential backoff and jitter. Nothing here blocks the control loop.
import asyncio
import random

from sensornode import compat, protocol
from sensornode.net.mqtt import MQTTClient, MQTTError

_WIFI_WAIT_MS = 10000
_BACKOFF_MAX_S = 30


class Link:
    def __init__(self, cfg, board, on_message, on_up, log, client_factory=MQTTClient):
        self._cfg = cfg
        self._board = board
        self._on_up = on_up  # async callable(client): subscribe, birth; raise to retry
        self._log = log
        site, node = cfg["site"], cfg["node"]
        self.topic_status = protocol.node_topic(site, node, protocol.STATUS)
        broker = cfg["broker"]
        self.client = client_factory(
            node,
            broker["host"],
            port=broker["port"],
            username=broker["username"] or node,
            password=broker["password"] or None,
            keepalive_s=broker["keepalive_s"],
            clean_session=False,
            will=(self.topic_status, protocol.encode_status(False), 1, True),
            ssl={"cafile": broker["ca_file"]} if broker["ca_file"] else None,
        )
        self.client.on_message = on_message
        self.client.on_disconnect = self._lost
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self.connects = 0

    @property
    def is_up(self):
        return self._up.is_set()

    async def connected(self):
        """The client, once the link is up (waits while it is down)."""
        await self._up.wait()
        return self.client

    def _lost(self, reason):
        self._log("link down:", reason)
        self._up.clear()
        self._down.set()

    async def _wifi_up(self):
        if self._board.wlan_connected():
            return True
        self._board.wlan_connect(self._cfg["wifi"]["ssid"], self._cfg["wifi"]["password"])
        start = compat.ticks_ms()
        while compat.ticks_diff(compat.ticks_ms(), start) < _WIFI_WAIT_MS:
            if self._board.wlan_connected():
                return True
            await asyncio.sleep(0.2)
        return False

    async def run(self, on_change):
        backoff_s = 1
        while True:
            try:
                if await self._wifi_up():
                    self._down.clear()
                    await self.client.connect()
                    await self._on_up(self.client)
                    self.connects += 1
                    self._up.set()
                    on_change()
                    backoff_s = 1
                    await self._down.wait()
                else:
                    self._log("wifi not connected")
            except (MQTTError, OSError) as exc:
                self._log("link down:", exc)
            self._up.clear()
            on_change()
            if self.client.is_connected:
                try:
                    await self.client.disconnect()
                except (MQTTError, OSError):
                    pass
            # Jitter spreads a fleet's reconnects after a broker restart.
            await asyncio.sleep(backoff_s + random.getrandbits(10) / 1024)
            backoff_s = min(backoff_s * 2, _BACKOFF_MAX_S)
