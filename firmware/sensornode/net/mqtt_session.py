# The MQTT client's session state: the requests awaiting their ack (the in-flight window) and
# the inbox of received messages waiting for the application. With clean_session=False the
# in-flight QoS1 publishes outlive the connection, so the client can send them again (DUP flag,
# same packet id) after a reconnect. All bounded: the client never adds an in-flight entry while
# INFLIGHT_SLOTS are taken (each holds only its own packet), and the inbox has a fixed size.
import asyncio

from sensornode.net.mqtt_packet import DUP, PUBACK, MQTTError, MQTTTimeout


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
    """Deliveries by packet id. Ids run 1..65535 in turn and skip those still in flight."""

    def __init__(self):
        self._entries = {}
        self._next_id = 0
        self._order = 0

    def __len__(self):
        return len(self._entries)

    def add(self, ack_type):
        while True:  # ends: the client keeps far fewer than 65535 entries
            self._next_id = self._next_id % 0xFFFF + 1  # 0 is not a valid packet id
            if self._next_id not in self._entries:
                break
        self._order += 1
        entry = self._entries[self._next_id] = Delivery(ack_type, self._next_id, self._order)
        return entry

    def get(self, packet_id):
        return self._entries.get(packet_id)

    def remove(self, entry):
        """Take entry out of the window; False if it was not (or no longer) in it."""
        if self._entries.get(entry.packet_id) is not entry:
            return False
        del self._entries[entry.packet_id]
        return True

    def entries(self):
        return list(self._entries.values())

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
    What does not fit, and what is left when close() ends the connection's inbox, is counted in
    stats["drops"] (unacknowledged, so a persistent session gets QoS1 ones again)."""

    def __init__(self, size, stats):
        self._items = []
        self._size = size
        self._stats = stats
        self._ready = asyncio.Event()
        self.open = True

    def accepts(self):
        """True if put() would keep a message; counts the drop if not."""
        if self.open and len(self._items) < self._size:
            return True
        self._stats["drops"] += 1
        return False

    def put(self, item):
        self._items.append(item)
        self._ready.set()

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
