"""A fault-injecting TCP proxy between MQTT clients and a broker, for tests (loopback only).

It runs its own asyncio loop in a thread, so the code under test (asyncio or not, in this
process or another) sees it as a plain network path. The path is switched at run time:

- ``pass_through()``: forward everything (the default; also clears delay and PUBACK dropping);
- ``blackhole()``: nothing flows either way and no close is passed on, while every socket stays
  open: a half-open link. Like TCP on a dead path nothing is lost: bytes wait (reading stops
  once HOLD_LIMIT bytes wait per direction) and flow again after ``pass_through()``. A side that
  closes meanwhile is gone for good: what it sent and is still held is discarded (its kernel
  would answer those late packets with RST), and its peer is closed once the path is back;
- ``delay(ms)``: every byte arrives ``ms`` later, each way;
- ``cut(reset=True)``: close every current connection now, with RST (or FIN); new ones are
  accepted as before;
- ``drop_puback(count, duration_s)``: drop broker-to-client PUBACK packets (the next ``count``,
  or all for ``duration_s``, or all until ``pass_through()``), forwarding everything else; it
  combines with the modes above.

Both directions are cut into MQTT packets, so a packet is forwarded whole or not at all, and the
PUBLISH packets clients send are recorded (``publishes()``: DUP flag, QoS, packet id, topic,
start of the payload). Memory is bounded: HOLD_LIMIT per direction, RECORD_LIMIT records, and a
packet announcing more than MAX_FRAME bytes turns its direction into raw forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

MAX_FRAME = 1 << 20
HOLD_LIMIT = 1 << 20
RECORD_LIMIT = 1000
RECORD_PAYLOAD = 256
PUBLISH, PUBACK = 0x30, 0x40


@dataclass(frozen=True)
class Publish:
    """A PUBLISH a client sent towards the broker, as it crossed the proxy."""

    connection: int  # 1 for the first connection the proxy accepted, and so on
    dup: bool
    qos: int
    retain: bool
    packet_id: int  # 0 for QoS 0
    topic: str
    payload: bytes  # the first RECORD_PAYLOAD bytes


@dataclass(frozen=True)
class ProxyStats:
    connections: int = 0  # accepted so far
    active: int = 0  # open now
    bytes_to_broker: int = 0
    bytes_to_client: int = 0
    dropped_pubacks: int = 0
    cut_connections: int = 0
    closed_in_blackhole: int = 0  # sides that closed while blackholed (their held bytes dropped)


def frame_size(buf: bytes | bytearray) -> int | None:
    """Size of the MQTT packet at the start of buf; None until its header is complete; -1 if
    the header is malformed (a remaining length over 4 bytes)."""
    length = shift = 0
    for index in range(1, min(len(buf), 5)):
        length |= (buf[index] & 0x7F) << shift
        shift += 7
        if not buf[index] & 0x80:
            return 1 + index + length
    return -1 if len(buf) >= 5 else None


class FrameSplitter:
    """Cuts a byte stream into whole MQTT packets. Past a packet over max_frame bytes or a
    malformed header it stops parsing and hands on the bytes as they come (bounded memory)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.raw = False
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        if self.raw:
            return [data]
        self._buf += data
        frames: list[bytes] = []
        while (size := frame_size(self._buf)) is not None:
            if size < 0 or size > self._max:
                self.raw = True
                frames.append(bytes(self._buf))
                self._buf.clear()
                break
            if len(self._buf) < size:
                break
            frames.append(bytes(self._buf[:size]))
            del self._buf[:size]
        return frames


def parse_publish(connection: int, frame: bytes) -> Publish | None:
    first = frame[0]
    qos = first >> 1 & 3
    start = 1 + next(i for i in range(1, 5) if not frame[i] & 0x80)
    if len(frame) < start + 2:
        return None
    topic_end = start + 2 + struct.unpack_from(">H", frame, start)[0]
    payload_start = topic_end + (2 if qos else 0)
    if len(frame) < payload_start:
        return None
    packet_id = struct.unpack_from(">H", frame, topic_end)[0] if qos else 0
    topic = frame[start + 2 : topic_end].decode(errors="replace")
    return Publish(connection, bool(first & 0x08), qos, bool(first & 1), packet_id, topic,
                   frame[payload_start : payload_start + RECORD_PAYLOAD])


def _require_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the test proxy only works on loopback addresses, not {host}")


