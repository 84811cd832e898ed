# Asyncio MQTT 3.1.1 client for the node firmware; runs unchanged on MicroPython and CPython.
#
# Shape: a reader task owns the socket's read side and never waits on the application; a
# dispatcher task runs on_message, so a handler may itself await a QoS1 publish without
# deadlocking the reader; a keepalive task pings and notices half-open links. Every wait has a
# deadline, and a stalled, closed or malformed link is closed and reported exactly once through
# on_disconnect. QoS 2 is not supported (neither sent nor subscribed). The wire format (packet
# building and parsing, pure bytes) lives in mqtt_packet.
import asyncio

from sensornode.compat import ticks_add, ticks_diff, ticks_ms
from sensornode.net import mqtt_packet as wire

# Re-exported: the codec's errors and varint helpers are part of this module's API.
from sensornode.net.mqtt_packet import (
    MAX_REMAINING_LENGTH,
    MQTTConnectionError,
    MQTTConnectionRefused,
    MQTTError,
    MQTTProtocolError,
    MQTTTimeout,
    decode_remaining_length,
    encode_remaining_length,
)

__all__ = ("MAX_REMAINING_LENGTH", "MQTTClient", "MQTTConnectionError", "MQTTConnectionRefused",
           "MQTTError", "MQTTProtocolError", "MQTTTimeout", "decode_remaining_length",
           "encode_remaining_length")


async def _close_stream(writer, abort):
    if writer is None:
        return
    # CPython's close() flushes its buffer first, which never ends on a dead link: abort instead.
    # MicroPython's close() does nothing; its wait_closed() is what closes the socket.
    transport = getattr(writer, "transport", None)
    try:
        if abort and transport is not None:
            transport.abort()
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 1)
    except Exception:  # a broken socket may complain while closing; it is closed either way
        pass


class _Pending:
    """A request awaiting its ack. The packet (a bytearray) is kept so that a later version can
    resend unacknowledged publishes after a reconnect with DUP set (packet[0] |= 0x08)."""

    def __init__(self, ack_type):
        self.ack_type = ack_type
        self.packet = None
        self.done = asyncio.Event()
        self.result = None  # the ack's body, or the MQTTError that ended the wait


