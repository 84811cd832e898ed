"""Hourly downsampling, retention and series queries on real SQLite files, with readings
written through Store.write as the gateway writes them and an explicit `now`."""

from __future__ import annotations

import math
import random
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_gateway.configerror import ConfigError
from edge_gateway.history import (
    DAY,
    HOUR,
    HistoryMaintainer,
    RetentionPolicy,
    downsample_step,
    ensure_schema,
    history_state,
    prune_step,
    pruned_seqs,
    query_series,
)
from edge_gateway.store import Event, Reading, Store, Telemetry
from testkit.procs import wait_for

T0 = 1_790_000_000 // HOUR * HOUR  # an hour boundary
Row = tuple[str, str, int, int, float, float, float]


def telemetry(node: str, readings: list[tuple[int, float, str, float]]) -> Telemetry:
    """readings: (seq, ts, quantity, value)."""
    return Telemetry("home", node, tuple(Reading(node, seq, ts, quantity, value, ts)
                                         for seq, ts, quantity, value in readings), T0)


def fault(node: str, seq: int, ts: float, name: str, state: str) -> Event:
    return Event("home", node, seq, ts, "fault", name, state, "", ts)


def downsample_all(store: Store, now: float, **chunks: int) -> int:
    steps = 0
    while downsample_step(store, now, grace_s=0, **chunks):
        steps += 1
        assert steps < 10_000
    return steps


def prune_all(store: Store, now: float, policy: RetentionPolicy, chunk_rows: int = 5000) -> int:
    total = 0
    for _ in range(10_000):
        deleted = prune_step(store, now, policy, chunk_rows)
        assert deleted <= chunk_rows
        if not deleted:
            return total
        total += deleted
    raise AssertionError("retention never finished")


def hourly(store: Store) -> list[Row]:
    return [tuple(row) for row in store.query(  # type: ignore[misc]
        "SELECT node, quantity, hour_start, count, min, mean, max FROM readings_hourly"
        " ORDER BY node, quantity, hour_start")]


