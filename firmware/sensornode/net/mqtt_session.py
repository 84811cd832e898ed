# The MQTT client's session state: the requests awaiting their ack (the in-flight window: slots,
# settling each request with its ack or an error, what a lost link ends) and the inbox of
# received messages waiting for the application. With clean_session=False the in-flight QoS1
# publishes outlive the connection, so the client can send them again (DUP flag, same packet id)
# after a reconnect. All bounded: no in-flight entry is added while INFLIGHT_SLOTS are taken
# (each holds only its own packet), and the inbox has a fixed size.
import asyncio

from sensornode.net.mqtt_link import wait_until
from sensornode.net.mqtt_packet import (
    DUP,
    PUBACK,
    MQTTError,
    MQTTProtocolError,
    MQTTTimeout,
    parse_ack,
    publish_header,
)


class Delivery:
    """A request awaiting its ack: a QoS1 PUBLISH (ack_type PUBACK) or a SUBSCRIBE (SUBACK).

    It is also the receipt the application gets for a publish that timed out but stayed in flight
    (publish(..., keep_on_timeout=True) raises MQTTTimeout with .delivery set):
    - acked: the broker's PUBACK arrived: the broker certainly has the message;
    - abandoned: the client gave it up (a clean session lost its link): it will not be resent;
    - neither: the client still holds it and resends it right after every connect().
    """

    def __init__(self, ack_type, packet_id, order):
        self.ack_type = ack_type
        self.packet_id = packet_id
        self.order = order  # creation order: MicroPython dicts do not keep insertion order
        self.packet = None  # the whole packet, resent as is (DUP set in place once it went out)
        self.sent = False  # written to a socket at least once (maybe partly)
        self.kept = False  # its caller stopped waiting; the client holds it until acked
        self.retransmits = 0
        self.result = None  # the ack's body, or the MQTTError that ended it
        self.done = asyncio.Event()

    @property
    def acked(self):
        return self.done.is_set() and not isinstance(self.result, MQTTError)

    @property
    def abandoned(self):
        return self.done.is_set() and isinstance(self.result, MQTTError)

    async def wait(self, timeout_ms):
        """True once acked, False once abandoned; MQTTTimeout while still in flight."""
        if self.done.is_set():
            return self.acked
        try:
            await asyncio.wait_for(self.done.wait(), timeout_ms / 1000)
        except asyncio.TimeoutError:
            raise MQTTTimeout("packet %d still unacknowledged after %d ms"
                              % (self.packet_id, timeout_ms)) from None
        return self.acked


class InFlight:
    """Deliveries by packet id. Ids run 1..65535 in turn and skip those still in flight. Counts
    in the client's stats: "sent" (a QoS1 publish acked) and "abandoned" (a kept one given up)."""

    def __init__(self, stats):
        self._entries = {}
        self._next_id = 0
        self._order = 0
        self._stats = stats
        self._slot_free = asyncio.Event()

    def __len__(self):
        return len(self._entries)

    def new_connection(self):
        """A fresh event for waiters on a slot (CPython binds one to an event loop); those of the
        previous connection were all woken when it was lost."""
        self._slot_free = asyncio.Event()

    async def add(self, ack_type, slots, deadline, check_connected):
        """A new entry once fewer than `slots` are in flight: waiting ends at the ticks_ms()
        deadline (MQTTTimeout), check_connected() runs after each wait."""
        while len(self._entries) >= slots:
            self._slot_free.clear()
            await wait_until(self._slot_free.wait(), deadline, "a free in-flight slot")
            check_connected()
        while True:  # ends: the client keeps far fewer than 65535 entries
            self._next_id = self._next_id % 0xFFFF + 1  # 0 is not a valid packet id
            if self._next_id not in self._entries:
                break
        self._order += 1
        entry = self._entries[self._next_id] = Delivery(ack_type, self._next_id, self._order)
        return entry

    def ack(self, first, body):
        """Settle the request a PUBACK or SUBACK answers; MQTTProtocolError for the wrong type."""
        entry = self._entries.get(parse_ack(first, body))
        if entry is None:
            return  # withdrawn (its caller timed out) or settled already: nothing to do
        if entry.ack_type != first:
            raise MQTTProtocolError("ack type 0x%02x for a packet awaiting 0x%02x"
                                    % (first, entry.ack_type))
        self._settle(entry, body)

    def _settle(self, entry, result):
        """End a request with its ack's body or an MQTTError, and free its slot."""
        if not self._remove(entry):
            return
        entry.result = result
        entry.done.set()
        self._slot_free.set()
        if isinstance(result, MQTTError):
            if entry.kept:
                self._stats["abandoned"] += 1
        elif entry.ack_type == PUBACK:
            self._stats["sent"] += 1

    def withdraw(self, entry):
        """Its caller gave up on entry: out of the window (if still in it), never resent."""
        if self._remove(entry):
            self._slot_free.set()

    def link_lost(self, error, keep_publishes):
        """Settle every request with error, except the QoS1 publishes if keep_publishes (a
        persistent session resends them after the next connect); wake every waiter for a slot."""
        for entry in list(self._entries.values()):
            if entry.ack_type != PUBACK or not keep_publishes:
                self._settle(entry, error)
        self._slot_free.set()

    def _remove(self, entry):
        """Take entry out of the window; False if it was not (or no longer) in it."""
        if self._entries.get(entry.packet_id) is not entry:
            return False
        del self._entries[entry.packet_id]
        return True

    def publishes(self):
        """The QoS1 publishes in flight, oldest first: the order they are resent in."""
        found = [entry for entry in self._entries.values() if entry.ack_type == PUBACK]
        found.sort(key=lambda entry: entry.order)
        return found

    def resend(self, writer):
        """Write every QoS1 publish in flight to writer (not drained), oldest first, with DUP set
        on those that went out before; return how many of them did (the retransmissions)."""
        count = 0
        for entry in self.publishes():
            if entry.sent:
                entry.packet[0] |= DUP
                entry.retransmits += 1
                count += 1
            entry.sent = True
            writer.write(entry.packet)
        return count


class Inbox:
    """Received messages waiting for on_message, for one connection: at most `size` of them.
    Each is counted in stats["received"]; what does not fit, and what is left when close() ends
    the connection's inbox, in stats["drops"] (unacknowledged, so a persistent session gets QoS1
    ones again)."""

    def __init__(self, size, stats):
        self._items = []
        self._size = size
        self._stats = stats
        self._ready = asyncio.Event()
        self.open = True

    def receive(self, first, body):
        """Keep a PUBLISH from the broker as (topic, payload, retained, packet_id) if it fits."""
        topic, payload_start, retained, packet_id = publish_header(first, body)
        self._stats["received"] += 1
        if self.open and len(self._items) < self._size:
            self._items.append((topic, body[payload_start:], retained, packet_id))
            self._ready.set()
        else:
            self._stats["drops"] += 1

    async def get(self):
        """The oldest message; None once closed."""
        while not self._items:
            if not self.open:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.pop(0)

    def close(self):
        self.open = False
        self._stats["drops"] += len(self._items)
        self._items = []
        self._ready.set()
