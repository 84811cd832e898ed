"""CSV export: what lands in the file, errors that say what exists, and the command line."""

from __future__ import annotations

import csv
import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_gateway.export import ExportError, export_csv, iso_utc, main, parse_time
from edge_gateway.history import HOUR, downsample_step, ensure_schema
from edge_gateway.store import Reading, Status, Store, Telemetry

T0 = 1_790_000_000 // HOUR * HOUR  # 2026-09-21T14:00:00Z


def telemetry(node: str, readings: list[tuple[int, float, str, float]]) -> Telemetry:
    return Telemetry("home", node, tuple(Reading(node, seq, ts, quantity, value, ts + 0.5)
                                         for seq, ts, quantity, value in readings), T0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "gw.db"
    with Store(path) as store:
        store.write([Status("home", "bed-1", True, T0, role="garden", seq_next=0),
                     Status("home", "bed-2", True, T0, role="garden", seq_next=0)])
        for node, offset in (("bed-1", 0.0), ("bed-2", 100.0)):
            store.write([telemetry(node, [
                (i, T0 + i * 900 + 0.25, quantity, offset + i + (0.5 if quantity == "air_temp"
                                                                  else 0))
                for i in range(12) for quantity in ("soil_moisture", "air_temp")])])
    return path


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store(db_path) as opened:
        yield opened


def export(store: Store, **options: object) -> list[list[str]]:
    out = io.StringIO()
    count = export_csv(store, out, **options)  # type: ignore[arg-type]
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert count == len(rows) - 1
    return rows


def test_raw_rows_of_a_node_quantity_and_range(store: Store) -> None:
    rows = export(store, node="bed-1", quantity="soil_moisture", start=T0 + 900,
                  end=T0 + 3 * 900)
    assert rows == [
        ["time_utc", "ts", "node", "quantity", "seq", "value", "received_at"],
        ["2026-09-21T14:15:00.250Z", str(T0 + 900.25), "bed-1", "soil_moisture", "1", "1.0",
         str(T0 + 900.75)],
        ["2026-09-21T14:30:00.250Z", str(T0 + 1800.25), "bed-1", "soil_moisture", "2", "2.0",
         str(T0 + 1800.75)],
    ]


def test_everything_is_exported_oldest_first_without_filters(store: Store) -> None:
    rows = export(store)[1:]
    assert len(rows) == 48
    keys = [(float(row[1]), row[2], row[3]) for row in rows]
    assert keys == sorted(keys)
    assert {row[2] for row in rows} == {"bed-1", "bed-2"}


def test_hourly_rows_are_the_summaries_then_the_hours_not_summarised_yet(store: Store) -> None:
    ensure_schema(store)
    while downsample_step(store, T0 + 2 * HOUR, grace_s=0):
        pass  # summarises the first two hours; the third is computed from raw rows
    rows = export(store, node="bed-2", quantity="air_temp", hourly=True)
    assert rows == [
        ["hour_start_utc", "hour_start", "node", "quantity", "count", "min", "mean", "max"],
        ["2026-09-21T14:00:00.000Z", str(T0), "bed-2", "air_temp", "4", "100.5", "102.0",
         "103.5"],
        ["2026-09-21T15:00:00.000Z", str(T0 + HOUR), "bed-2", "air_temp", "4", "104.5", "106.0",
         "107.5"],
        ["2026-09-21T16:00:00.000Z", str(T0 + 2 * HOUR), "bed-2", "air_temp", "4", "108.5",
         "110.0", "111.5"],
    ]
    summarised = store.query("SELECT count(*) FROM readings_hourly")[0][0]
    assert summarised == 8  # 2 hours x 2 nodes x 2 quantities: the third came from raw rows
    # A range selects hours by their start.
    rows = export(store, node="bed-2", quantity="air_temp", hourly=True, start=T0 + 1,
                  end=T0 + 2 * HOUR + 1)
    assert [row[1] for row in rows[1:]] == [str(T0 + HOUR), str(T0 + 2 * HOUR)]


def test_hourly_export_works_before_history_ever_ran(store: Store) -> None:
    rows = export(store, node="bed-1", quantity="soil_moisture", hourly=True)
    assert [(row[1], row[4]) for row in rows[1:]] == [
        (str(T0), "4"), (str(T0 + HOUR), "4"), (str(T0 + 2 * HOUR), "4")]


def test_an_empty_range_is_refused(store: Store) -> None:
    with pytest.raises(ExportError, match="give --from earlier than --to"):
        export_csv(store, io.StringIO(), start=T0 + 10, end=T0)


def test_an_unknown_node_is_refused_naming_the_nodes_there_are(store: Store) -> None:
    out = io.StringIO()
    with pytest.raises(ExportError, match=r"unknown node 'bed-9'; nodes in .*: bed-1, bed-2"):
        export_csv(store, out, node="bed-9")
    assert out.getvalue() == ""


def test_an_unknown_quantity_is_refused_naming_the_stored_ones(store: Store) -> None:
    with pytest.raises(ExportError, match="node 'bed-1' has no readings of 'pm25'; "
                                          "quantities stored: air_temp, soil_moisture"):
        export_csv(store, io.StringIO(), node="bed-1", quantity="pm25")


def test_rows_are_streamed_not_collected(tmp_path: Path) -> None:
    with Store(tmp_path / "big.db") as store:
        for batch in range(30):
            store.write([telemetry("bed-1", [(seq, T0 + seq, "soil_moisture", seq / 7)
                                             for seq in range(batch * 1000,
                                                              (batch + 1) * 1000)])])

        class Discard(io.StringIO):
            def write(self, text: str) -> int:
                return len(text)

        tracemalloc.start()
        try:
            count = export_csv(store, Discard(), node="bed-1")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == 30_000
    # 30 000 rows held at once would take several MB of Python objects.
    assert peak < 1_500_000, peak


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-09-21T14:00:00Z", T0),
    ("2026-09-21T14:00", T0),
    ("2026-09-21T16:00+02:00", T0),
    ("2026-09-21", T0 - 14 * HOUR),
    (str(T0), T0),
])
def test_times_are_iso_8601_utc_or_unix_seconds(text: str, expected: float) -> None:
    assert parse_time(text) == expected
    assert iso_utc(T0 + 0.5) == "2026-09-21T14:00:00.500Z"


