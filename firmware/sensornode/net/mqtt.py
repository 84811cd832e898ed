# Asyncio MQTT 3.1.1 client for the node firmware; runs unchanged on MicroPython and CPython.
#
# Shape: a reader task owns the socket's read side and never waits on the application; a
# dispatcher task runs on_message, so a handler may itself await a QoS1 publish without
# deadlocking the reader; a keepalive task pings and notices half-open links. Every wait has a
# deadline, and a stalled, closed or malformed link is closed and reported exactly once through
# on_disconnect. QoS 2 is not supported (neither sent nor subscribed). The wire format (packet
# building and parsing, pure bytes) lives in mqtt_packet, TCP/TLS streams in mqtt_link, the
# in-flight window and the inbox in mqtt_session.
#
# Sessions: with clean_session=False the broker keeps our subscriptions and the messages for us
# while we are away, and we keep our QoS1 publishes that were not acknowledged: right after the
# next CONNACK (whatever its session_present says), before connect() returns and so before any
# new publish, they are sent again, oldest first, with the DUP flag and their packet ids.
import asyncio

from sensornode.compat import ticks_add, ticks_diff, ticks_ms
from sensornode.net import mqtt_link as link
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
from sensornode.net.mqtt_session import Delivery, Inbox, InFlight

try:
    from typing import Any  # noqa: F401  (type comments)
except ImportError:
    pass

__all__ = ("MAX_REMAINING_LENGTH", "Delivery", "MQTTClient", "MQTTConnectionError",
           "MQTTConnectionRefused", "MQTTError", "MQTTProtocolError", "MQTTTimeout",
           "decode_remaining_length", "encode_remaining_length")


