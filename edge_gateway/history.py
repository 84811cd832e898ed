"""Years of readings on an SD card: hourly summaries, retention, and time-series queries.

Downsampling: `readings_hourly` holds count/min/mean/max per (node, quantity, hour of the node's
clock). Only complete hours are summarised (the hour plus `grace_s` is past on the gateway
clock). Two watermarks in `history_state` say how far it got: `hourly_until` (every hour below
it is summarised) and `hourly_rowid` (every reading row up to this rowid is counted). Readings
rows are only ever inserted, never updated, and the row with the highest rowid is never deleted,
so rowids only grow and "rowid > hourly_rowid" is exactly the rows not yet counted. A row that
arrives after its hour was summarised (a node's outbox draining after an outage) is merged into
that hour's row, so late data is never lost even when the hour's raw rows are gone; every other
hour is recomputed from raw rows, so running again over the same hours gives the same rows.

Retention (see `RetentionPolicy`): raw readings are deleted once older than `raw_days` AND
counted in the hourly rows; hourly rows after `hourly_days`; events after `events_days` (by
default as long as the hourly rows: events are rare and explain the curves), except the latest
event of each (node, kind, name), which is the current state (an open fault, a valve left on).
`pruned_seqs` records per node the highest seq retention deleted, so that seq-gap tracking can
tell the holes retention leaves from lost data.

All work is done in small steps, each with one short write transaction, so a large backlog
never holds the write lock long enough to stall the ingest writer; `HistoryMaintainer` runs the
steps in a thread. Run one maintainer per database.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_gateway.configerror import ConfigError
from edge_gateway.periodic import Periodic
from edge_gateway.store import Store

log = logging.getLogger(__name__)

HOUR = 3600
DAY = 86400
GRACE_S = 300.0  # a node's batch of the hour's last minutes may arrive this late and still fit
CHUNK_HOURS = 6  # hours recomputed per step
CHUNK_ROWS = 2000  # late rows merged, or rows deleted, per step
HOURLY_COLUMNS = "node, quantity, hour_start, count, min, mean, max"
HOURLY_UNTIL, HOURLY_ROWID, RAW_PRUNED_BEFORE = "hourly_until", "hourly_rowid", "raw_pruned_before"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS readings_hourly (
        node TEXT NOT NULL,
        quantity TEXT NOT NULL,
        hour_start INTEGER NOT NULL,  -- node clock, Unix seconds, a multiple of 3600
        count INTEGER NOT NULL,
        min REAL NOT NULL,
        mean REAL NOT NULL,
        max REAL NOT NULL,
        PRIMARY KEY (node, quantity, hour_start)
    )""",
    "CREATE INDEX IF NOT EXISTS readings_hourly_by_hour ON readings_hourly (hour_start)",
    "CREATE TABLE IF NOT EXISTS history_state (name TEXT PRIMARY KEY, value REAL NOT NULL)",
    # Per node: the highest seq (reading or event) retention deleted; holes at or below it are
    # retention's doing, not lost data.
    """CREATE TABLE IF NOT EXISTS pruned_seqs (
        node TEXT PRIMARY KEY,
        through_seq INTEGER NOT NULL
    )""",
)
_HOUR_OF_TS = f"CAST(ts / {HOUR} AS INTEGER) * {HOUR}"
_UPSERT_REPLACE = (f"INSERT OR REPLACE INTO readings_hourly ({HOURLY_COLUMNS})"
                   " VALUES (?,?,?,?,?,?,?)")
# Late rows: combine with what the hour already has (SET expressions see the old row).
_UPSERT_MERGE = f"""INSERT INTO readings_hourly ({HOURLY_COLUMNS}) VALUES (?,?,?,?,?,?,?)
    ON CONFLICT (node, quantity, hour_start) DO UPDATE SET
        count = count + excluded.count,
        min = min(min, excluded.min),
        max = max(max, excluded.max),
        mean = (mean * count + excluded.mean * excluded.count) / (count + excluded.count)"""


def ensure_schema(store: Store) -> None:
    with store.transaction() as db:
        for statement in SCHEMA:
            db.execute(statement)