def expected_hourly(readings: list[tuple[str, float, str, float]], until: float) -> list[Row]:
    """(node, ts, quantity, value) summarised the slow, obvious way."""
    groups: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for node, ts, quantity, value in readings:
        if ts < until:
            groups[(node, quantity, int(ts // HOUR * HOUR))].append(value)
    return [(node, quantity, hour, len(v), min(v), sum(v) / len(v), max(v))
            for (node, quantity, hour), v in sorted(groups.items())]


def assert_rows_match(actual: list[Row], expected: list[Row]) -> None:
    assert [row[:5] + row[6:] for row in actual] == [row[:5] + row[6:] for row in expected]
    for got, want in zip(actual, expected, strict=True):
        assert got[5] == pytest.approx(want[5], rel=1e-9), got


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "gw.db") as opened:
        ensure_schema(opened)
        yield opened


def three_hours(store: Store) -> list[tuple[str, float, str, float]]:
    """Two nodes, two quantities, a reading every 10 minutes over hours T0..T0+3h."""
    written = []
    for node in ("bed-1", "bed-2"):
        batch = []
        for i in range(18):
            ts = T0 + i * 600 + 5
            for quantity, value in (("soil_moisture", 20.0 + i), ("air_temp", 10.0 - i / 3)):
                batch.append((i, ts, quantity, value))
                written.append((node, ts, quantity, value))
        store.write([telemetry(node, batch)])
    return written


def test_only_complete_hours_are_summarised(store: Store) -> None:
    written = three_hours(store)
    now = T0 + 2 * HOUR + 1800  # the third hour is still running
    downsample_all(store, now)
    assert_rows_match(hourly(store), expected_hourly(written, T0 + 2 * HOUR))
    assert {row[2] for row in hourly(store)} == {T0, T0 + HOUR}
    first = hourly(store)[0]
    assert first[:7] == ("bed-1", "air_temp", T0, 6, 10.0 - 5 / 3, first[5], 10.0)
    assert history_state(store)["hourly_until"] == T0 + 2 * HOUR


def test_rerunning_changes_nothing_and_later_runs_continue(tmp_path: Path) -> None:
    with Store(tmp_path / "gw.db") as store:
        ensure_schema(store)
        written = three_hours(store)
        downsample_all(store, T0 + 2 * HOUR)
        before = hourly(store)
        assert downsample_step(store, T0 + 2 * HOUR, grace_s=0) is False
        assert hourly(store) == before
    # A new Store (a gateway restart) continues where the last one got to.
    with Store(tmp_path / "gw.db") as store:
        assert downsample_all(store, T0 + 3 * HOUR) >= 1
        assert_rows_match(hourly(store), expected_hourly(written, T0 + 3 * HOUR))
        assert [row for row in hourly(store) if row[2] < T0 + 2 * HOUR] == before


def test_the_grace_period_keeps_an_hour_open(store: Store) -> None:
    three_hours(store)
    downsample_step(store, T0 + HOUR + 60, grace_s=120)
    while downsample_step(store, T0 + HOUR + 60, grace_s=120):
        pass
    assert hourly(store) == []
    while downsample_step(store, T0 + HOUR + 121, grace_s=120):
        pass
    assert {row[2] for row in hourly(store)} == {T0}


def test_a_late_reading_is_merged_into_its_summarised_hour(store: Store) -> None:
    written = three_hours(store)
    downsample_all(store, T0 + 3 * HOUR)
    # A node's outbox drains after an outage: readings for hours already summarised.
    late = [(100, T0 + 30, "soil_moisture", 99.0), (101, T0 + HOUR + 30, "soil_moisture", -5.0)]
    store.write([telemetry("bed-1", late)])
    written += [("bed-1", ts, quantity, value) for _, ts, quantity, value in late]
    downsample_all(store, T0 + 3 * HOUR)
    assert_rows_match(hourly(store), expected_hourly(written, T0 + 3 * HOUR))
    # Redelivering the same readings (QoS1) stores nothing and merges nothing.
    store.write([telemetry("bed-1", late)])
    downsample_all(store, T0 + 3 * HOUR)
    assert_rows_match(hourly(store), expected_hourly(written, T0 + 3 * HOUR))


def test_a_late_reading_for_an_hour_whose_raw_rows_are_gone_still_counts(store: Store) -> None:
    written = three_hours(store)
    now = T0 + 40 * DAY
    downsample_all(store, now)
    prune_all(store, now, RetentionPolicy(raw_days=30))
    assert store.query("SELECT count(*) FROM readings")[0][0] == 1  # the newest row stays
    store.write([telemetry("bed-2", [(500, T0 + 10, "air_temp", 50.0)])])
    written.append(("bed-2", T0 + 10, "air_temp", 50.0))
    downsample_all(store, now)
    assert_rows_match(hourly(store), expected_hourly(written, now))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * HOUR), st.sampled_from(["a", "b"]),
                          st.integers(-50, 50)), min_size=1, max_size=60),
       st.lists(st.integers(0, 6 * HOUR), min_size=1, max_size=8),
       st.integers(1, 9), st.integers(1, 3), st.integers(1, 4),
       st.randoms(use_true_random=False))
def test_summaries_equal_a_direct_computation_whatever_the_arrival_order(
        readings: list[tuple[int, str, int]], run_times: list[int], chunk_rows: int,
        chunk_hours: int, batch_size: int, rng: random.Random) -> None:
    """Readings arrive in random order and batches; maintenance runs at random moments with
    tiny chunks; at the end the table is what summarising everything at once would give."""
    rows = [(seq, float(T0 + offset), quantity, float(value))
            for seq, (offset, quantity, value) in enumerate(readings)]
    rng.shuffle(rows)
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "gw.db") as store:
        ensure_schema(store)
        batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        times = sorted(T0 + t for t in run_times)
        for i, batch in enumerate(batches):
            store.write([telemetry("n", batch)])
            if i < len(times):
                downsample_all(store, times[i], chunk_rows=chunk_rows, chunk_hours=chunk_hours)
        end = T0 + 7 * HOUR
        downsample_all(store, end, chunk_rows=chunk_rows, chunk_hours=chunk_hours)
        written = [("n", ts, quantity, value) for _, ts, quantity, value in rows]
        assert_rows_match(hourly(store), expected_hourly(written, end))


