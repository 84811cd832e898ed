"""The gateway's SQLite store: what nodes reported, what they acknowledged, what we refused.

Writers hand over decoded messages (see `Message`); each `write()` call is one transaction, so
the ingest path can acknowledge the MQTT delivery only after the data is on disk. `write()`
takes a sequence so that batching several messages per transaction needs no new interface.

One connection is used by one thread at a time (the ingest thread while the gateway runs);
other processes and threads open their own `Store` on the same file — WAL lets them read while
the gateway writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_gateway.messages import (
    Ack,
    DeadLetter,
    Event,
    Message,
    NodeInfo,
    Reading,
    Status,
    Telemetry,
)

__all__ = [
    "SCHEMA_VERSION", "Ack", "DeadLetter", "Event", "Message", "NodeInfo", "Reading", "Status",
    "Store", "StoreError", "Telemetry", "WriteResult",
]

# Each entry migrates the schema from version i to i + 1; never edit one that has shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE readings (
            node TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,            -- node clock, Unix seconds
            quantity TEXT NOT NULL,
            value REAL NOT NULL,
            received_at REAL NOT NULL,   -- gateway clock, Unix seconds
            -- (node, seq) identifies a reading set, so QoS1 redelivery stores nothing twice;
            -- quantity before seq lets latest-value lookups walk the index backwards.
            UNIQUE (node, quantity, seq)
        )""",
        "CREATE INDEX readings_by_node_time ON readings (node, ts)",
        """CREATE TABLE events (
            node TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ts REAL NOT NULL,
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            detail TEXT NOT NULL,
            received_at REAL NOT NULL,
            UNIQUE (node, seq)
        )""",
        """CREATE TABLE nodes (
            node TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            online INTEGER,              -- NULL until the node's status has been seen
            role TEXT,
            fw TEXT,
            board TEXT,
            seq_next INTEGER,
            uptime_s INTEGER,
            last_seen REAL,              -- gateway clock: last message from the node itself
            changed_at REAL              -- gateway clock: when `online` last changed
        )""",
        """CREATE TABLE acks (
            cmd_id TEXT NOT NULL,
            node TEXT NOT NULL,
            ok INTEGER NOT NULL,
            result TEXT NOT NULL,
            detail TEXT NOT NULL,
            ts REAL NOT NULL,
            received_at REAL NOT NULL,
            -- a node may answer "started" then "done"; a redelivered ack is stored once
            UNIQUE (node, cmd_id, result)
        )""",
        """CREATE TABLE dead_letters (
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            reason TEXT NOT NULL,
            received_at REAL NOT NULL
        )""",
    ),
    (
        # Where each boot of a node started its seqs (its birth's seq_next): the numbers
        # skipped below one are not lost readings (docs/protocol.md, "Sequence numbers").
        """CREATE TABLE boots (
            node TEXT NOT NULL,
            seq_next INTEGER NOT NULL,
            received_at REAL NOT NULL,   -- gateway clock: the first birth with it
            UNIQUE (node, seq_next)
        )""",
        """INSERT INTO boots (node, seq_next, received_at)
           SELECT node, seq_next, coalesce(changed_at, last_seen, 0) FROM nodes
           WHERE seq_next IS NOT NULL""",
        # Missing seqs, found and kept by edge_gateway.gaps.
        """CREATE TABLE gaps (
            node TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            cause TEXT NOT NULL,         -- 'lost', or 'dropped' (the node said it dropped them)
            detected_at REAL NOT NULL,   -- gateway clock
            missing INTEGER NOT NULL,    -- how many of first_seq..last_seq are still not stored
            filled_at REAL,              -- gateway clock: when the last of them arrived late
            UNIQUE (node, first_seq)
        )""",
    ),
    (
        # The last seq the node's earlier boots took, when the birth says (seq_last): then
        # only seq_last+1 .. seq_next-1 went unused and anything else absent below is lost.
        "ALTER TABLE boots ADD COLUMN seq_last INTEGER",
    ),
    (
        # The desired config version the node says it applied (its birth's "config").
        "ALTER TABLE nodes ADD COLUMN config_version TEXT",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
TABLES = ("readings", "events", "nodes", "acks", "dead_letters", "boots", "gaps")


class StoreError(Exception):
    """The database cannot be used as it is (e.g. written by a newer gateway)."""


EVENT_COLUMNS = ("node", "seq", "ts", "kind", "name", "state", "detail", "received_at")
ACK_COLUMNS = ("node", "cmd_id", "ok", "result", "detail", "ts", "received_at")


@dataclass
class WriteResult:
    """What one write() changed; the caller logs and counts from it after the commit."""

    readings_added: int = 0
    readings_duplicate: int = 0
    events_added: int = 0
    acks_added: int = 0
    dead_letters: int = 0
    # the status messages that changed their node's availability (online/offline)
    availability_changes: list[Status] = field(default_factory=list)
    # readings whose (node, quantity, seq) was already stored with a different ts or value
    seq_conflicts: list[Reading] = field(default_factory=list)


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) below.
            self._db = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the database: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL loses at most the last commits on power loss, never integrity.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path}: not a usable neoterra database: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so two writers wait (busy timeout) instead
        # of failing half-way through with SQLITE_BUSY on lock upgrade.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            version = int(row[0] or 0)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version} is newer than this gateway "
                    f"understands ({SCHEMA_VERSION}); upgrade neoterra"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    db.execute(statement)
            if version < SCHEMA_VERSION:
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction, for modules that keep their own tables here (gaps)."""
        return self._transaction()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._rows(sql, params)

    def schema_version(self) -> int:
        return int(self._db.execute("SELECT version FROM schema_version").fetchone()[0])

    # ---- writes ------------------------------------------------------------------------------

    def write(self, messages: Sequence[Message]) -> WriteResult:
        """Store all messages in one transaction; redelivered data is recognised and skipped.

        One statement per kind of row for the whole batch, not per message: that is where a
        batch's time goes. Order within the batch is kept where it matters (status, events,
        acks; readings among themselves: the first of two equal seqs wins)."""
        result = WriteResult()
        readings: list[Reading] = []
        dead_letters: list[tuple[str, bytes, str, float]] = []
        seen: dict[str, tuple[str, float]] = {}  # node -> (site, latest received_at)
        with self._transaction() as db:
            for message in messages:
                if isinstance(message, Telemetry):
                    readings += message.readings
                elif isinstance(message, DeadLetter):
                    dead_letters.append(
                        (message.topic, message.payload, message.reason, message.received_at))
                    continue
                elif isinstance(message, Status):
                    self._write_status(db, message, result)
                    continue
                elif isinstance(message, Event):
                    result.events_added += _insert_new(db, "events", EVENT_COLUMNS, message)
                else:
                    result.acks_added += _insert_new(db, "acks", ACK_COLUMNS, message)
                previous = seen.get(message.node)
                if previous is None or previous[1] < message.received_at:
                    seen[message.node] = (message.site, message.received_at)
            if readings:
                self._write_readings(db, readings, result)
            if dead_letters:
                db.executemany("INSERT INTO dead_letters (topic, payload, reason, received_at)"
                               " VALUES (?, ?, ?, ?)", dead_letters)
                result.dead_letters += len(dead_letters)
            if seen:
                db.executemany(
                    """INSERT INTO nodes (node, site, last_seen) VALUES (?, ?, ?)
                       ON CONFLICT (node) DO UPDATE SET
                           site = excluded.site,
                           last_seen = max(coalesce(last_seen, 0), excluded.last_seen)""",
                    [(node, site, at) for node, (site, at) in seen.items()],
                )
        return result

    @staticmethod
    def _write_readings(db: sqlite3.Connection, readings: list[Reading],
                        result: WriteResult) -> None:
        before = db.total_changes
        _insert_many(db, "INSERT OR IGNORE INTO readings"
                         " (node, seq, ts, quantity, value, received_at) VALUES ",
                     [(r.node, r.seq, r.ts, r.quantity, r.value, r.received_at)
                      for r in readings])
        added = db.total_changes - before
        result.readings_added += added
        result.readings_duplicate += len(readings) - added
        if added < len(readings):
            # A redelivery repeats the stored values; anything else means the node reused a
            # seq (lost its counter?), and the caller should say so rather than drop silently.
            for reading in readings:
                stored = db.execute(
                    "SELECT ts, value FROM readings WHERE node = ? AND quantity = ? AND seq = ?",
                    (reading.node, reading.quantity, reading.seq),
                ).fetchone()
                if stored != (reading.ts, reading.value):
                    result.seq_conflicts.append(reading)

    def _write_status(self, db: sqlite3.Connection, message: Status, result: WriteResult) -> None:
        row = db.execute("SELECT online FROM nodes WHERE node = ?", (message.node,)).fetchone()
        previous = None if row is None or row[0] is None else bool(row[0])
        changed = previous != message.online
        changed_at = message.received_at if changed else None
        if message.online:
            db.execute(
                """INSERT INTO nodes (node, site, online, role, fw, board, seq_next, uptime_s,
                                      last_seen, changed_at, config_version)
                   VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (node) DO UPDATE SET
                       site = excluded.site, online = 1, role = excluded.role,
                       fw = excluded.fw, board = excluded.board, seq_next = excluded.seq_next,
                       uptime_s = excluded.uptime_s,
                       last_seen = max(coalesce(last_seen, 0), excluded.last_seen),
                       changed_at = coalesce(excluded.changed_at, changed_at),
                       config_version = excluded.config_version""",
                (message.node, message.site, message.role, message.fw, message.board,
                 message.seq_next, message.uptime_s, message.received_at, changed_at,
                 message.config_version or None),
            )
            db.execute("INSERT OR IGNORE INTO boots (node, seq_next, seq_last, received_at)"
                       " VALUES (?, ?, ?, ?)",
                       (message.node, message.seq_next, message.seq_last, message.received_at))
        else:
            # The last will is the broker speaking, not the node: last_seen stays as it was.
            db.execute(
                """INSERT INTO nodes (node, site, online, changed_at) VALUES (?, ?, 0, ?)
                   ON CONFLICT (node) DO UPDATE SET
                       site = excluded.site, online = 0,
                       changed_at = coalesce(excluded.changed_at, changed_at)""",
                (message.node, message.site, changed_at),
            )
        if changed:
            result.availability_changes.append(message)

    # ---- queries -----------------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._db.execute(sql, params).fetchall())

    def nodes(self) -> list[NodeInfo]:
        rows = self._rows(
            "SELECT node, site, online, role, fw, board, seq_next, uptime_s, last_seen,"
            " changed_at FROM nodes ORDER BY node"
        )
        return [
            NodeInfo(r[0], r[1], None if r[2] is None else bool(r[2]), *r[3:]) for r in rows
        ]

    def readings(
        self,
        node: str | None = None,
        quantity: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[Reading]:
        """Readings oldest first (by node timestamp), optionally from `since` (inclusive) on."""
        conditions = {"node = ?": node, "quantity = ?": quantity, "ts >= ?": since}
        where = [condition for condition, value in conditions.items() if value is not None]
        params: list[Any] = [value for value in conditions.values() if value is not None]
        sql = "SELECT node, seq, ts, quantity, value, received_at FROM readings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts, node, seq, quantity"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [Reading(*r) for r in self._rows(sql, params)]

    def latest_readings(self) -> list[Reading]:
        """The newest reading (highest seq) of every quantity of every node."""
        latest = []
        for (node,) in self._rows("SELECT node FROM nodes ORDER BY node"):
            quantities = self._rows(
                "SELECT DISTINCT quantity FROM readings WHERE node = ? ORDER BY quantity", (node,)
            )
            # One indexed lookup per (node, quantity) instead of a GROUP BY over the table.
            for (quantity,) in quantities:
                row = self._db.execute(
                    "SELECT node, seq, ts, quantity, value, received_at FROM readings"
                    " WHERE node = ? AND quantity = ? ORDER BY seq DESC LIMIT 1",
                    (node, quantity),
                ).fetchone()
                if row is not None:
                    latest.append(Reading(*row))
        return latest

    def events(self, node: str | None = None) -> list[Event]:
        rows = self._with_site("events", EVENT_COLUMNS, "node", node, "t.node, t.seq")
        return [Event(*r) for r in rows]

    def acks(self, cmd_id: str | None = None) -> list[Ack]:
        rows = self._with_site("acks", ACK_COLUMNS, "cmd_id", cmd_id, "t.received_at, t.rowid")
        return [Ack(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    def _with_site(self, table: str, columns: tuple[str, ...], key: str, value: str | None,
                   order: str) -> list[tuple[Any, ...]]:
        """Rows of `table` with their node's site first (the dataclasses' field order)."""
        sql = (f"SELECT n.site, {', '.join('t.' + c for c in columns)}"
               f" FROM {table} t JOIN nodes n USING (node)")
        if value is not None:
            sql += f" WHERE t.{key} = ?"
        return self._rows(sql + f" ORDER BY {order}", () if value is None else (value,))

    def dead_letters(self) -> list[DeadLetter]:
        rows = self._rows(
            "SELECT topic, payload, reason, received_at FROM dead_letters ORDER BY rowid"
        )
        return [DeadLetter(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        return {
            table: int(self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in TABLES
        }


# Rows per multi-row INSERT, largest first; a few fixed sizes keep the statement cache warm.
INSERT_CHUNKS = (256, 32, 4, 1)


def _insert_many(db: sqlite3.Connection, insert: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """`insert` ("INSERT ... VALUES ") for every row, a few hundred rows per statement.

    executemany() steps once per row and the sqlite3 module gives up and takes back the GIL
    around every step, which, with paho's thread busy, costs a thread switch per row."""
    if not rows:
        return
    placeholders = "(" + ", ".join("?" * len(rows[0])) + ")"
    start = 0
    for size in INSERT_CHUNKS:
        if len(rows) - start < size:
            continue
        sql = insert + ", ".join([placeholders] * size)
        while len(rows) - start >= size:
            chunk = rows[start:start + size]
            db.execute(sql, [value for row in chunk for value in row])
            start += size


def _insert_new(db: sqlite3.Connection, table: str, columns: tuple[str, ...],
                message: Event | Ack) -> int:
    """Insert unless already stored (same unique key); 1 if inserted. Site lives in nodes."""
    placeholders = ", ".join("?" * len(columns))
    before = db.total_changes
    db.execute(f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",
               [getattr(message, column) for column in columns])
    return db.total_changes - before