@dataclass(frozen=True)
class RetentionPolicy:
    raw_days: float = 30
    hourly_days: float = 365
    events_days: float | None = None  # None: as long as hourly_days

    def __post_init__(self) -> None:
        for key, value in (("raw_retention_days", self.raw_days),
                           ("hourly_retention_days", self.hourly_days),
                           ("events_retention_days", self.events_days)):
            if value is not None and not value > 0:
                raise ConfigError(f"storage.{key}", f"{value} is not above 0",
                                  "give a number of days, e.g. 30")
        if self.hourly_days < self.raw_days:
            raise ConfigError("storage.hourly_retention_days",
                              f"{self.hourly_days} is shorter than raw_retention_days "
                              f"({self.raw_days})",
                              "keep the hourly summaries at least as long as the raw readings")

    @property
    def events_keep_days(self) -> float:
        return self.hourly_days if self.events_days is None else self.events_days


def history_state(store: Store) -> dict[str, float]:
    return {name: value for name, value in store.query("SELECT name, value FROM history_state")}


def _max_rowid(store: Store) -> int:
    return int(store.query("SELECT coalesce(max(rowid), 0) FROM readings")[0][0])


def _nodes(store: Store) -> list[str]:
    return [row[0] for row in store.query("SELECT node FROM nodes ORDER BY node")]


def _first_ts(store: Store, nodes: list[str], since: float, max_rowid: int) -> float | None:
    """The oldest reading at or after `since`; one (node, ts) index lookup per node."""
    firsts = [store.query("SELECT min(ts) FROM readings WHERE node = ? AND ts >= ?"
                          " AND rowid <= ?", (node, since, max_rowid))[0][0] for node in nodes]
    found = [ts for ts in firsts if ts is not None]
    return min(found) if found else None


# ---- downsampling -----------------------------------------------------------------------------


def downsample_step(store: Store, now: float, grace_s: float = GRACE_S,
                    chunk_hours: int = CHUNK_HOURS, chunk_rows: int = CHUNK_ROWS) -> bool:
    """One bounded piece of downsampling; False when there was nothing left to do.

    Reads outside any transaction (every query is bounded by rowid, so rows inserted meanwhile
    do not change its result), then writes in one short transaction, which does nothing if the
    watermarks moved in between (another maintainer got there first)."""
    state = history_state(store)
    top = _max_rowid(store)
    complete_until = math.floor((now - grace_s) / HOUR) * HOUR
    nodes = _nodes(store)
    if HOURLY_UNTIL not in state:
        first = _first_ts(store, nodes, 0.0, top)
        if first is None:
            return False
        # Every row so far is at or after the first hour: none of them is late.
        start = math.floor(first / HOUR) * HOUR
        return _commit(store, state, {HOURLY_UNTIL: start, HOURLY_ROWID: top}, [], [])
    done_until, seen = state[HOURLY_UNTIL], int(state[HOURLY_ROWID])
    bound = min(top, seen + chunk_rows)
    late = [] if bound <= seen else store.query(
        f"SELECT node, quantity, {_HOUR_OF_TS} AS hour, count(*), min(value), avg(value),"
        " max(value) FROM readings WHERE rowid > ? AND rowid <= ? AND ts < ?"
        " GROUP BY node, quantity, hour", (seen, bound, done_until))
    hours: list[tuple[Any, ...]] = []
    until = done_until
    if complete_until > done_until:
        first = _first_ts(store, nodes, done_until, bound)
        if first is None or first >= complete_until:
            until = complete_until
        else:
            start = math.floor(first / HOUR) * HOUR
            until = min(start + chunk_hours * HOUR, complete_until)
            for node in nodes:
                hours += store.query(
                    f"SELECT node, quantity, {_HOUR_OF_TS} AS hour, count(*), min(value),"
                    " avg(value), max(value) FROM readings"
                    " WHERE node = ? AND ts >= ? AND ts < ? AND rowid <= ?"
                    " GROUP BY quantity, hour", (node, start, until, bound))
    if bound == seen and until == done_until:
        return False
    return _commit(store, state, {HOURLY_UNTIL: until, HOURLY_ROWID: bound}, late, hours)


def _commit(store: Store, expected: dict[str, float], new_state: dict[str, float],
            late: list[tuple[Any, ...]], hours: list[tuple[Any, ...]]) -> bool:
    with store.transaction() as db:
        current = dict(db.execute("SELECT name, value FROM history_state").fetchall())
        if any(current.get(name) != expected.get(name) for name in (HOURLY_UNTIL, HOURLY_ROWID)):
            return False
        db.executemany(_UPSERT_MERGE, late)
        db.executemany(_UPSERT_REPLACE, hours)
        db.executemany("INSERT OR REPLACE INTO history_state (name, value) VALUES (?, ?)",
                       new_state.items())
    return True


# ---- retention --------------------------------------------------------------------------------