def test_retention_deletes_only_old_summarised_raw_rows(store: Store) -> None:
    three_hours(store)
    now = T0 + 31 * DAY
    policy = RetentionPolicy(raw_days=30, hourly_days=365)
    # Nothing is summarised yet: old as they are, the raw rows stay.
    assert prune_all(store, now, policy) == 0
    downsample_step(store, now, grace_s=0)  # only sets the starting point
    downsample_step(store, now, grace_s=0)  # summarises T0 .. T0+6h (one chunk)
    assert history_state(store)["hourly_until"] == T0 + 6 * HOUR
    store.write([telemetry("bed-1", [(50, now - HOUR, "soil_moisture", 1.0)])])  # recent
    deleted = prune_all(store, now, policy, chunk_rows=10)
    assert deleted == 72
    assert store.query("SELECT node, seq FROM readings") == [("bed-1", 50)]
    assert pruned_seqs(store) == {"bed-1": 17, "bed-2": 17}
    assert len(hourly(store)) == 12  # summaries outlive raw rows


def test_retention_deletes_old_hourly_rows_and_events_but_keeps_current_state(
        store: Store) -> None:
    three_hours(store)
    store.write([fault("bed-1", 20, T0, "sht4x", "failed"),
                 fault("bed-1", 21, T0 + 60, "sht4x", "ok"),
                 fault("bed-1", 22, T0 + 120, "soil", "warning"),
                 Event("home", "bed-1", 23, T0 + 200, "actuator", "pump", "on", "", T0)])
    downsample_all(store, T0 + 3 * HOUR)
    now = T0 + 400 * DAY
    prune_all(store, now, RetentionPolicy(raw_days=30, hourly_days=365))
    assert hourly(store) == []
    # The latest event of each (node, kind, name) is the current state: kept whatever its age.
    assert [(e.seq, e.name, e.state) for e in store.events()] == [
        (21, "sht4x", "ok"), (22, "soil", "warning"), (23, "pump", "on")]
    assert pruned_seqs(store)["bed-1"] == 20


def test_events_can_be_kept_longer_than_the_hourly_rows(store: Store) -> None:
    store.write([fault("bed-1", 1, T0, "sht4x", "failed"), fault("bed-1", 2, T0, "sht4x", "ok")])
    prune_all(store, T0 + 400 * DAY, RetentionPolicy(hourly_days=365, events_days=800))
    assert len(store.events()) == 2
    prune_all(store, T0 + 801 * DAY, RetentionPolicy(hourly_days=365, events_days=800))
    assert [e.seq for e in store.events()] == [2]


def test_bad_retention_names_the_key() -> None:
    with pytest.raises(ConfigError) as raised:
        RetentionPolicy(raw_days=0)
    assert raised.value.key == "storage.raw_retention_days"
    with pytest.raises(ConfigError) as raised:
        RetentionPolicy(raw_days=30, hourly_days=7)
    assert raised.value.key == "storage.hourly_retention_days"
    assert "at least as long" in raised.value.fix


def test_short_spans_are_raw_and_long_ones_hourly(store: Store) -> None:
    written = three_hours(store)
    downsample_all(store, T0 + 2 * HOUR)  # the third hour is not summarised yet
    short = query_series(store, "bed-1", "soil_moisture", T0, T0 + HOUR, max_points=100)
    assert short.bucket_s == 0
    assert [(p.ts, p.mean, p.count) for p in short.points] == [
        (ts, value, 1) for node, ts, quantity, value in written
        if node == "bed-1" and quantity == "soil_moisture" and ts < T0 + HOUR]
    long = query_series(store, "bed-1", "soil_moisture", T0, T0 + 3 * HOUR, max_points=5)
    assert long.bucket_s == HOUR
    assert [p.ts for p in long.points] == [T0, T0 + HOUR, T0 + 2 * HOUR]
    # The third hour comes from the raw rows, summarised on the fly.
    assert [(p.count, p.min, p.max) for p in long.points] == [(6, 20, 25), (6, 26, 31),
                                                               (6, 32, 37)]
    assert long.points[2].mean == pytest.approx(34.5)