def test_a_bad_time_says_how_to_write_one() -> None:
    with pytest.raises(ValueError, match="ISO-8601 like 2026-11-03"):
        parse_time("yesterday")


def test_the_command_writes_the_file(db_path: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.csv"
    code = main(["export", "--db", str(db_path), "--node", "bed-1", "--quantity", "air_temp",
                 "--from", "2026-09-21T14:00Z", "--to", "2026-09-21T15:00Z", "-o", str(out)])
    assert code == 0
    rows = list(csv.reader(out.open()))
    assert len(rows) == 5 and rows[1][3] == "air_temp"
    assert "exported 4 row(s)" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_command_to_stdout_with_hourly(db_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--db", str(db_path), "--node", "bed-1", "--hourly"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("hour_start_utc,hour_start,")
    assert len(lines) == 1 + 3 * 2


def test_a_failed_command_leaves_an_existing_file_alone(db_path: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    out = tmp_path / "out.csv"
    out.write_text("previous export\n")
    code = main(["export", "--db", str(db_path), "--node", "nope", "-o", str(out)])
    assert code == 2
    assert "unknown node 'nope'; nodes in" in capsys.readouterr().err
    assert out.read_text() == "previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in tmp_path.iterdir() if not p.name.endswith(".tmp"))


def test_the_command_needs_an_existing_database(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--db", str(tmp_path / "missing.db")]) == 1
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_a_bad_time_argument_is_a_usage_error(db_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", "--db", str(db_path), "--from", "soon"])
    assert exited.value.code == 2
    assert "--from: 'soon' is not a time" in capsys.readouterr().err
