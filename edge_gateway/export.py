"""`neoterra export`: the readings (or hourly summaries) of a node, quantity and time range as CSV.

Rows are streamed from a read-only connection of the export's own, in one read transaction: a
consistent snapshot while the gateway keeps writing, and never the whole result in memory.
Every timestamp is written twice, as ISO-8601 UTC and as Unix seconds. Ranges are [start, end):
a raw reading is in it by its node timestamp, an hourly row by its hour's start. Hourly rows are
the summaries `edge_gateway.history` keeps, followed by the hours it has not summarised yet,
computed from the raw readings (the current hour is partial).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from edge_gateway import settings
from edge_gateway.history import HOUR, HOURLY_UNTIL
from edge_gateway.store import Store

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
RAW_HEADER = ("time_utc", "ts", "node", "quantity", "seq", "value", "received_at")
HOURLY_HEADER = ("hour_start_utc", "hour_start", "node", "quantity", "count", "min", "mean",
                 "max")
FETCH_ROWS = 1000


class ExportError(ValueError):
    """The export asked for cannot be made; the message says what exists instead."""


def iso_utc(ts: float) -> str:
    """2026-11-03T12:00:05.250Z"""
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """ISO-8601 date or date-time (no offset means UTC), or Unix seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a time; write ISO-8601 like 2026-11-03 or "
                         "2026-11-03T12:00Z, or Unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def export_csv(store: Store, out: TextIO, node: str | None = None, quantity: str | None = None,
               start: float | None = None, end: float | None = None,
               hourly: bool = False) -> int:
    """Write the header and every matching row to `out`; returns the number of rows."""
    _check(store, node, quantity, start, end)
    sql, params = (_hourly_query if hourly else _raw_query)(store, node, quantity, start, end)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HOURLY_HEADER if hourly else RAW_HEADER)
    count = 0
    with _snapshot(store.path) as db:
        cursor = db.execute(sql, params)
        while rows := cursor.fetchmany(FETCH_ROWS):
            writer.writerows((iso_utc(row[0]), *row[1:]) for row in rows)
            count += len(rows)
    return count


def _check(store: Store, node: str | None, quantity: str | None, start: float | None,
           end: float | None) -> None:
    if start is not None and end is not None and start >= end:
        raise ExportError(f"the range is empty: from {iso_utc(start)} is not before to "
                          f"{iso_utc(end)}; give --from earlier than --to")
    if node is not None:
        nodes = [row[0] for row in store.query("SELECT node FROM nodes ORDER BY node")]
        if node not in nodes:
            known = ", ".join(nodes) if nodes else "none yet (is the gateway running?)"
            raise ExportError(f"unknown node {node!r}; nodes in {store.path}: {known}")
    if quantity is not None:
        node_filter, params = (" AND node = ?", (node,)) if node is not None else ("", ())
        tables = _tables_with_readings(store)
        if not any(store.query(f"SELECT 1 FROM {table} WHERE quantity = ?{node_filter} LIMIT 1",
                               (quantity, *params)) for table in tables):
            stored = sorted({row[0] for table in tables for row in store.query(
                f"SELECT DISTINCT quantity FROM {table} WHERE 1{node_filter}", params)})
            whose = f"node {node!r}" if node is not None else "any node"
            raise ExportError(f"{whose} has no readings of {quantity!r}; quantities stored: "
                              f"{', '.join(stored) if stored else 'none yet'}")


def _tables_with_readings(store: Store) -> list[str]:
    return ["readings"] + (["readings_hourly"] if _has_hourly(store) else [])