def test_a_long_span_is_merged_into_buckets_that_fit(store: Store) -> None:
    readings = [(i, T0 + i * HOUR + 1, "soil_moisture", float(i)) for i in range(100)]
    store.write([telemetry("bed-1", readings)])
    downsample_all(store, T0 + 100 * HOUR)
    series = query_series(store, "bed-1", "soil_moisture", T0, T0 + 100 * HOUR, max_points=10)
    assert series.bucket_s == 10 * HOUR
    assert len(series.points) == 10
    assert all(p.count == 10 for p in series.points)
    assert series.points[3].mean == pytest.approx(34.5)
    assert (series.points[3].min, series.points[3].max) == (30, 39)
    assert math.fsum(p.count for p in series.points) == 100


def test_spans_reaching_into_pruned_raw_data_use_the_summaries(store: Store) -> None:
    three_hours(store)
    now = T0 + 31 * DAY
    downsample_all(store, now)
    prune_all(store, now, RetentionPolicy(raw_days=30))
    series = query_series(store, "bed-1", "soil_moisture", T0, T0 + HOUR, max_points=100)
    assert series.bucket_s == HOUR
    assert [(p.ts, p.count) for p in series.points] == [(T0, 6)]


def test_bad_series_ranges_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="after start"):
        query_series(store, "bed-1", "soil_moisture", T0, T0)
    with pytest.raises(ValueError, match="max_points"):
        query_series(store, "bed-1", "soil_moisture", T0, T0 + 1, max_points=0)


def test_the_maintainer_thread_downsamples_prunes_and_stops(tmp_path: Path) -> None:
    with Store(tmp_path / "gw.db") as writer:
        three_hours(writer)
    now = [T0 + 31 * DAY]
    with Store(tmp_path / "gw.db") as own:
        maintainer = HistoryMaintainer(own, RetentionPolicy(raw_days=30), interval_s=0.05,
                                       clock=lambda: now[0], chunk_rows=7, pause_s=0)
        maintainer.start()
        try:
            with pytest.raises(RuntimeError):
                maintainer.start()
            wait_for(lambda: own.query("SELECT count(*) FROM readings")[0][0] == 1, 10,
                     "the maintainer to summarise and prune the old readings")
            assert len(hourly(own)) == 12
        finally:
            assert maintainer.stop(timeout=5)
        assert maintainer.stop() is True  # stopping twice is harmless


def test_run_once_reports_unfinished_work_when_capped(store: Store) -> None:
    three_hours(store)
    maintainer = HistoryMaintainer(store, chunk_hours=1, pause_s=0, max_steps=2,
                                   clock=lambda: T0 + 3 * HOUR)
    report = maintainer.run_once()
    assert (report.finished, report.downsample_steps) == (False, 2)
    report = HistoryMaintainer(store, pause_s=0, clock=lambda: T0 + 3 * HOUR).run_once()
    assert report.finished


def test_summaries_stay_exact_while_the_gateway_keeps_writing(tmp_path: Path) -> None:
    """The maintainer reads outside its write transactions; rows the gateway commits in
    between must be counted once, neither lost nor twice."""
    rng = random.Random(7)
    rows = [(seq, float(T0 + rng.randrange(6 * HOUR)), rng.choice(["a", "b"]),
             float(rng.randrange(100))) for seq in range(3000)]
    end = T0 + 6 * HOUR
    with Store(tmp_path / "gw.db") as writer, Store(tmp_path / "gw.db") as own:
        maintainer = HistoryMaintainer(own, interval_s=0.001, clock=lambda: end, grace_s=0,
                                       chunk_rows=50, chunk_hours=1, pause_s=0)
        maintainer.start()
        try:
            for i in range(0, len(rows), 20):
                writer.write([telemetry("n", rows[i:i + 20])])
                if i == len(rows) // 2:  # make sure its work interleaves with the writes
                    wait_for(lambda: history_state(writer).get("hourly_until", 0) > T0, 10,
                             "the maintainer to summarise some hours")
        finally:
            assert maintainer.stop(timeout=10)
        downsample_all(own, end)
        written = [("n", ts, quantity, value) for _, ts, quantity, value in rows]
        assert_rows_match(hourly(own), expected_hourly(written, end))


def test_pruned_seqs_is_empty_on_a_database_history_never_touched(tmp_path: Path) -> None:
    with Store(tmp_path / "plain.db") as plain:
        assert pruned_seqs(plain) == {}
