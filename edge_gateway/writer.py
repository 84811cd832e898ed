"""The ingest path's writer thread: MQTT deliveries in, decoded and stored in one SQLite
transaction per batch, then the MQTT acknowledgements of exactly what that transaction stored.

Batching. A batch closes when it holds `max_batch` deliveries, or `linger_s` after its first
one arrived, or as soon as nothing more is queued if `linger_s` is 0 (the default: group
commit). Lingering while the queue is empty would stall the pipe: a broker sends only a few
unacknowledged QoS1 messages at a time (mosquitto's max_inflight_messages, 20 by default) and
sends no more until they are acknowledged, which we do only after the commit. Under load the
batches grow by themselves, because deliveries queue up while a commit runs.

Backpressure. The queue holds at most `max_pending` deliveries; `put()` then blocks the MQTT
thread until the writer has taken a batch, so paho stops reading, TCP fills up and the broker
keeps the rest. Nothing is ever dropped, and nothing unacknowledged is lost: the broker
redelivers it to the next session.

Store errors. A batch whose transaction fails is not acknowledged. If the database failed
(database_failed(): disk full, locked by another process for longer than the busy timeout, a
flaky SD card, read-only), the batch is retried, whole and in order, with exponential backoff
(BACKOFF_MIN_S doubling to BACKOFF_MAX_S) until it commits: those causes heal or need an
operator, and the broker holds what comes behind it. Any other error is about the messages (a
value SQLite cannot take that the decoder let through): the batch is then written message by
message, and a message refused alone is kept as a dead letter (its raw topic and payload, the
error as reason) and acknowledged, so it can neither block ingest nor spoil its batch.
The first failure is logged with its traceback, the recovery once; every failed attempt is
counted. close() cuts the backoff short: a failing batch gets one more attempt, and if that
fails too it and everything queued behind it are left unacknowledged, for the broker to
redeliver to the next session.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from edge_gateway.store import DeadLetter, Message, Store, WriteResult

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 1000
DEFAULT_LINGER_S = 0.0
DEFAULT_MAX_PENDING = 10_000
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.05, 5.0


class Delivery(NamedTuple):
    """One MQTT delivery as it came, and what acknowledging it takes. The writer decodes it:
    paho's network thread only queues it, which keeps that thread's time per message short."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    session: int  # the connection it came on: a mid means nothing on another one
    received_at: float


@dataclass(frozen=True)
class Refused:
    """The store refused a write for a reason retrying will not change."""

    reason: str


Decode = Callable[[str, bytes, float], Message]  # never raises: refused → a DeadLetter
AckBatch = Callable[[Sequence[Delivery]], None]
OnCommit = Callable[[list[Message], WriteResult], None]


@dataclass
class WriterStats:
    """Written by the writer thread only; the others read them."""

    batches: int = 0
    messages: int = 0
    largest_batch: int = 0
    store_errors: int = 0  # failed write attempts (a batch retried 3 times counts 3)
    producer_waits: int = 0  # put() found the queue full (written by the producer)


def database_failed(exc: BaseException) -> bool:
    """The database's own trouble (locked, full, I/O error, read-only, corrupt), as opposed to
    the messages' (a constraint, a str SQLite cannot encode, an int too large for it)."""
    return isinstance(exc, sqlite3.OperationalError | OSError) or (
        type(exc) is sqlite3.DatabaseError)


class _Stop:
    """Queued by close(): everything queued before it is stored and acknowledged first."""


_STOP = _Stop()


