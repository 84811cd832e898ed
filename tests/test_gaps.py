"""Gap reporting: seqs a node sent that were never stored. The tracker runs on a real SQLite
store with an injected clock; messages are stored first, then observed, as the gateway does."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_gateway.cli import format_gaps, main
from edge_gateway.gaps import DROPPED, LOST, Gap, GapTracker, list_gaps, parse_drop
from edge_gateway.seqranges import SeqRanges
from edge_gateway.store import Event, Message, Reading, Status, Store, Telemetry

T0 = 1_790_000_000.0
SETTLE_S = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def telemetry(node: str, *seqs: int) -> Telemetry:
    readings = tuple(
        Reading(node, seq, T0 + seq, quantity, 1.0, T0 + seq)
        for seq in seqs for quantity in ("pump", "soil_moisture")
    )
    return Telemetry("home", node, readings, T0)


def event(node: str, seq: int, kind: str = "actuator", name: str = "pump", state: str = "on",
          detail: str = "") -> Event:
    return Event("home", node, seq, T0 + seq, kind, name, state, detail, T0)


def dropped(node: str, seq: int, first: int, last: int) -> Event:
    return event(node, seq, "fault", "outbox", "dropped",
                 f"{last - first + 1} records, seq {first}..{last}")


def birth(node: str, seq_next: int, seq_last: int | None = None) -> Status:
    return Status("home", node, True, T0, role="garden", fw="0.1.0", board="emulated",
                  uptime_s=1, seq_next=seq_next, seq_last=seq_last)


class Harness:
    def __init__(self, path: Path, settle_seqs: int = 1000) -> None:
        self.clock = FakeClock()
        self.store = Store(path)
        self.tracker = GapTracker(self.store, settle_s=SETTLE_S, settle_seqs=settle_seqs,
                                  clock=self.clock)
        self.tracker.load()

    def ingest(self, *messages: Message) -> None:
        self.store.write(messages)
        self.tracker.observe(messages)

    def settle(self) -> list[Gap]:
        self.clock.now += SETTLE_S
        return self.tracker.check()

    def gaps(self) -> list[tuple[str, int, int, str, int, bool]]:
        return [(g.node, g.first_seq, g.last_seq, g.cause, g.missing, g.filled_at is None)
                for g in list_gaps(self.store)]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gw.db"


@pytest.fixture
def h(db_path: Path) -> Iterator[Harness]:
    harness = Harness(db_path)
    yield harness
    harness.store.close()


def test_contiguous_seqs_make_no_gap(h: Harness) -> None:
    h.ingest(birth("bed-1", 0), telemetry("bed-1", 0, 1, 2), event("bed-1", 3))
    h.ingest(telemetry("bed-1", 4), telemetry("bed-1", 4))  # a redelivery too
    h.ingest(event("bed-1", 5), telemetry("bed-1", *range(6, 50)))
    assert h.settle() == [] and h.gaps() == []


def test_a_missing_seq_is_one_gap_once_settled(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_gateway.gaps")
    h.ingest(telemetry("bed-1", 0, 1, 2, 3, 4), telemetry("bed-1", 6, 7))
    h.clock.now += SETTLE_S - 1
    assert h.tracker.check() == []  # could still come: redelivery reorders
    h.clock.now += 1
    [gap] = h.tracker.check()
    assert (gap.node, gap.first_seq, gap.last_seq, gap.cause, gap.missing) == (
        "bed-1", 5, 5, LOST, 1)
    assert gap.detected_at == h.clock.now
    assert h.settle() == []  # reported once
    assert h.gaps() == [("bed-1", 5, 5, LOST, 1, True)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "node bed-1: seq 5 (1) lost: never stored, not a reboot skip"
    ]


def test_many_newer_seqs_settle_a_gap_before_the_time_is_up(db_path: Path) -> None:
    h = Harness(db_path, settle_seqs=100)
    h.ingest(telemetry("bed-1", 0), telemetry("bed-1", 3, 4))
    assert h.tracker.check() == []
    h.ingest(telemetry("bed-1", *range(5, 104)))  # 100 newer than when 1..2 went missing
    assert [(g.first_seq, g.last_seq) for g in h.tracker.check()] == [(1, 2)]


def test_reordered_arrival_within_the_window_is_no_gap(h: Harness) -> None:
    h.ingest(telemetry("bed-1", 0, 1), telemetry("bed-1", 4), event("bed-1", 5))
    h.clock.now += SETTLE_S / 2
    h.ingest(telemetry("bed-1", 2), event("bed-1", 3))  # the redelivered ones, late
    assert h.settle() == [] and h.gaps() == []


def test_late_arrival_closes_the_gap(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_gateway.gaps")
    h.ingest(telemetry("bed-1", 0, 1), telemetry("bed-1", 5))
    assert [g.seqs for g in h.settle()] == ["2..4"]
    h.ingest(telemetry("bed-1", 3))
    assert h.gaps() == [("bed-1", 2, 4, LOST, 2, True)]
    h.clock.now += 60
    h.ingest(event("bed-1", 2), telemetry("bed-1", 4))
    [gap] = list_gaps(h.store)
    assert (gap.missing, gap.filled_at) == (0, h.clock.now)
    assert list_gaps(h.store, open_only=True) == []
    assert h.settle() == []  # nothing new from the holes the late seqs left and closed
    assert "node bed-1: seq 2..4 arrived late after all; gap closed" in caplog.messages


def test_reboot_skip_announced_by_seq_next_is_no_gap(h: Harness) -> None:
    h.ingest(birth("bed-1", 0), telemetry("bed-1", *range(0, 11)))
    h.ingest(birth("bed-1", 64), telemetry("bed-1", 64, 65), event("bed-1", 66))  # 11..63 unused
    h.ingest(birth("bed-1", 64))  # the retained birth again on a resubscribe
    assert h.settle() == []
    # The next boot's first two never arrive: those are lost, the skip below them is not.
    h.ingest(birth("bed-1", 128), telemetry("bed-1", 130))
    assert [(g.first_seq, g.last_seq, g.cause) for g in h.settle()] == [(128, 129, LOST)]


def test_a_birth_with_seq_last_leaves_only_the_record_cut_by_a_power_cut(
        h: Harness, db_path: Path) -> None:
    h.ingest(birth("bed-1", 0), telemetry("bed-1", *range(0, 11)))
    # Power cut while seq 11 was being written: the node took it, lost it, and says so.
    h.ingest(birth("bed-1", 12, seq_last=11), telemetry("bed-1", 12, 13))
    # The next cut hit between writes: nothing taken was lost.
    h.ingest(birth("bed-1", 14, seq_last=13), telemetry("bed-1", 14))
    assert [(g.seqs, g.cause) for g in h.settle()] == [("11", LOST)]
    # The same after a gateway restart: seq_last comes back from the boots table.
    h.ingest(telemetry("bed-1", 16))
    restarted = GapTracker(Store(db_path), settle_s=SETTLE_S, clock=h.clock)
    restarted.load()
    h.clock.now += SETTLE_S
    assert [g.seqs for g in restarted.check()] == ["15"]
    assert [g.seqs for g in list_gaps(h.store)] == ["11", "15"]


def test_previous_boot_replayed_after_the_new_one_started(h: Harness) -> None:
    h.ingest(telemetry("bed-1", *range(0, 11)), birth("bed-1", 64), telemetry("bed-1", 64))
    h.ingest(telemetry("bed-1", *range(11, 20)))  # the outbox's older records, after a while
    assert h.settle() == []
    # A record of the old boot past a hole shows the node did use the seqs in between.
    h.ingest(telemetry("bed-1", 25))
    assert [g.seqs for g in h.settle()] == ["20..24"]


def test_a_seq_below_everything_stored_opens_the_hole_above_it(h: Harness) -> None:
    h.ingest(telemetry("bed-1", 100, 101))  # known from 100: nothing below is a gap
    assert h.settle() == []
    h.ingest(telemetry("bed-1", 95))
    assert [g.seqs for g in h.settle()] == ["96..99"]


def test_node_reported_drop_is_recorded_as_dropped(h: Harness) -> None:
    h.ingest(telemetry("bed-1", *range(0, 10)))
    h.ingest(telemetry("bed-1", *range(30, 40)), dropped("bed-1", 40, 10, 24))
    # 10..24 the node dropped (outbox full); 25..29 it did not say: lost
    assert [(g.seqs, g.cause) for g in h.settle()] == [("10..24", DROPPED), ("25..29", LOST)]


def test_drop_reported_after_the_gap_reclassifies_it(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_gateway.gaps")
    h.ingest(telemetry("bed-1", 0), telemetry("bed-1", 40))
    h.settle()
    h.ingest(telemetry("bed-1", 12))  # one of them arrived after all
    h.ingest(dropped("bed-1", 41, 1, 20))
    assert h.gaps() == [
        ("bed-1", 1, 20, DROPPED, 19, True),
        ("bed-1", 21, 39, LOST, 19, True),
    ]
    assert "node bed-1: seq 1..20 was dropped by the node, not lost" in caplog.messages
    assert h.settle() == []


def test_late_seq_and_drop_report_in_one_message_batch(h: Harness) -> None:
    h.ingest(telemetry("bed-1", 0), telemetry("bed-1", 10))
    h.settle()
    h.ingest(telemetry("bed-1", 7), dropped("bed-1", 11, 1, 4))  # stored and observed together
    assert h.gaps() == [("bed-1", 1, 4, DROPPED, 4, True), ("bed-1", 5, 9, LOST, 4, True)]


def test_nodes_are_tracked_separately(h: Harness) -> None:
    h.ingest(telemetry("bed-1", 0, 1, 2), telemetry("bed-2", 0, 2))
    assert [(g.node, g.seqs) for g in h.settle()] == [("bed-2", "1")]


def test_gateway_restart_keeps_the_state(db_path: Path) -> None:
    first = Harness(db_path)
    first.ingest(birth("bed-1", 0), telemetry("bed-1", 0, 1, 3))  # 2 missing, reported
    first.settle()
    first.ingest(telemetry("bed-1", *range(4, 10)), birth("bed-1", 64), telemetry("bed-1", 64))
    first.ingest(telemetry("bed-1", 70))  # 65..69 missing, not settled before the restart
    first.ingest(dropped("bed-1", 71, 100, 110))
    first.store.close()

    second = Harness(db_path)
    assert second.gaps() == [("bed-1", 2, 2, LOST, 1, True)]
    assert second.tracker.check() == []  # unsettled holes wait a full window again
    # the boot skip 10..63 is remembered; the unsettled hole is reported
    assert [g.seqs for g in second.settle()] == ["65..69"]
    second.ingest(telemetry("bed-1", 2))  # fills the gap found before the restart
    second.ingest(telemetry("bed-1", *range(112, 115)))
    assert second.gaps() == [
        ("bed-1", 2, 2, LOST, 0, False),
        ("bed-1", 65, 69, LOST, 5, True),
    ]
    # the drop report survived too: 100..110 are dropped, 72..99 and 111 lost
    assert [(g.seqs, g.cause) for g in second.settle()] == [
        ("72..99", LOST), ("100..110", DROPPED), ("111", LOST)]
    second.store.close()


def test_observing_in_order_messages_does_not_touch_the_database(h: Harness) -> None:
    statements: list[str] = []
    h.ingest(telemetry("bed-1", 0))
    h.store._db.set_trace_callback(statements.append)
    for seq in range(1, 2000):
        h.tracker.observe([telemetry("bed-1", seq)])
    h.tracker.check()
    assert statements == []


def test_tracker_thread_reports_without_new_messages(db_path: Path) -> None:
    with Store(db_path) as store:
        tracker = GapTracker(store, settle_s=0.1)
        messages: list[Message] = [telemetry("bed-1", 0, 2)]
        store.write(messages)
        tracker.load()
        tracker.observe(messages)
        tracker.start()
        try:
            deadline = time.monotonic() + 10
            while not list_gaps(store) and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            tracker.stop()
        assert [g.seqs for g in list_gaps(store)] == ["1"]


@pytest.mark.parametrize(("detail", "expected"), [
    ("64 records, seq 100..163", (100, 163)),
    ("1 record, seq 7", (7, 7)),
    ("seq 9 .. 12", (9, 12)),
    ("5 records", None),
    ("2 records, seq 9..3", None),
])
def test_drop_detail(detail: str, expected: tuple[int, int] | None) -> None:
    assert parse_drop(event("bed-1", 1, "fault", "outbox", "dropped", detail)) == expected


def test_other_events_are_not_drops() -> None:
    assert parse_drop(event("bed-1", 1, "fault", "soil", "dropped", "seq 1..2")) is None
    assert parse_drop(event("bed-1", 1, "fault", "outbox", "full", "seq 1..2")) is None


@given(st.lists(st.integers(0, 60), max_size=60), st.integers(0, 60), st.integers(0, 60))
def test_seq_ranges_behave_like_a_set(seqs: list[int], lo: int, hi: int) -> None:
    ranges, members = SeqRanges(), set()
    for seq in seqs:
        assert ranges.add(seq) == (seq not in members)
        members.add(seq)
    flat = [s for a, b in ranges.ranges() for s in range(a, b + 1)]
    assert flat == sorted(members)
    assert all(b + 1 < a2 for (_, b), (a2, _) in pairwise(ranges.ranges()))  # merged
    window = set(range(lo, hi + 1))
    assert [s for a, b in ranges.missing(lo, hi) for s in range(a, b + 1)] == sorted(
        window - members)
    assert ranges.count(lo, hi) == len(window & members)
    below = [s for s in members if s < lo]
    above = [s for s in members if s > lo]
    assert ranges.below(lo) == (max(below) if below else None)
    assert ranges.above(lo) == (min(above) if above else None)


# ---- the table and the command ----------------------------------------------------------------


def test_gaps_table_and_boots_come_with_the_migration(db_path: Path) -> None:
    # A database from before gap tracking: schema version 1, a node with its seq_next.
    from edge_gateway.store import MIGRATIONS
    db = sqlite3.connect(db_path)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (1)")
    db.execute("INSERT INTO nodes (node, site, online, seq_next, last_seen) "
               "VALUES ('bed-1', 'home', 1, 128, ?)", (T0,))
    db.commit()
    db.close()
    with Store(db_path) as store:
        assert store.schema_version() == len(MIGRATIONS)
        assert store.query("SELECT node, seq_next FROM boots") == [("bed-1", 128)]
        assert list_gaps(store) == []


def test_cli_lists_gaps(db_path: Path, h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gaps", "--db", str(db_path)]) == 0
    assert "no gaps in" in capsys.readouterr().out
    h.ingest(telemetry("bed-1", 0), telemetry("bed-1", 4), telemetry("bed-2", 0, 9),
             dropped("bed-2", 10, 1, 8))
    h.settle()
    h.ingest(telemetry("bed-1", 2))
    assert main(["gaps", "--db", str(db_path)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["NODE", "SEQ", "COUNT", "CAUSE", "DETECTED", "STATE"]
    assert [row.split()[:3] for row in rows] == [["bed-1", "1..3", "3"], ["bed-2", "1..8", "8"]]
    assert rows[0].endswith("open, 2 still missing")
    assert "dropped by node" in rows[1] and rows[1].endswith("open")
    h.ingest(telemetry("bed-1", 1, 3))
    assert main(["gaps", "--db", str(db_path), "--node", "bed-1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("filled 0s later")
    assert main(["gaps", "--db", str(db_path), "--open", "--node", "bed-1"]) == 0
    assert "no open gaps" in capsys.readouterr().out


def test_cli_gaps_without_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gaps", "--db", str(tmp_path / "none.db")]) == 1
    assert "no database at" in capsys.readouterr().err


def test_format_gaps_aligns_columns() -> None:
    text = format_gaps([Gap("bed-1", 5, 5, LOST, T0, 1),
                        Gap("bed-10", 100, 1099, DROPPED, T0, 1000, T0 + 7200)])
    lines = text.splitlines()
    seq_column = lines[0].index("SEQ")
    assert lines[1][seq_column:].startswith("5 ") and lines[2][seq_column:].startswith("100..")
    assert lines[2].endswith("filled 2h later")
    assert lines[1].split()[:4] == ["bed-1", "5", "1", "lost"]


def test_holes_left_by_retention_are_not_reported_after_a_restart(
        h: Harness, db_path: Path) -> None:
    from edge_gateway.history import ensure_schema

    h.ingest(telemetry("bed-1", *range(0, 10)))
    ensure_schema(h.store)
    # Retention deleted raw rows up to seq 5 but kept 2 (say, the newest of its quantity).
    with h.store.transaction() as db:
        db.execute("DELETE FROM readings WHERE node = 'bed-1' AND seq <= 5 AND seq != 2")
        db.execute("INSERT INTO pruned_seqs (node, through_seq) VALUES ('bed-1', 5)")
        db.execute("DELETE FROM readings WHERE node = 'bed-1' AND seq = 7")  # a real loss
    restarted = GapTracker(Store(db_path), settle_s=SETTLE_S, clock=h.clock)
    restarted.load()
    h.clock.now += SETTLE_S
    assert [g.seqs for g in restarted.check()] == ["7"]