class MQTTClient:
    # Tunables are class attributes so the constructor keeps its documented signature while a
    # board profile can still override them (per class or per instance) before connect().
    INFLIGHT_SLOTS = 8  # QoS1 publishes + subscribes awaiting their ack at the same time
    INBOX_SIZE = 8  # received messages waiting for on_message; more are dropped and counted
    MAX_PACKET = 16384  # largest inbound packet held in RAM; a bigger one closes the link
    SEND_TIMEOUT_MS = 5000  # a write the socket cannot take this long marks the link dead

    def __init__(self, client_id, host, port=1883, username=None, password=None, keepalive_s=30,
                 clean_session=True, will=None, ssl=None, server_hostname=None):
        if password is not None and username is None:
            raise ValueError("MQTT 3.1.1 cannot send a password without a username")
        if not 0 <= keepalive_s <= 0xFFFF:
            raise ValueError("keepalive_s must be 0..65535")
        if will is not None and (len(will) != 4 or will[2] not in (0, 1, 2)):
            raise ValueError("will must be (topic, payload, qos 0..2, retain)")
        self.client_id, self.host, self.port = client_id, host, port
        self.username, self.password = username, password
        self.keepalive_s, self.clean_session, self.will = keepalive_s, clean_session, will
        # TLS: None (plain TCP), an SSLContext, or {"cadata": PEM/DER bytes, "cafile": path} of
        # the CA the broker's certificate, issued to server_hostname (default host), must chain to.
        self.ssl = link.tls_context(ssl) if isinstance(ssl, dict) else ssl
        self.server_hostname = server_hostname
        # callback(topic: str, payload: bytes, retained: bool), or async
        self.on_message = None  # type: Any
        # callback(reason: str), or async; once per connection
        self.on_disconnect = None  # type: Any
        self.session_present = False  # from the last CONNACK
        # sent/received count PUBLISH packets (a QoS1 one is sent once acked); drops counts
        # received messages discarded because the inbox was full or the link went down;
        # retransmits counts PUBLISHes sent again with DUP after a reconnect; kept counts QoS1
        # publishes left in flight by a timed-out publish(keep_on_timeout=True), and abandoned
        # those of them a clean session gave up when its link dropped.
        self.stats = {"sent": 0, "received": 0, "pings": 0, "drops": 0, "callback_errors": 0,
                      "retransmits": 0, "kept": 0, "abandoned": 0}
        self.last_callback_error = None
        self._connected = self._leaving = False
        self._reader = self._writer = None
        self._tasks = ()  # reader and keepalive: cancelled when the link drops
        self._side_tasks = []  # dispatcher, on_disconnect calls: referenced, never cancelled
        self._inflight = InFlight(self.stats)  # at most INFLIGHT_SLOTS requests awaiting ack
        self._inbox = Inbox(0, self.stats)  # one per connection, closed when the link drops
        # Made anew per connection in _start_session (CPython binds it to one event loop).
        self._write_lock = asyncio.Lock()
        self._last_tx = self._last_rx = 0
        self._ping_sent_at = None
        self._stage = ""

    @property
    def is_connected(self):
        return self._connected

    @property
    def inflight(self):
        """How many QoS1 publishes and subscribes await their ack (at most INFLIGHT_SLOTS)."""
        return len(self._inflight)

    async def connect(self, timeout_ms=5000):
        """TCP connect, CONNECT, CONNACK, all within timeout_ms; then start the session's tasks.
        Unacknowledged publishes of a persistent session are resent before it returns.
        Raises MQTTTimeout, MQTTConnectionError, MQTTConnectionRefused or MQTTProtocolError."""
        if self._connected:
            raise MQTTError("already connected")
        self._stage = "opening %s connection" % ("TLS" if self.ssl else "TCP")
        try:
            await asyncio.wait_for(self._handshake(), timeout_ms / 1000)
        except BaseException as exc:
            writer, self._reader, self._writer = self._writer, None, None
            await link.close_stream(writer, True)
            where = "%s:%d" % (self.host, self.port)
            error = link.connect_error(exc, where, self._stage, timeout_ms, self.ssl is not None)
            if error is None:
                raise
            raise error from None
        self._start_session()

    async def publish(self, topic, payload, qos=0, retain=False, timeout_ms=5000,
                      keep_on_timeout=False):
        """Return once written (QoS0) or once the broker's PUBACK is in (QoS1): for QoS1 a return
        is the one outcome that proves the broker has the message. timeout_ms bounds the waits
        for an in-flight slot, a turn to write and the PUBACK.

        QoS1 and the link: with clean_session=True a link loss fails the call at once
        (MQTTConnectionError). With clean_session=False the message belongs to the session until
        acked: a link loss does not end the call, the message is resent (DUP) right after the
        next connect(), and the call returns when that PUBACK arrives within timeout_ms.

        On MQTTTimeout the message is withdrawn by default: never resent by this client, and it
        may or may not have reached the broker. With keep_on_timeout=True a message already in
        flight stays there instead, holding its slot, resent after each connect() until acked,
        and the exception's .delivery (a Delivery) tells later whether it was acked or abandoned;
        .delivery is None when nothing was kept. After any other error the message was not kept
        and its fate is unknown: resend it (the gateway drops duplicates by seq)."""
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
                                wire.publish_packet(topic_field, payload, 1, retain, packet_id),
                                keep_on_timeout)
            return
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

    async def drop(self, reason):
        """Close the link without DISCONNECT, as a failure would (the broker publishes our
        will); kept publishes are resent with DUP after the next connect()."""
        if self._connected:
            await self._drop(reason)

    async def _handshake(self):
        self._reader, self._writer = await link.open_stream(self.host, self.port, self.ssl,
                                                            self.server_hostname)
        # MicroPython reports a refused TCP connect, and runs the TLS handshake, only here.
        self._stage = "sending CONNECT" + (" (TLS handshake)" if self.ssl else "")
        self._writer.write(wire.connect_packet(self.client_id, self.keepalive_s,
                                               self.clean_session, self.will, self.username,
                                               self.password))
        await self._writer.drain()
        self._stage = "waiting for CONNACK"
        first, body = await link.read_packet(self._reader, self.MAX_PACKET)
        self.session_present = wire.parse_connack(first, body)
        if len(self._inflight):  # only a persistent session keeps any across a link loss
            self._stage = "resending unacknowledged publishes"
            self.stats["retransmits"] += self._inflight.resend(self._writer)
            await self._writer.drain()

    def _start_session(self):
        self._connected = True
        self._leaving = False  # set by disconnect()
        self._last_tx = self._last_rx = ticks_ms()
        self._ping_sent_at = None
        # Fresh primitives per connection: the previous one's waiters were all woken by _drop.
        self._write_lock = asyncio.Lock()
        self._inflight.new_connection()
        self._inbox = Inbox(self.INBOX_SIZE, self.stats)
        self._tasks = [asyncio.create_task(self._read_loop(self._reader))]
        if self.keepalive_s:
            self._tasks.append(asyncio.create_task(self._keepalive_loop()))
        # Keep referencing the unfinished ones: CPython's loop holds tasks only weakly.
        self._side_tasks = [task for task in self._side_tasks if not task.done()]
        self._side_tasks.append(asyncio.create_task(self._dispatch_loop(self._inbox)))

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
        self._inflight.link_lost(MQTTConnectionError("connection lost: " + reason),
                                 keep_publishes=not self.clean_session)
        # The dispatcher finishes its current message, then exits; the rest are lost (QoS1
        # ones were not acked, so a persistent session gets them again after a reconnect).
        self._inbox.close()
        if self.on_disconnect is not None:
            # In a task of its own: it may well reconnect, and whichever operation noticed the
            # loss must not wait for that before it raises.
            self._side_tasks.append(asyncio.create_task(self._call(self.on_disconnect, (reason,))))
        await link.close_stream(writer, abort)

    def _check_connected(self):
        if not self._connected:
            raise MQTTConnectionError("not connected to %s:%d" % (self.host, self.port))

    async def _send(self, packet, deadline, stall_ms=0, entry=None):
        """Write one packet. Waiting for our turn ends at the caller's deadline and costs
        nothing to abandon. The write itself is not abandoned half-way, which would leave part
        of a packet in the stream: one the socket has not taken within stall_ms (default
        SEND_TIMEOUT_MS) means a dead link, and the link is closed."""
        self._check_connected()
        lock = self._write_lock  # one writer at a time: MicroPython requires it of a socket
        await link.wait_until(lock.acquire(), deadline, "a turn to write")
        try:
            self._check_connected()
            writer = self._writer
            if writer is None:
                raise OSError("no socket")
            if entry is not None:
                entry.sent = True
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

    async def _request(self, ack_type, ack_name, deadline, build_packet, keep=False):
        """Send the packet build_packet(packet_id) makes; return the body of its ack."""
        self._check_connected()
        entry = await self._inflight.add(ack_type, self.INFLIGHT_SLOTS, deadline,
                                         self._check_connected)
        entry.packet = build_packet(entry.packet_id)
        # A persistent session owns its QoS1 publishes: a failed send is not the end of one, it
        # goes out again after the next connect, and its caller may still get the PUBACK.
        owned = ack_type == wire.PUBACK and not self.clean_session
        try:
            try:
                await self._send(entry.packet, deadline, entry=entry)
            except MQTTError:
                if not owned:
                    raise
            await link.wait_until(entry.done.wait(), deadline, ack_name)
        except MQTTTimeout as exc:
            if not entry.acked:  # else an ack that raced the deadline: a success
                # Kept only if it can still be acked: sent on this link, or owned by the session.
                if keep and not entry.done.is_set() and (entry.sent or owned):
                    entry.kept = True
                    self.stats["kept"] += 1
                    exc.delivery = entry
                raise
        finally:
            if not entry.kept:
                self._inflight.withdraw(entry)  # its caller gave up (a no-op once settled)
        if isinstance(entry.result, MQTTError):
            raise entry.result
        return entry.result

    async def _read_loop(self, reader):
        # No timeout on the read itself: the keepalive task bounds how long the link may stay
        # silent (or stuck mid-packet) and then closes it, which ends this task.
        try:
            while True:
                first, body = await link.read_packet(reader, self.MAX_PACKET)
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
            # The reader never waits on the application (a handler awaiting a PUBACK would
            # deadlock): overflow is dropped, unacked, so a persistent session redelivers it.
            self._inbox.receive(first, body)
        elif first in (wire.PUBACK, wire.SUBACK):
            self._inflight.ack(first, body)
        elif first != wire.PINGRESP or body:
            raise MQTTProtocolError("unexpected packet type 0x%02x (%d bytes)" % (first, len(body)))

    async def _dispatch_loop(self, inbox):
        while True:
            item = await inbox.get()
            if item is None:
                return  # its connection is gone
            topic, payload, retained, packet_id = item
            if self.on_message is not None:
                await self._call(self.on_message, (topic, payload, retained))
            if packet_id and inbox.open:  # acked only once the handler is done
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