class BatchWriter:
    def __init__(
        self,
        store: Store,
        decode: Decode,
        ack: AckBatch,
        on_commit: OnCommit,
        max_batch: int = DEFAULT_MAX_BATCH,
        linger_s: float = DEFAULT_LINGER_S,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if linger_s < 0:
            raise ValueError(f"linger_s must be 0 or more seconds, got {linger_s}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.store = store
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.max_pending = max_pending
        self.stats = WriterStats()
        self._decode = decode
        self._ack = ack
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[Delivery | _Stop] = queue.SimpleQueue()
        self._room = threading.Condition()  # the producer waits here while the queue is full
        self._closing = False
        self._closed = threading.Event()  # set by close(): ends a backoff wait early
        self._gave_up = False  # a write failed during close(): skip the rest
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("writer already started")
        self._thread = threading.Thread(target=self._run, name="neoterra-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Deliveries queued and not yet taken into a batch."""
        return self._queue.qsize()

    def put(self, delivery: Delivery) -> bool:
        """Queue a delivery, waiting while the queue is full; False once closing (the delivery
        is then neither stored nor acknowledged, so the broker sends it again later)."""
        if self._queue.qsize() >= self.max_pending:
            self.stats.producer_waits += 1
            with self._room:
                while self._queue.qsize() >= self.max_pending and not self._closing:
                    self._room.wait(1.0)  # woken by the writer; the timeout only bounds it
        if self._closing:
            return False
        self._queue.put(delivery)
        return True

    def close(self) -> None:
        """Store and acknowledge everything queued, then end the thread (see the module
        docstring for what happens when the store keeps failing)."""
        thread, self._thread = self._thread, None
        with self._room:
            self._closing = True
            self._room.notify_all()
        self._closed.set()
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    # ---- the writer thread ----

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._collect()
            if batch:
                try:
                    self._commit(batch)
                except Exception:  # a bug here must not end ingest: log it, go on
                    log.exception("writer failed on a batch of %d messages", len(batch))

    def _collect(self) -> tuple[list[Delivery], bool]:
        """The next batch (waiting for its first delivery), and whether close() was reached."""
        first = self._queue.get()
        if isinstance(first, _Stop):
            return [], True
        batch = [first]
        get = self._queue.get_nowait
        deadline = time.monotonic() + self.linger_s
        stopping = False
        while len(batch) < self.max_batch:
            try:
                item = get()
            except queue.Empty:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    break
            if isinstance(item, _Stop):
                stopping = True
                break
            batch.append(item)
        if self.stats.producer_waits:
            with self._room:
                self._room.notify_all()
        return batch, stopping

    def _commit(self, batch: list[Delivery]) -> None:
        decode = self._decode
        messages = [decode(d.topic, d.payload, d.received_at) for d in batch]
        outcome = self._write(messages)
        if isinstance(outcome, Refused):
            # Not the database's fault: find the message(s) it refuses, keep the rest.
            for delivery, message in zip(batch, messages, strict=True):
                self._commit_alone(delivery, message)
        elif outcome is not None:
            self._stored(batch, messages, outcome)

    def _commit_alone(self, delivery: Delivery, message: Message) -> None:
        outcome = self._write([message])
        if isinstance(outcome, Refused):
            letter = DeadLetter(delivery.topic, delivery.payload,
                                f"could not be stored: {outcome.reason}", delivery.received_at)
            log.error("%s from %s could not be stored (%s); keeping it as a dead letter",
                      type(message).__name__, delivery.topic, outcome.reason)
            outcome = self._write([letter])
            if isinstance(outcome, Refused):  # even the raw bytes: leave it unacknowledged
                log.error("could not store the dead letter either (%s)", outcome.reason)
                return
            if outcome is not None:
                self._stored([delivery], [letter], outcome)
        elif outcome is not None:
            self._stored([delivery], [message], outcome)

    def _stored(self, batch: Sequence[Delivery], messages: list[Message],
                result: WriteResult) -> None:
        stats = self.stats
        stats.batches += 1
        stats.messages += len(batch)
        stats.largest_batch = max(stats.largest_batch, len(batch))
        try:
            self._ack(batch)
        except Exception:  # stored but not acknowledged: redelivered, and deduplicated then
            log.exception("could not acknowledge %d stored messages", len(batch))
        try:
            self._on_commit(messages, result)
        except Exception:
            log.exception("post-commit handling failed for %d messages", len(batch))

    def _write(self, messages: list[Message]) -> WriteResult | Refused | None:
        """The WriteResult once committed; Refused for an error that is not the database's
        (retrying the same messages cannot help); None if given up at close()."""
        failures = 0
        delay = BACKOFF_MIN_S
        while not self._gave_up:
            closing = self._closed.is_set()
            try:
                result = self.store.write(messages)
            except Exception as exc:
                if not database_failed(exc):  # a value the database cannot take
                    self.stats.store_errors += 1
                    return Refused(f"{type(exc).__name__}: {exc}")
                failures += 1
                self.stats.store_errors += 1
                if failures == 1:
                    log.exception("could not store %d messages; they stay unacknowledged and"
                                  " are retried with backoff (up to %g s)", len(messages),
                                  BACKOFF_MAX_S)
                if closing:  # this attempt was already made after close()
                    self._gave_up = True
                    log.error("shutting down with %d messages (and any queued behind them) "
                              "not stored (%s); the broker sends them again to the next "
                              "session", len(messages), exc)
                    break
                self._closed.wait(delay)
                delay = min(BACKOFF_MAX_S, delay * 2)
                continue
            if failures:
                log.warning("stored %d messages after %d failed attempts", len(messages),
                            failures)
            return result
        return None
