"""SQLite store: schema and migrations, dedup, availability, queries."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_gateway.store import (
    SCHEMA_VERSION,
    Ack,
    DeadLetter,
    Event,
    Reading,
    Status,
    Store,
    StoreError,
    Telemetry,
)

T0 = 1_790_000_000.0


def telemetry(node: str, seq: int, received_at: float = T0 + 1, **values: float) -> Telemetry:
    readings = tuple(
        Reading(node, seq, T0 + seq, quantity, value, received_at)
        for quantity, value in values.items()
    )
    return Telemetry("home", node, readings, received_at)


def online(node: str, at: float, fw: str = "0.1.0") -> Status:
    return Status("home", node, True, at, role="garden", fw=fw, board="esp32_devkitc",
                  uptime_s=5, seq_next=10)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "gw.db") as opened:
        yield opened


def test_new_database_has_schema_wal_and_version(tmp_path: Path) -> None:
    with Store(tmp_path / "gw.db") as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.counts() == dict.fromkeys(
            ("readings", "events", "nodes", "acks", "dead_letters", "boots", "gaps"), 0
        )
    db = sqlite3.connect(tmp_path / "gw.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {row[1] for row in db.execute("PRAGMA index_list(readings)")}
    assert "readings_by_node_time" in indexes
    plan = " ".join(
        str(row) for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM readings WHERE node = 'a' AND ts >= 1"
        )
    )
    assert "readings_by_node_time" in plan
    db.close()


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    with Store(tmp_path / "gw.db") as store:
        store.write([telemetry("bed-1", 1, soil_moisture=40.0)])
    with Store(tmp_path / "gw.db") as store:
        assert store.counts()["readings"] == 1
        assert store.schema_version() == SCHEMA_VERSION


def test_database_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "gw.db").close()
    db = sqlite3.connect(tmp_path / "gw.db")
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this gateway"):
        Store(tmp_path / "gw.db")


def test_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not sqlite at all, just some text " * 10)
    with pytest.raises(StoreError, match=r"notes\.txt: not a usable neoterra database"):
        Store(tmp_path / "notes.txt")


def test_redelivered_batch_is_stored_once(store: Store) -> None:
    batch = telemetry("bed-1", 7, soil_moisture=40.5, soil_raw=31000.0, pump=0.0)
    first = store.write([batch])
    again = store.write([batch])
    assert (first.readings_added, first.readings_duplicate) == (3, 0)
    assert (again.readings_added, again.readings_duplicate) == (0, 3)
    assert again.seq_conflicts == []
    assert store.counts()["readings"] == 3


def test_same_seq_with_other_values_is_reported_as_a_conflict(store: Store) -> None:
    store.write([telemetry("bed-1", 7, soil_moisture=40.5)])
    result = store.write([telemetry("bed-1", 7, soil_moisture=12.0)])
    assert result.readings_added == 0
    assert [(r.node, r.seq, r.value) for r in result.seq_conflicts] == [("bed-1", 7, 12.0)]
    assert [r.value for r in store.readings()] == [40.5]  # the first one is kept


def test_same_seq_on_another_node_is_not_a_duplicate(store: Store) -> None:
    store.write([telemetry("bed-1", 1, pump=1.0), telemetry("bed-2", 1, pump=0.0)])
    assert store.counts()["readings"] == 2


def test_events_and_acks_are_deduplicated(store: Store) -> None:
    event = Event("home", "bed-1", 3, T0, "actuator", "pump", "on", "", T0 + 1)
    ack = Ack("home", "bed-1", "c0ffee", True, "started", "", T0, T0 + 1)
    done = Ack("home", "bed-1", "c0ffee", True, "done", "", T0 + 30, T0 + 31)
    assert store.write([event, ack]).events_added == 1
    result = store.write([event, ack, done])
    assert (result.events_added, result.acks_added) == (0, 1)
    assert store.events() == [event]
    assert store.acks(cmd_id="c0ffee") == [ack, done]
    assert store.acks(cmd_id="other") == []


def test_failed_write_rolls_back_the_whole_message_batch(store: Store) -> None:
    good = telemetry("bed-1", 1, soil_moisture=40.0)
    broken = DeadLetter("nt/home/x/telemetry", None, "no payload", T0)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.write([good, broken])
    assert store.counts()["readings"] == 0
    store.write([good])  # the connection is usable afterwards
    assert store.counts()["readings"] == 1


def test_availability_changes_are_reported_once(store: Store) -> None:
    birth = online("bed-1", T0)
    assert store.write([birth]).availability_changes == [birth]
    # the retained birth comes again on every resubscribe: not a change
    assert store.write([online("bed-1", T0 + 5)]).availability_changes == []
    last_will = Status("home", "bed-1", False, T0 + 9)
    assert store.write([last_will]).availability_changes == [last_will]
    assert store.write([last_will]).availability_changes == []
    [node] = store.nodes()
    assert (node.online, node.role, node.fw, node.seq_next) == (False, "garden", "0.1.0", 10)
    assert node.changed_at == T0 + 9
    assert node.last_seen == T0 + 5  # the last will is not a sign of life


def test_each_boot_start_is_kept_once(store: Store) -> None:
    store.write([online("bed-1", T0), online("bed-1", T0 + 5)])  # seq_next 10 both times
    store.write([Status("home", "bed-1", True, T0 + 60, role="garden", fw="0.1.0",
                        board="esp32_devkitc", uptime_s=1, seq_next=74)])
    store.write([Status("home", "bed-1", False, T0 + 90)])
    assert store.query("SELECT seq_next, received_at FROM boots ORDER BY seq_next") == [
        (10, T0), (74, T0 + 60)
    ]


def test_node_seen_only_through_telemetry_has_unknown_availability(store: Store) -> None:
    store.write([telemetry("bed-9", 1, received_at=T0 + 3, pump=0.0)])
    [node] = store.nodes()
    assert (node.node, node.site, node.online, node.role, node.last_seen) == (
        "bed-9", "home", None, None, T0 + 3
    )


def test_readings_query_filters(store: Store) -> None:
    store.write([telemetry("bed-1", seq, soil_moisture=40.0 + seq, pump=float(seq % 2))
                 for seq in range(1, 6)])
    store.write([telemetry("bed-2", 1, soil_moisture=10.0)])
    assert len(store.readings()) == 11
    moisture = store.readings(node="bed-1", quantity="soil_moisture")
    assert [r.value for r in moisture] == [41.0, 42.0, 43.0, 44.0, 45.0]
    assert [r.seq for r in store.readings(node="bed-1", since=T0 + 4)] == [4, 4, 5, 5]
    assert [r.seq for r in store.readings(node="bed-1", quantity="pump", limit=2)] == [1, 2]


def test_latest_readings_are_the_highest_seq_per_quantity(store: Store) -> None:
    store.write([telemetry("bed-1", 2, soil_moisture=42.0, pump=1.0)])
    store.write([telemetry("bed-1", 1, soil_moisture=41.0)])  # late redelivery of older data
    store.write([telemetry("bed-2", 1, soil_moisture=10.0)])
    latest = {(r.node, r.quantity): (r.seq, r.value) for r in store.latest_readings()}
    assert latest == {
        ("bed-1", "soil_moisture"): (2, 42.0),
        ("bed-1", "pump"): (2, 1.0),
        ("bed-2", "soil_moisture"): (1, 10.0),
    }


def test_dead_letters_keep_raw_bytes_and_reason(store: Store) -> None:
    raw = b"\xff\x00not json"
    result = store.write([DeadLetter("nt/home/bed-1/telemetry", raw, "telemetry: not JSON", T0)])
    assert result.dead_letters == 1
    assert store.dead_letters() == [
        DeadLetter("nt/home/bed-1/telemetry", raw, "telemetry: not JSON", T0)
    ]


def test_second_connection_reads_while_first_writes(tmp_path: Path) -> None:
    with Store(tmp_path / "gw.db") as writer, Store(tmp_path / "gw.db") as reader:
        writer.write([telemetry("bed-1", 1, pump=1.0)])
        assert reader.counts()["readings"] == 1


def test_one_batch_of_many_messages_is_stored_as_sent(store: Store) -> None:
    # 300 readings: every multi-row INSERT size is used (256 + 32 + 4*3 ... + 1s).
    batch: list[Telemetry | DeadLetter | Status] = [
        telemetry("bed-1", seq, received_at=T0 + seq, soil_moisture=float(seq))
        for seq in range(1, 302)
    ]
    batch.insert(150, DeadLetter("nt/home/bed-1/telemetry", b"{", "telemetry: not JSON", T0))
    batch.append(telemetry("bed-1", 7, received_at=T0 + 999, soil_moisture=7.0))  # redelivery
    batch.append(telemetry("bed-1", 8, received_at=T0 + 999, soil_moisture=-1.0))  # conflict
    batch.append(online("bed-2", T0 + 5))
    result = store.write(batch)
    assert (result.readings_added, result.readings_duplicate, result.dead_letters) == (301, 2, 1)
    assert [(r.seq, r.value) for r in result.seq_conflicts] == [(8, -1.0)]
    assert [r.seq for r in store.readings(node="bed-1")] == list(range(1, 302))
    assert store.readings(node="bed-1", quantity="soil_moisture")[7].value == 8.0  # first kept
    nodes = {n.node: n for n in store.nodes()}
    assert nodes["bed-1"].last_seen == T0 + 999  # the latest of the batch, not the last one
    assert nodes["bed-2"].online is True