def _has_hourly(store: Store) -> bool:
    return bool(store.query(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'readings_hourly'"))


def _filters(node: str | None, quantity: str | None) -> tuple[list[str], list[Any]]:
    where, params = [], []
    for column, value in (("node", node), ("quantity", quantity)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    return where, params


def _raw_query(store: Store, node: str | None, quantity: str | None, start: float | None,
               end: float | None) -> tuple[str, list[Any]]:
    where, params = _filters(node, quantity)
    for condition, value in (("ts >= ?", start), ("ts < ?", end)):
        if value is not None:
            where.append(condition)
            params.append(value)
    sql = "SELECT ts, ts, node, quantity, seq, value, received_at FROM readings"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY ts, node, quantity, seq", params


def _hourly_query(store: Store, node: str | None, quantity: str | None, start: float | None,
                  end: float | None) -> tuple[str, list[Any]]:
    """Summarised hours below history's watermark, then the later ones from raw readings."""
    first = -math.inf if start is None else math.ceil(start / HOUR) * HOUR
    stop = math.inf if end is None else math.ceil(end / HOUR) * HOUR
    until = first
    parts: list[str] = []
    params: list[Any] = []
    if _has_hourly(store):
        state = store.query("SELECT value FROM history_state WHERE name = ?", (HOURLY_UNTIL,))
        until = max(first, state[0][0]) if state else first
        where, filters = _filters(node, quantity)
        where += ["hour_start >= ?", "hour_start < ?", "hour_start < ?"]
        parts.append("SELECT hour_start, hour_start, node, quantity, count, min, mean, max"
                     " FROM readings_hourly WHERE " + " AND ".join(where))
        params += [*filters, first, stop, until]
    where, filters = _filters(node, quantity)
    where += ["ts >= ?", "ts < ?"]
    hour = f"CAST(ts / {HOUR} AS INTEGER) * {HOUR}"
    parts.append(f"SELECT {hour} AS hour, {hour}, node, quantity, count(*), min(value),"
                 " avg(value), max(value) FROM readings WHERE " + " AND ".join(where)
                 + " GROUP BY node, quantity, hour")
    params += [*filters, until, stop]
    return " UNION ALL ".join(parts) + " ORDER BY 1, 3, 4", params


@contextlib.contextmanager
def _snapshot(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10.0,
                         isolation_level=None)
    try:
        db.execute("BEGIN")  # one read transaction: every row from the same snapshot
        yield db
        db.execute("COMMIT")
    finally:
        db.close()


# ---- the command line -------------------------------------------------------------------------


def add_export_parser(
        subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export", help="readings of a node / quantity / time range as CSV",
        description="Write stored readings as CSV (times as ISO-8601 UTC and Unix seconds). "
                    "Times without an offset are UTC.")
    parser.add_argument("--db", metavar="PATH", help=f"SQLite database (${settings.ENV_DB}, "
                        f"default ./{settings.DEFAULT_DB})")
    parser.add_argument("--node", metavar="NODE", help="only this node")
    parser.add_argument("--quantity", metavar="Q", help="only this quantity, e.g. soil_moisture")
    parser.add_argument("--from", dest="start", metavar="TIME", type=_time_argument,
                        help="from this time on (inclusive), e.g. 2026-11-01 or 2026-11-01T06:00Z")
    parser.add_argument("--to", dest="end", metavar="TIME", type=_time_argument,
                        help="up to this time (exclusive)")
    parser.add_argument("--hourly", action="store_true",
                        help="hourly count/min/mean/max instead of every reading")
    parser.add_argument("-o", "--output", metavar="FILE", type=Path,
                        help="write to FILE (replaced only when the export succeeds); "
                             "default: standard output")
    parser.set_defaults(handler=run_export)
    return parser


def _time_argument(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_export(args: argparse.Namespace) -> int:
    db_path = Path(settings.db_setting(args.db))
    if not db_path.exists():
        print(f"neoterra export: no database at {db_path}: give --db PATH, or start the "
              f"gateway first (neoterra gateway run --db {db_path})", file=sys.stderr)
        return EXIT_FAILURE
    options = {"node": args.node, "quantity": args.quantity, "start": args.start,
               "end": args.end, "hourly": args.hourly}
    try:
        with Store(db_path) as store:
            if args.output is None:
                export_csv(store, sys.stdout, **options)
                return EXIT_OK
            count = _export_to_file(store, args.output, options)
    except ExportError as exc:
        print(f"neoterra export: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"neoterra export: cannot write {args.output}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_FAILURE
    print(f"exported {count} row(s) to {args.output}", file=sys.stderr)
    return EXIT_OK


def _export_to_file(store: Store, output: Path, options: dict[str, Any]) -> int:
    """Write next to `output`, then rename: a failed export leaves no half-written file."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp",
                                     dir=output.parent if str(output.parent) else ".")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
            count = export_csv(store, out, **options)
        os.replace(temp_name, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edge_gateway.export ...` until the lead wires `neoterra export` into cli."""
    parser = argparse.ArgumentParser(prog="neoterra")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
