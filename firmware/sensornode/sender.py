# Moves records from the flash outbox to the broker, oldest first. A record leaves the outbox
# only after the broker PUBACKed it; a publish cut by a lost link is resent by the MQTT client
# with DUP after the reconnect (persistent session), and anything whose fate is unknown is
# sent again from the outbox. Storage at the gateway is exactly-once (dedup by node, seq).
import asyncio

from sensornode import protocol
from sensornode.net.mqtt import MQTTError, MQTTTimeout

TELEMETRY = 1  # outbox record kinds
EVENT = 2
MAX_BATCH = 20
MAX_BATCH_BYTES = 4096
PUBLISH_TIMEOUT_MS = 10000
_RETRY_S = 0.5
_DELIVERY_WAIT_MS = 5000


class Sender:
    def __init__(self, outbox, link, topic_telemetry, topic_event, log):
        self._outbox = outbox
        self._link = link
        self._topics = {TELEMETRY: topic_telemetry, EVENT: topic_event}
        self._log = log
        self._wake = asyncio.Event()
        self.sent = 0
        self.retransmit_drops = 0

    def wake(self):
        self._wake.set()

    def _next_message(self):
        """(kind, record count, payload) of the next publish, or None if nothing is pending."""
        records = self._outbox.peek(MAX_BATCH, MAX_BATCH_BYTES)
        if not records:
            return None
        kind = records[0][0]
        if kind != TELEMETRY:
            return kind, 1, records[0][2]
        count = 1
        while count < len(records) and records[count][0] == TELEMETRY:
            count += 1
        return kind, count, protocol.encode_telemetry_entries([r[2] for r in records[:count]])

    async def run(self):
        while True:
            client = await self._link.connected()
            self._wake.clear()
            message = self._next_message()
            if message is None:
                await self._wake.wait()
                continue
            kind, count, payload = message
            try:
                await client.publish(
                    self._topics[kind],
                    payload,
                    qos=1,
                    timeout_ms=PUBLISH_TIMEOUT_MS,
                    keep_on_timeout=True,
                )
            except MQTTTimeout as exc:
                if exc.delivery is None or not await self._retransmit(client, exc.delivery):
                    await asyncio.sleep(_RETRY_S)  # still in the outbox: sent again
                    continue
            except (MQTTError, OSError) as exc:
                # Still in the outbox: sent again once the link is back.
                self._log("publish not confirmed:", exc)
                await asyncio.sleep(_RETRY_S)
                continue
            self._outbox.ack(count)
            self.sent += count

    async def _retransmit(self, client, delivery):
        """No PUBACK in time on a link that looks alive: MQTT 3.1.1 resends only after a
        reconnect, so drop the link; the client resends the message with DUP as soon as the
        link is back. True once the broker has it, False if the client gave it up."""
        self._log("no PUBACK within %d ms: reconnecting to resend" % PUBLISH_TIMEOUT_MS)
        self.retransmit_drops += 1
        await client.drop("no PUBACK")
        while True:
            try:
                return await delivery.wait(_DELIVERY_WAIT_MS)
            except MQTTTimeout:
                continue  # the link is still down; the client keeps the message