def prune_step(store: Store, now: float, policy: RetentionPolicy,
               chunk_rows: int = CHUNK_ROWS) -> int:
    """Delete at most about `chunk_rows` expired rows in one transaction; 0 when none are left."""
    with store.transaction() as db:
        state = dict(db.execute("SELECT name, value FROM history_state").fetchall())
        deleted = 0
        if HOURLY_UNTIL in state:
            # Only rows already counted, and never the top rowid (see the module docstring).
            raw_before = min(now - policy.raw_days * DAY, state[HOURLY_UNTIL])
            top = db.execute("SELECT coalesce(max(rowid), 0) FROM readings").fetchone()[0]
            counted = min(int(state[HOURLY_ROWID]), top - 1)
            nodes = [row[0] for row in db.execute("SELECT node FROM nodes ORDER BY node")]
            for node in nodes:
                if deleted >= chunk_rows:
                    break
                deleted += _delete_raw(db, node, raw_before, counted, chunk_rows - deleted)
            if deleted:
                db.execute("INSERT INTO history_state (name, value) VALUES (?, ?)"
                           " ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                           (RAW_PRUNED_BEFORE, raw_before))
        if deleted < chunk_rows:
            deleted += _delete_events(db, now - policy.events_keep_days * DAY,
                                      chunk_rows - deleted)
        if deleted < chunk_rows:
            deleted += db.execute(
                "DELETE FROM readings_hourly WHERE rowid IN (SELECT rowid FROM readings_hourly"
                " WHERE hour_start < ? LIMIT ?)",
                (now - policy.hourly_days * DAY, chunk_rows - deleted)).rowcount
    return deleted


def _delete_raw(db: Any, node: str, before: float, max_rowid: int, limit: int) -> int:
    chosen = ("SELECT rowid AS r, seq FROM readings WHERE node = ? AND ts < ? AND rowid <= ?"
              " ORDER BY ts LIMIT ?")
    params = (node, before, max_rowid, limit)
    through = db.execute(f"SELECT max(seq) FROM ({chosen})", params).fetchone()[0]
    if through is None:
        return 0
    _record_pruned(db, node, int(through))
    count: int = db.execute(
        f"DELETE FROM readings WHERE rowid IN (SELECT r FROM ({chosen}))", params).rowcount
    return count


def _delete_events(db: Any, before: float, limit: int) -> int:
    deleted = 0
    for (node,) in db.execute("SELECT DISTINCT node FROM events").fetchall():
        if deleted >= limit:
            break
        chosen = ("SELECT rowid AS r, seq FROM events WHERE node = ? AND ts < ? AND seq NOT IN"
                  " (SELECT max(seq) FROM events WHERE node = ? GROUP BY kind, name) LIMIT ?")
        params = (node, before, node, limit - deleted)
        through = db.execute(f"SELECT max(seq) FROM ({chosen})", params).fetchone()[0]
        if through is None:
            continue
        _record_pruned(db, node, int(through))
        deleted += db.execute(f"DELETE FROM events WHERE rowid IN (SELECT r FROM ({chosen}))",
                              params).rowcount
    return deleted


def _record_pruned(db: Any, node: str, through: int) -> None:
    db.execute("INSERT INTO pruned_seqs (node, through_seq) VALUES (?, ?) ON CONFLICT (node)"
               " DO UPDATE SET through_seq = max(through_seq, excluded.through_seq)",
               (node, through))


def pruned_seqs(store: Store) -> dict[str, int]:
    """Per node, the highest seq retention has deleted (holes at or below it are expected).
    Empty, not an error, on a database history has never touched."""
    if not store.query("SELECT 1 FROM sqlite_master WHERE name = 'pruned_seqs'"):
        return {}
    rows = store.query("SELECT node, through_seq FROM pruned_seqs")
    return {node: int(seq) for node, seq in rows}


# ---- series for charts -----------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesPoint:
    ts: float  # a raw reading's time, or the start of a summarised bucket
    mean: float
    min: float
    max: float
    count: int


@dataclass(frozen=True)
class Series:
    node: str
    quantity: str
    start: float
    end: float
    bucket_s: int  # 0: raw readings, one point each; else the width of each bucket (whole hours)
    points: tuple[SeriesPoint, ...]


def query_series(store: Store, node: str, quantity: str, start: float, end: float,
                 max_points: int = 1000) -> Series:
    """One quantity of one node over [start, end) in at most `max_points` points.

    Raw readings when no more than `max_points` of them cover the span and retention has not
    touched it; otherwise hourly summaries merged into buckets of whole hours so that they fit
    (the hours containing start and end are included whole), with the hours not summarised yet
    computed from the raw readings on the fly."""
    if not end > start:
        raise ValueError(f"end ({end}) must be after start ({start})")
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    state = history_state(store)
    if start >= state.get(RAW_PRUNED_BEFORE, -math.inf):
        rows = store.query("SELECT ts, value FROM readings WHERE node = ? AND quantity = ?"
                           " AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
                           (node, quantity, start, end, max_points + 1))
        if len(rows) <= max_points:
            points = tuple(SeriesPoint(ts, value, value, value, 1) for ts, value in rows)
            return Series(node, quantity, start, end, 0, points)
    first_hour = math.floor(start / HOUR) * HOUR
    hours = math.ceil(end / HOUR) - first_hour // HOUR
    bucket_s = math.ceil(hours / max_points) * HOUR
    summarised_until = max(state.get(HOURLY_UNTIL, first_hour), first_hour)
    rows = store.query(
        "SELECT hour_start, count, min, mean, max FROM readings_hourly WHERE node = ?"
        " AND quantity = ? AND hour_start >= ? AND hour_start < ? ORDER BY hour_start",
        (node, quantity, first_hour, min(end, summarised_until)))
    rows += store.query(
        f"SELECT {_HOUR_OF_TS} AS hour, count(*), min(value), avg(value), max(value)"
        " FROM readings WHERE node = ? AND quantity = ? AND ts >= ? AND ts < ?"
        " GROUP BY hour ORDER BY hour", (node, quantity, summarised_until, end))
    buckets: dict[int, list[float]] = {}  # bucket start -> [count, min, sum, max]
    for hour, count, low, mean, high in rows:
        key = first_hour + (int(hour) - first_hour) // bucket_s * bucket_s
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = [count, low, mean * count, high]
        else:
            bucket[0] += count
            bucket[1] = min(bucket[1], low)
            bucket[2] += mean * count
            bucket[3] = max(bucket[3], high)
    points = tuple(SeriesPoint(float(key), total / count, low, high, int(count))
                   for key, (count, low, total, high) in sorted(buckets.items()))
    return Series(node, quantity, start, end, bucket_s, points)


# ---- the maintenance thread -------------------------------------------------------------------


@dataclass
class MaintenanceReport:
    downsample_steps: int = 0
    rows_deleted: int = 0
    finished: bool = True  # False: stopped, or max_steps reached, with work left


class HistoryMaintainer:
    """Downsamples and prunes every `interval_s` in a thread, a bounded step at a time.

    Give it its own Store (one connection per thread). `stop()` waits at most `timeout`
    seconds: the thread checks for it between steps, and a step is short."""

    def __init__(self, store: Store, policy: RetentionPolicy | None = None,
                 interval_s: float = 600.0, clock: Callable[[], float] = time.time,
                 grace_s: float = GRACE_S, chunk_hours: int = CHUNK_HOURS,
                 chunk_rows: int = CHUNK_ROWS, pause_s: float = 0.05,
                 max_steps: int = 10_000) -> None:
        self.store = store
        self.policy = policy or RetentionPolicy()
        self.interval_s = interval_s
        self.clock = clock
        self.grace_s = grace_s
        self.chunk_hours = chunk_hours
        self.chunk_rows = chunk_rows
        self.pause_s = pause_s  # between steps: lets the ingest writer and the SD card breathe
        self.max_steps = max_steps
        self._periodic = Periodic("history", self.run_once, interval_s)
        self.start, self.stop = self._periodic.start, self._periodic.stop
        ensure_schema(store)

    def run_once(self) -> MaintenanceReport:
        """Downsample until caught up, then prune until nothing has expired (or stop/max)."""
        report = MaintenanceReport(finished=False)
        downsampling = True
        for _ in range(self.max_steps):
            if self._periodic.stopping:
                break
            now = self.clock()
            if downsampling:
                downsampling = downsample_step(self.store, now, self.grace_s, self.chunk_hours,
                                               self.chunk_rows)
                report.downsample_steps += downsampling
            else:
                deleted = prune_step(self.store, now, self.policy, self.chunk_rows)
                if not deleted:
                    report.finished = True
                    break
                report.rows_deleted += deleted
            if self.pause_s and self._periodic.pause(self.pause_s):
                break
        if report.downsample_steps or report.rows_deleted:
            log.info("history: %d downsampling step(s), %d expired row(s) deleted%s",
                     report.downsample_steps, report.rows_deleted,
                     "" if report.finished else " (more left for the next run)")
        return report
