"""The ingest writer thread on its own: batches, acknowledgements after the commit, backpressure,
store errors (retried, never acknowledged) and messages the store refuses (dead letters)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sensornode import protocol

from edge_gateway.decoding import Decoder
from edge_gateway.store import DeadLetter, Message, Store, Telemetry, WriteResult
from edge_gateway.writer import BatchWriter, Delivery, database_failed
from testkit.procs import wait_for

T0 = 1_790_000_000.0
WAIT_S = 10.0


def delivery(seq: int, node: str = "bed-1", session: int = 1) -> Delivery:
    payload = protocol.encode_telemetry(
        [{"seq": seq, "ts": T0 + seq, "values": {"soil_moisture": 40.0 + seq}}])
    return Delivery(f"nt/home/{node}/telemetry", payload, seq, 1, session, T0 + seq + 1)


class Recorder:
    """The writer's callbacks: what was acknowledged and committed, in order."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.committed: list[list[Message]] = []
        self.lock = threading.Lock()

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self.lock:
            self.acked += [d.mid for d in deliveries]

    def on_commit(self, messages: list[Message], result: WriteResult) -> None:
        with self.lock:
            self.committed.append(messages)


class GatedStore(Store):
    """A real store whose writes wait for the test to open the gate, and can be made to fail."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.failures: list[BaseException] = []  # raised by the next writes, one each

    def write(self, messages: Sequence[Message]) -> WriteResult:
        self.entered.set()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        if self.failures:
            raise self.failures.pop(0)
        return super().write(messages)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GatedStore]:
    opened = GatedStore(tmp_path / "gw.db")
    yield opened
    opened.close()


def make_writer(store: Store, recorder: Recorder, **kwargs: Any) -> BatchWriter:
    writer = BatchWriter(store, Decoder("home").decode, recorder.ack, recorder.on_commit,
                         **kwargs)
    writer.start()
    return writer


def test_deliveries_queued_during_a_commit_share_the_next_one(store: GatedStore) -> None:
    recorder = Recorder()
    writer = make_writer(store, recorder)
    try:
        store.gate.clear()
        writer.put(delivery(1))
        assert store.entered.wait(WAIT_S)
        for seq in range(2, 102):  # arrive while the first commit is in progress
            writer.put(delivery(seq))
        assert recorder.acked == []  # nothing acknowledged before its commit
        store.gate.set()
        wait_for(lambda: len(recorder.acked) == 101, WAIT_S, "101 acknowledgements")
    finally:
        writer.close()
    assert recorder.acked == list(range(1, 102))  # in arrival order
    assert [len(batch) for batch in recorder.committed] == [1, 100]
    assert writer.stats.batches == 2 and writer.stats.largest_batch == 100
    assert store.counts()["readings"] == 101


def test_max_batch_caps_a_transaction(store: GatedStore) -> None:
    recorder = Recorder()
    writer = make_writer(store, recorder, max_batch=30)
    try:
        store.gate.clear()
        writer.put(delivery(0))
        assert store.entered.wait(WAIT_S)
        for seq in range(1, 101):
            writer.put(delivery(seq))
        store.gate.set()
        wait_for(lambda: len(recorder.acked) == 101, WAIT_S, "101 acknowledgements")
    finally:
        writer.close()
    assert [len(batch) for batch in recorder.committed] == [1, 30, 30, 30, 10]


def test_a_full_queue_makes_the_producer_wait_and_nothing_is_dropped(store: GatedStore) -> None:
    recorder = Recorder()
    writer = make_writer(store, recorder, max_pending=5)
    store.gate.clear()
    writer.put(delivery(0))
    assert store.entered.wait(WAIT_S)
    produced = threading.Event()

    def produce() -> None:
        for seq in range(1, 51):
            writer.put(delivery(seq))
        produced.set()

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: writer.stats.producer_waits >= 1, WAIT_S, "the producer to wait")
        assert not produced.is_set()
        store.gate.set()
        assert produced.wait(WAIT_S)
        wait_for(lambda: len(recorder.acked) == 51, WAIT_S, "51 acknowledgements")
    finally:
        store.gate.set()
        producer.join(WAIT_S)
        writer.close()
    assert recorder.acked == list(range(51))
    assert store.counts()["readings"] == 51


def test_a_failing_database_is_retried_and_nothing_is_acked_until_it_commits(
    store: GatedStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    store.failures = [sqlite3.OperationalError("database or disk is full")] * 3
    writer = make_writer(store, recorder)
    try:
        writer.put(delivery(1))
        wait_for(lambda: recorder.acked == [1], WAIT_S, "the acknowledgement after the retries")
    finally:
        writer.close()
    assert writer.stats.store_errors == 3
    assert store.counts()["readings"] == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "edge_gateway.writer"]
    assert len([m for m in logged if m.startswith("could not store")]) == 1  # logged once
    assert logged[-1] == "stored 1 messages after 3 failed attempts"


def test_close_gives_up_on_a_failing_database_without_acking(store: GatedStore) -> None:
    recorder = Recorder()
    store.failures = [OSError(28, "No space left on device")] * 100
    writer = make_writer(store, recorder)
    writer.put(delivery(1))
    wait_for(lambda: writer.stats.store_errors >= 1, WAIT_S, "the first failure")
    writer.put(delivery(2))
    writer.close()  # one more attempt, then the batch and the one behind it are left
    assert recorder.acked == [] and recorder.committed == []
    assert writer.put(delivery(3)) is False  # closed: refused, so not acknowledged either


def test_a_message_the_store_refuses_becomes_a_dead_letter_and_the_rest_are_kept(
    store: GatedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    poison = delivery(2)
    original_write = Store.write

    def refuse_seq_2(self: Store, messages: Sequence[Message]) -> WriteResult:
        if any(isinstance(m, Telemetry) and m.readings[0].seq == 2 for m in messages):
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return original_write(self, messages)

    store.gate.clear()
    writer = make_writer(store, recorder)
    try:
        writer.put(delivery(1))
        assert store.entered.wait(WAIT_S)
        for d in (poison, delivery(3)):
            writer.put(d)
        monkeypatch.setattr(Store, "write", refuse_seq_2)
        store.gate.set()
        wait_for(lambda: len(recorder.acked) == 3, WAIT_S, "3 acknowledgements")
    finally:
        writer.close()
    assert recorder.acked == [1, 2, 3]
    assert [r.seq for r in store.readings()] == [1, 3]
    [letter] = store.dead_letters()
    assert (letter.topic, letter.payload) == (poison.topic, poison.payload)
    assert letter.reason.startswith("could not be stored: UnicodeEncodeError")
    # The batch, refused as a whole, was written message by message.
    assert [type(batch[0]) for batch in recorder.committed] == [Telemetry, DeadLetter,
                                                                 Telemetry]


def test_database_errors_are_told_from_message_errors() -> None:
    assert database_failed(sqlite3.OperationalError("database is locked"))
    assert database_failed(OSError(5, "Input/output error"))
    assert database_failed(sqlite3.DatabaseError("file is not a database"))
    assert not database_failed(sqlite3.IntegrityError("NOT NULL constraint failed"))
    assert not database_failed(OverflowError("Python int too large to convert to SQLite"))
