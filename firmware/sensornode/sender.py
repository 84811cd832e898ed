# Moves records from the flash outbox to the broker, oldest first. A record leaves the outbox
# only after the broker PUBACKed it; a publish cut by a lost link is resent by the MQTT client
# with DUP after the reconnect (persistent session), and anything whose fate is unknown is
# sent again from the outbox. Storage at the gateway is exactly-once (dedup by node, seq).
#
# Records made before the clock knew the time (a cold-booted board without a plausible RTC,
# before the gateway's first time message) hold a pending stamp [boot, monotonic ms] as "ts"
# (timesync.Clock.stamp). They get their Unix time here, when they are sent: a record of this
# boot waits until the clock is synced (and holds back the ones behind it, so order is kept);
# one of an earlier boot that never synced can never have a time and is given up, reported
# through `on_unstampable(seq)` so the gateway files its seq as dropped, not lost.
import asyncio
import json

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
    def __init__(self, outbox, link, topic_telemetry, topic_event, log, clock=None,
                 on_unstampable=None):
        self._outbox = outbox
        self._clock = clock
        self._on_unstampable = on_unstampable
        self._link = link
        self._topics = {TELEMETRY: topic_telemetry, EVENT: topic_event}
        self._log = log
        self._wake = asyncio.Event()
        self.sent = 0
        self.retransmit_drops = 0
        self.unstampable = 0  # records given up: made before a time was known, in a past boot

    def wake(self):
        self._wake.set()

    def _next_message(self):
        """(kind, record count, payload) of the next publish, or None if nothing is pending."""
        for _ in range(self._outbox.pending + 1):  # a pass returns, or gives up one record
            records = self._outbox.peek(MAX_BATCH, MAX_BATCH_BYTES)
            if not records:
                return None
            payloads = []
            kind = records[0][0]
            for record_kind, seq, payload in records:
                if record_kind != kind or (kind != TELEMETRY and payloads):
                    break
                stamped = self._stamped(payload)
                if stamped is None:
                    break  # waits for the clock; what is before it can go
                if stamped is False:
                    if not payloads:
                        self._give_up(seq)
                        payloads = None
                    break
                payloads.append(stamped)
            if payloads is None:
                continue
            if not payloads:
                return None  # the oldest record waits for the time; a sync wakes the sender
            if kind != TELEMETRY:
                return kind, 1, payloads[0]
            return kind, len(payloads), protocol.encode_telemetry_entries(payloads)
        return None

    def _stamped(self, payload):
        """The payload with a Unix "ts"; None while its time is not known yet; False if it
        never will be."""
        if b'"ts":[' not in payload or self._clock is None:
            return payload
        obj = json.loads(payload)
        stamp = obj["ts"]
        ts = self._clock.resolve((stamp[0], stamp[1]))
        if ts is not None:
            obj["ts"] = ts
            return json.dumps(obj, separators=(",", ":")).encode()
        return None if stamp[0] == self._clock.boot else False

    def _give_up(self, seq):
        self._outbox.peek(1)
        self._outbox.ack(1)
        self.unstampable += 1
        self._log("record seq %d has no known time (an earlier boot never synced): dropped" % seq)
        if self._on_unstampable is not None:
            self._on_unstampable(seq)

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