class MQTTClient:
    # Tunables are class attributes so the constructor keeps its documented signature while a
    # board profile can still override them (per class or per instance) before connect().
    INFLIGHT_SLOTS = 8  # QoS1 publishes + subscribes awaiting their ack at the same time
    INBOX_SIZE = 8  # received messages waiting for on_message; more are dropped and counted
    MAX_PACKET = 16384  # largest inbound packet held in RAM; a bigger one closes the link
    SEND_TIMEOUT_MS = 5000  # a write the socket cannot take this long marks the link dead

    def __init__(self, client_id, host, port=1883, username=None, password=None, keepalive_s=30,
                 clean_session=True, will=None):
        if password is not None and username is None:
            raise ValueError("MQTT 3.1.1 cannot send a password without a username")
        if not 0 <= keepalive_s <= 0xFFFF:
            raise ValueError("keepalive_s must be 0..65535")
        if will is not None and (len(will) != 4 or will[2] not in (0, 1, 2)):
            raise ValueError("will must be (topic, payload, qos 0..2, retain)")
        self.client_id, self.host, self.port = client_id, host, port
        self.username, self.password = username, password
        self.keepalive_s, self.clean_session, self.will = keepalive_s, clean_session, will
        self.on_message = None  # callback(topic: str, payload: bytes, retained: bool), or async
        self.on_disconnect = None  # callback(reason: str), or async; once per connection
        self.session_present = False  # from the last CONNACK
        # sent/received count PUBLISH packets (a QoS1 one is sent once acked); drops counts
        # received messages discarded because the inbox was full or the link went down.
        self.stats = {"sent": 0, "received": 0, "pings": 0, "drops": 0, "callback_errors": 0}
        self.last_callback_error = None
        self._connected = self._leaving = False
        self._reader = self._writer = None
        self._tasks = ()  # reader and keepalive: cancelled when the link drops
        self._side_tasks = []  # dispatcher, on_disconnect calls: referenced, never cancelled
        self._pending = {}  # packet id -> _Pending; its size is the in-flight window
        self._next_id = 0
        self._inbox = []  # replaced per connection; the dispatcher exits once it is stale
        # Made anew per connection in _start_session (CPython binds them to one event loop).
        self._inbox_ready, self._slot_free = asyncio.Event(), asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._last_tx = self._last_rx = 0
        self._ping_sent_at = None
        self._stage = ""

    @property
    def is_connected(self):
        return self._connected

    async def connect(self, timeout_ms=5000):
        """TCP connect, CONNECT, CONNACK, all within timeout_ms; then start the session's tasks.
        Raises MQTTTimeout, MQTTConnectionError, MQTTConnectionRefused or MQTTProtocolError."""
        if self._connected:
            raise MQTTError("already connected")
        self._stage = "opening TCP connection"
        try:
            await asyncio.wait_for(self._handshake(), timeout_ms / 1000)
        except BaseException as exc:
            writer, self._reader, self._writer = self._writer, None, None
            await _close_stream(writer, True)
            where = "%s:%d" % (self.host, self.port)
            # TimeoutError first: on CPython it is a subclass of OSError.
            if isinstance(exc, asyncio.TimeoutError):
                raise MQTTTimeout("%s gave no answer within %d ms while %s"
                                  % (where, timeout_ms, self._stage)) from None
            if isinstance(exc, (OSError, EOFError)):
                raise MQTTConnectionError("cannot connect to %s while %s: %r"
                                          % (where, self._stage, exc)) from None
            raise
        self._start_session()

    async def publish(self, topic, payload, qos=0, retain=False, timeout_ms=5000):
        """Return once written (QoS0) or once the broker's PUBACK is in (QoS1). timeout_ms bounds
        the waits for an in-flight slot, a turn to write and the PUBACK."""
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        if not topic or "+" in topic or "#" in topic:
            raise ValueError("invalid topic to publish to: %r" % topic)
        deadline = ticks_add(ticks_ms(), timeout_ms)
        topic_field, payload = wire.encode_str(topic), wire.as_bytes(payload)
        if qos == 0:
            await self._send(wire.publish_packet(topic_field, payload, 0, retain), deadline)
        else:
            await self._request(wire.PUBACK, "PUBACK", deadline, lambda packet_id:
                                wire.publish_packet(topic_field, payload, 1, retain, packet_id))
        self.stats["sent"] += 1

    async def subscribe(self, topic_filter, qos=1, timeout_ms=5000):
        """Subscribe one filter; return the QoS the broker granted."""
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        deadline = ticks_add(ticks_ms(), timeout_ms)
        filter_field = wire.encode_str(topic_filter)
        ack = await self._request(wire.SUBACK, "SUBACK", deadline, lambda packet_id:
                                  wire.subscribe_packet(packet_id, filter_field, qos))
        if not ack or len(ack) < 3:
            raise MQTTProtocolError("SUBACK without a return code")
        if ack[2] == 0x80:
            raise MQTTError("broker refused subscription to %r (SUBACK 0x80)" % topic_filter)
        return ack[2]

    async def disconnect(self, timeout_ms=2000):
        """Send DISCONNECT (so the broker discards our will) and close; no-op when offline."""
        if not self._connected:
            return
        self._leaving = True
        try:
            await self._send(wire.DISCONNECT, ticks_add(ticks_ms(), timeout_ms), timeout_ms)
        except MQTTError:
            return  # the link failed while saying goodbye; that was reported already
        await self._drop("client disconnected", abort=False)

    async def _handshake(self):
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._stage = "sending CONNECT"  # MicroPython reports a refused TCP connect only here
        self._writer.write(wire.connect_packet(self.client_id, self.keepalive_s,
                                               self.clean_session, self.will, self.username,
                                               self.password))
        await self._writer.drain()
        self._stage = "waiting for CONNACK"
        first, body = await self._read_packet(self._reader)
        self.session_present = wire.parse_connack(first, body)

    def _start_session(self):
        self._connected = True
        self._leaving = False  # set by disconnect()
        self._last_tx = self._last_rx = ticks_ms()
        self._ping_sent_at = None
        # Fresh primitives per connection: the previous one's waiters were all woken by _drop.
        self._write_lock, self._slot_free = asyncio.Lock(), asyncio.Event()
        self._inbox, self._inbox_ready = [], asyncio.Event()
        self._tasks = [asyncio.create_task(self._read_loop(self._reader))]
        if self.keepalive_s:
            self._tasks.append(asyncio.create_task(self._keepalive_loop()))
        # Keep referencing the unfinished ones: CPython's loop holds tasks only weakly.
        self._side_tasks = [task for task in self._side_tasks if not task.done()]
        self._side_tasks.append(asyncio.create_task(self._dispatch_loop(self._inbox,
                                                                        self._inbox_ready)))

    async def _drop(self, reason, abort=True):
        """Tear the connection down and report it. Any task may call it, any number of times:
        only the first call per connection acts."""
        if not self._connected:
            return
        self._connected = False
        writer, self._reader, self._writer = self._writer, None, None
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks = ()
        for pending in self._pending.values():
            if not pending.done.is_set():  # an ack already in stays a success
                pending.result = MQTTConnectionError("connection lost: " + reason)
                pending.done.set()
        self._slot_free.set()
        # The dispatcher finishes its current message, then exits; the rest are lost (QoS1
        # ones were not acked, so a persistent session gets them again after a reconnect).
        self.stats["drops"] += len(self._inbox)
        self._inbox = []
        self._inbox_ready.set()
        if self.on_disconnect is not None:
            # In a task of its own: it may well reconnect, and whichever operation noticed the
            # loss must not wait for that before it raises.
            self._side_tasks.append(asyncio.create_task(self._call(self.on_disconnect, (reason,))))
        await _close_stream(writer, abort)

    def _check_connected(self):
        if not self._connected:
            raise MQTTConnectionError("not connected to %s:%d" % (self.host, self.port))

    async def _wait(self, awaitable, deadline, what):
        try:
            remaining_ms = max(ticks_diff(deadline, ticks_ms()), 0)
            return await asyncio.wait_for(awaitable, remaining_ms / 1000)
        except asyncio.TimeoutError:
            raise MQTTTimeout("timed out waiting for " + what) from None

    async def _send(self, packet, deadline, stall_ms=0):
        """Write one packet. Waiting for our turn ends at the caller's deadline and costs
        nothing to abandon. The write itself is not abandoned half-way, which would leave part
        of a packet in the stream: one the socket has not taken within stall_ms (default
        SEND_TIMEOUT_MS) means a dead link, and the link is closed."""
        self._check_connected()
        lock = self._write_lock  # one writer at a time: MicroPython requires it of a socket
        await self._wait(lock.acquire(), deadline, "a turn to write")
        try:
            self._check_connected()
            writer = self._writer
            if writer is None:
                raise OSError("no socket")
            writer.write(packet)
            await asyncio.wait_for(writer.drain(), (stall_ms or self.SEND_TIMEOUT_MS) / 1000)
        except asyncio.TimeoutError:  # before OSError: on CPython it is a subclass of OSError
            await self._drop("send stalled")
            raise MQTTTimeout("the socket took no packet for %d ms; link closed"
                              % (stall_ms or self.SEND_TIMEOUT_MS)) from None
        except OSError as exc:
            await self._drop("socket error while sending: %r" % exc)
            raise MQTTConnectionError("connection lost while sending: %r" % exc) from None
        finally:
            lock.release()
        self._last_tx = ticks_ms()

    async def _request(self, ack_type, ack_name, deadline, build_packet):
        """Send the packet build_packet(packet_id) makes; return the body of its ack."""
        self._check_connected()
        while len(self._pending) >= self.INFLIGHT_SLOTS:
            self._slot_free.clear()
            await self._wait(self._slot_free.wait(), deadline, "a free in-flight slot")
            self._check_connected()
        while True:  # ends: at most INFLIGHT_SLOTS of the 65535 ids are taken
            self._next_id = self._next_id % 0xFFFF + 1  # 1..65535; 0 is not a valid id
            if self._next_id not in self._pending:
                break
        packet_id = self._next_id
        pending = self._pending[packet_id] = _Pending(ack_type)
        try:
            pending.packet = build_packet(packet_id)
            await self._send(pending.packet, deadline)
            await self._wait(pending.done.wait(), deadline, ack_name)
        finally:
            del self._pending[packet_id]
            self._slot_free.set()
        if isinstance(pending.result, MQTTError):
            raise pending.result
        return pending.result

    async def _read_packet(self, reader):
        first = (await reader.readexactly(1))[0]
        header = bytearray()
        while True:  # at most 4 bytes; decode_remaining_length rejects a 4th with a carry
            header.append((await reader.readexactly(1))[0])
            if not header[-1] & 0x80 or len(header) == 4:
                break
        length = decode_remaining_length(header)[0]
        if length > self.MAX_PACKET:
            raise MQTTProtocolError("%d-byte packet exceeds MAX_PACKET (%d)"
                                    % (length, self.MAX_PACKET))
        return first, (await reader.readexactly(length) if length else b"")

    async def _read_loop(self, reader):
        # No timeout on the read itself: the keepalive task bounds how long the link may stay
        # silent (or stuck mid-packet) and then closes it, which ends this task.
        try:
            while True:
                first, body = await self._read_packet(reader)
                self._last_rx = ticks_ms()
                self._ping_sent_at = None  # any packet proves the broker still hears us
                self._handle_packet(first, body)
        except MQTTProtocolError as exc:
            reason = "protocol error: %s" % exc
        except EOFError:
            # After our DISCONNECT the broker closes the socket: that is the goodbye, no loss.
            reason = "client disconnected" if self._leaving else "connection closed by broker"
        except Exception as exc:  # socket errors, and any bug: never leave a silent dead link
            reason = "read failed: %r" % exc
        await self._drop(reason)

    def _handle_packet(self, first, body):
        if first & 0xF0 == wire.PUBLISH:
            self._queue_publish(first, body)
        elif first in (wire.PUBACK, wire.SUBACK):
            pending = self._pending.get(wire.parse_ack(first, body))
            if pending is None or pending.done.is_set():
                return  # its waiter gave up (timed out) or lost its link: nothing left to do
            if pending.ack_type != first:
                raise MQTTProtocolError("ack type 0x%02x for a packet awaiting 0x%02x"
                                        % (first, pending.ack_type))
            pending.result = body
            pending.done.set()
        elif first != wire.PINGRESP or body:
            raise MQTTProtocolError("unexpected packet type 0x%02x (%d bytes)" % (first, len(body)))

    def _queue_publish(self, first, body):
        topic, payload_start, retained, packet_id = wire.publish_header(first, body)
        self.stats["received"] += 1
        if len(self._inbox) >= self.INBOX_SIZE:
            # The reader must never wait on the application (a handler awaiting a PUBACK would
            # deadlock), so overflow is dropped. No PUBACK: a persistent session redelivers it.
            self.stats["drops"] += 1
            return
        self._inbox.append((topic, body[payload_start:], retained, packet_id))
        self._inbox_ready.set()

    async def _dispatch_loop(self, inbox, ready):
        # `inbox is self._inbox` only while this connection lasts (_drop replaces it).
        while True:
            while not inbox:
                if inbox is not self._inbox:
                    return
                ready.clear()
                await ready.wait()  # set by the reader, and by _drop so that we exit
            if inbox is not self._inbox:
                return
            topic, payload, retained, packet_id = inbox.pop(0)
            if self.on_message is not None:
                await self._call(self.on_message, (topic, payload, retained))
            if packet_id and inbox is self._inbox:  # acked only once the handler is done
                try:
                    await self._send(wire.puback_packet(packet_id),
                                     ticks_add(ticks_ms(), self.SEND_TIMEOUT_MS))
                except MQTTError:
                    return  # _send has closed and reported the link

    async def _call(self, callback, args):
        """Run a user callback, plain or async. Its errors are counted, never propagated:
        a buggy handler must not take the link down."""
        try:
            result = callback(*args)
            if hasattr(result, "send"):  # a coroutine (a generator on MicroPython)
                await result
        except Exception as exc:
            self.stats["callback_errors"] += 1
            self.last_callback_error = exc

    async def _keepalive_loop(self):
        interval_ms = self.keepalive_s * 1000
        # Half the interval to answer: a dead link is noticed within 1.5 x keepalive, the same
        # bound the broker applies to us.
        answer_ms = interval_ms // 2
        while self._connected:
            now = ticks_ms()
            if self._ping_sent_at is not None:
                waited = ticks_diff(now, self._ping_sent_at)
                if waited >= answer_ms:
                    await self._drop("no answer to PINGREQ within %d ms" % answer_ms)
                    return
                delay_ms = answer_ms - waited
            else:
                # Ping when either direction has been quiet: tx for the broker's sake, rx so a
                # node that only publishes QoS0 still learns that its link died.
                idle_ms = max(ticks_diff(now, self._last_tx), ticks_diff(now, self._last_rx))
                if idle_ms >= interval_ms:
                    self._ping_sent_at = now
                    self.stats["pings"] += 1
                    try:
                        await self._send(wire.PINGREQ, ticks_add(now, answer_ms), answer_ms)
                    except MQTTError:
                        return  # _send has closed and reported the link
                    continue
                delay_ms = interval_ms - idle_ms
            await asyncio.sleep(delay_ms / 1000)