class _Pipe:
    """One direction of one connection: what was read, waiting to be written."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 to_broker: bool) -> None:
        self.reader, self.writer, self.to_broker = reader, writer, to_broker
        self.splitter = FrameSplitter()
        self.queue: deque[tuple[float, bytes | None]] = deque()  # (due, packet or None = EOF)
        self.held = 0
        self.wake = asyncio.Event()  # something to write, or the mode changed
        self.space = asyncio.Event()  # held dropped below HOLD_LIMIT


class FaultProxy:
    """See the module docstring. ``with FaultProxy(broker_port) as proxy:`` then connect
    clients to ``proxy.host``:``proxy.port``. Control methods may be called from any thread
    (including from inside a test's own event loop: they return within milliseconds)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1",
                 listen_host: str = "127.0.0.1") -> None:
        _require_loopback(target_host)
        _require_loopback(listen_host)
        self.target = (target_host, target_port)
        self.host = listen_host
        self.port = 0
        self._mode = "pass"
        self._delay_s = 0.0
        self._drop: tuple[int | None, float | None] | None = None  # (count left, until)
        self._stats = ProxyStats()
        self._records: deque[Publish] = deque(maxlen=RECORD_LIMIT)
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: dict[int, tuple[list[_Pipe], list[asyncio.Task[None]]]] = {}

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._accept, self.host, 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then end the loop and its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._run(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- control -----------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    def pass_through(self) -> None:
        self._set("pass", 0.0, None)

    def blackhole(self) -> None:
        self._set("blackhole", 0.0, self._drop)

    def delay(self, ms: float) -> None:
        self._set("delay", ms / 1000, self._drop)

    def drop_puback(self, count: int | None = None, duration_s: float | None = None) -> None:
        until = None if duration_s is None else time.monotonic() + duration_s
        self._set(self._mode, self._delay_s, (count, until))

    def cut(self, reset: bool = True) -> int:
        """Close every current connection (RST, or FIN if not reset); returns how many."""
        return self._run(self._cut(reset))

    # ---- observation -------------------------------------------------------------------------

    @property
    def stats(self) -> ProxyStats:
        with self._changed:
            return self._stats

    def publishes(self) -> list[Publish]:
        with self._changed:
            return list(self._records)

    def wait_for(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        """Block until predicate() (about stats or publishes) holds, re-checked on every change
        the proxy sees; AssertionError after timeout seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"proxy: timed out after {timeout}s waiting for {what}")
                self._changed.wait(remaining)

    async def until(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        """wait_for() for a test running its own event loop (which keeps running meanwhile)."""
        await asyncio.to_thread(self.wait_for, predicate, timeout, what)

    # ---- internals (the proxy's loop) --------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "start() the proxy first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def _set(self, mode: str, delay_s: float,
             drop: tuple[int | None, float | None] | None) -> None:
        self._mode, self._delay_s, self._drop = mode, delay_s, drop
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for pipes, _ in self._links.values():
            for pipe in pipes:
                pipe.wake.set()

    def _count(self, **deltas: int) -> None:
        with self._changed:
            fields = {name: getattr(self._stats, name) + delta for name, delta in deltas.items()}
            self._stats = replace(self._stats, **fields)
            self._changed.notify_all()

    def _dropping_puback(self) -> bool:
        if self._drop is None:
            return False
        left, until = self._drop
        if (left is not None and left <= 0) or (until is not None and time.monotonic() >= until):
            return False
        if left is not None:
            self._drop = (left - 1, until)
        return True

    def _inspect(self, number: int, pipe: _Pipe, frame: bytes) -> bool:
        """Record client PUBLISHes; False for a packet to drop."""
        if pipe.splitter.raw:
            return True
        if pipe.to_broker:
            if frame[0] & 0xF0 == PUBLISH and (record := parse_publish(number, frame)):
                with self._changed:
                    self._records.append(record)
                    self._changed.notify_all()
        elif frame[0] == PUBACK and self._dropping_puback():
            self._count(dropped_pubacks=1)
            return False
        return True

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        number = self._stats.connections + 1
        self._count(connections=1, active=1)
        try:
            broker_r, broker_w = await asyncio.open_connection(*self.target)
        except OSError:  # the broker is down: the client sees its connection closed
            client_w.transport.abort()
            self._count(active=-1)
            return
        pipes = [_Pipe(client_r, broker_w, True), _Pipe(broker_r, client_w, False)]
        tasks = [asyncio.create_task(job(number, pipe))
                 for pipe in pipes for job in (self._read, self._write)]
        self._links[number] = (pipes, tasks)
        try:
            await asyncio.wait(tasks[1::2], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._close_link(number, reset=False)

    def _close_link(self, number: int, reset: bool) -> bool:
        link = self._links.pop(number, None)
        if link is None:
            return False
        pipes, tasks = link
        for task in tasks:
            task.cancel()
        for pipe in pipes:
            sock = pipe.writer.get_extra_info("socket")
            if reset and sock is not None:
                with contextlib.suppress(OSError):  # linger 0: close() sends RST
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            pipe.writer.transport.abort()
        self._count(active=-1)
        return True

    async def _read(self, number: int, pipe: _Pipe) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while pipe.held >= HOLD_LIMIT:  # like a full TCP window: stop reading
                pipe.space.clear()
                await pipe.space.wait()
            try:
                data = await pipe.reader.read(65536)
            except OSError:
                data = b""
            due = loop.time() + self._delay_s
            if not data:
                if self._mode == "blackhole":  # see the module docstring
                    pipe.queue.clear()
                    pipe.held = 0
                    self._count(closed_in_blackhole=1)
                pipe.queue.append((due, None))
                pipe.wake.set()
                return
            for frame in pipe.splitter.feed(data):
                if self._inspect(number, pipe, frame):
                    pipe.queue.append((due, frame))
                    pipe.held += len(frame)
            pipe.wake.set()

    async def _write(self, number: int, pipe: _Pipe) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not pipe.queue or self._mode == "blackhole":
                pipe.wake.clear()
                await pipe.wake.wait()
                continue
            due, frame = pipe.queue[0]
            if (wait := due - loop.time()) > 0:  # delay mode: this packet is not due yet
                with contextlib.suppress(TimeoutError):
                    pipe.wake.clear()
                    await asyncio.wait_for(pipe.wake.wait(), wait)
                continue
            pipe.queue.popleft()
            if frame is None:
                return  # the other side closed: the link ends (closing both sockets)
            pipe.held -= len(frame)
            pipe.space.set()
            try:
                pipe.writer.write(frame)
                await pipe.writer.drain()
            except OSError:
                return
            self._count(**{"bytes_to_broker" if pipe.to_broker else "bytes_to_client": len(frame)})

    async def _cut(self, reset: bool) -> int:
        closed = sum(self._close_link(number, reset) for number in list(self._links))
        self._count(cut_connections=closed)
        return closed

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut(reset=False)
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["FaultProxy", "FrameSplitter", "ProxyStats", "Publish", "frame_size"]
