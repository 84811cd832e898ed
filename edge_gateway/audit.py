"""The audit log of commands: who or which rule asked a node for what, when, and what came of
it. One row per command the gateway sends, and one per refusal a node reports on its own
(a forged, replayed or misdirected command that someone else put on the broker).

A command's row is written before it goes out (`record`, result "not sent") and updated as it
progresses (`update`): "sent", then "acked ok", "refused <reason>", "error <reason>" or
"timeout". A row still saying "sent" means the sender stopped before it knew more.

Nodes report each refused command as an event (kind fault, name cmd, state refused, detail
"cmd <id> <action>: <reason>: <why>", docs/protocol.md); the ingest path stores events, and
`import_node_refusals` copies the ones not yet here into the audit (idempotent: a row per
(node, event seq)). `entries` does that first, so the listing is always complete.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from edge_gateway.store import Store

NOT_SENT, SENT, ACKED_OK, TIMEOUT = "not sent", "sent", "acked ok", "timeout"
UNKNOWN_SENDER = "unknown"  # a refused command the gateway did not send
RULE_PREFIX = "rule:"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        requested_at REAL NOT NULL,   -- gateway clock (node clock for node-reported refusals)
        requested_by TEXT NOT NULL,   -- a user name, rule:<name>, or unknown
        node TEXT NOT NULL,
        action TEXT NOT NULL,
        params TEXT NOT NULL,         -- JSON object
        result TEXT NOT NULL,         -- see the module docstring
        detail TEXT NOT NULL,
        done_at REAL,                 -- when the result became final
        cmd_id TEXT,
        counter INTEGER,
        event_seq INTEGER,            -- the node's refusal event this row was made from
        UNIQUE (node, event_seq)
    )""",
    "CREATE INDEX IF NOT EXISTS audit_by_time ON audit (requested_at)",
)
_COLUMNS = ("id, requested_at, requested_by, node, action, params, result, detail, done_at,"
            " cmd_id, counter, event_seq")
# "cmd <id> <action>: <reason>[: <why>]", as the node's firmware writes it (app.py).
# The node says "error: ..." when it could not check the command (e.g. its counter file).
_REFUSAL_DETAIL = re.compile(r"^cmd (\S+) (\S+): (error: )?([^:]+)")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    requested_at: float
    requested_by: str
    node: str
    action: str
    params: dict[str, Any]
    result: str
    detail: str
    done_at: float | None
    cmd_id: str | None
    counter: int | None
    event_seq: int | None  # set on rows made from a node's refusal event


def ensure_table(store: Store) -> None:
    with store.transaction() as db:
        for statement in _SCHEMA:
            db.execute(statement)


def check_requester(requested_by: str) -> str:
    """A user name or rule:<name>; ValueError naming the fix otherwise."""
    name = requested_by.removeprefix(RULE_PREFIX)
    if not name.strip() or requested_by == UNKNOWN_SENDER or "\n" in requested_by:
        raise ValueError(
            f"requested_by: {requested_by!r} does not say who asked; give a user name or "
            f"{RULE_PREFIX}<rule name>"
        )
    return requested_by


def record(store: Store, requested_by: str, node: str, action: str, params: dict[str, Any],
           *, cmd_id: str, counter: int, detail: str = "",
           requested_at: float | None = None) -> int:
    """A new row for a command about to be sent (result "not sent"); returns its id."""
    check_requester(requested_by)
    with store.transaction() as db:
        cursor = db.execute(
            "INSERT INTO audit (requested_at, requested_by, node, action, params, result,"
            " detail, cmd_id, counter) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time() if requested_at is None else requested_at, requested_by, node,
             action, json.dumps(params, sort_keys=True), NOT_SENT, detail, cmd_id, counter),
        )
        row_id = cursor.lastrowid
    assert row_id is not None
    return row_id


def update(store: Store, row_id: int, result: str, detail: str = "",
           done_at: float | None = None) -> None:
    """Set a command's result; `done_at` defaults to now unless the result is SENT."""
    if done_at is None and result != SENT:
        done_at = time.time()
    with store.transaction() as db:
        changed = db.execute(
            "UPDATE audit SET result = ?, detail = ?, done_at = ? WHERE id = ?",
            (result, detail, done_at, row_id),
        ).rowcount
    if changed != 1:
        raise KeyError(f"audit row {row_id} does not exist")


def result_of_ack(ack: dict[str, Any]) -> str:
    """The audit result for a node's ack (protocol.decode_ack form)."""
    if ack["ok"]:
        return ACKED_OK
    detail = ack["detail"].removeprefix(f"{ack['result']}:")
    reason = detail.partition(":")[0].strip() or "by the node"
    return f"{ack['result']} {reason}"


def import_node_refusals(store: Store) -> int:
    """Copy refusal events the nodes reported (and the ingest path stored) into the audit;
    returns how many were new."""
    with store.transaction() as db:
        rows = db.execute(
            "SELECT e.node, e.seq, e.ts, e.detail, e.received_at FROM events e"
            " WHERE e.kind = 'fault' AND e.name = 'cmd' AND e.state = 'refused'"
            " AND NOT EXISTS (SELECT 1 FROM audit a"
            "                 WHERE a.node = e.node AND a.event_seq = e.seq)"
        ).fetchall()
        for node, seq, ts, detail, received_at in rows:
            match = _REFUSAL_DETAIL.match(detail)
            if match is not None:
                cmd_id, action = match.group(1), match.group(2)
                result = f"{'error' if match.group(3) else 'refused'} {match.group(4).strip()}"
            else:  # a command too malformed to read (see docs/protocol.md, "ack")
                cmd_id, action, result = None, "?", "refused malformed"
            db.execute(
                "INSERT INTO audit (requested_at, requested_by, node, action, params, result,"
                " detail, done_at, cmd_id, event_seq) VALUES (?, ?, ?, ?, '{}', ?, ?, ?, ?, ?)",
                (ts, UNKNOWN_SENDER, node, action, result, detail, received_at, cmd_id, seq),
            )
    return len(rows)


def entries(store: Store, node: str | None = None, since: float | None = None,
            limit: int | None = None) -> list[AuditEntry]:
    """The audit, oldest first (newest `limit` rows when given), node refusals included."""
    ensure_table(store)
    import_node_refusals(store)
    conditions = {"node = ?": node, "requested_at >= ?": since}
    where = [condition for condition, value in conditions.items() if value is not None]
    params: list[Any] = [value for value in conditions.values() if value is not None]
    sql = f"SELECT {_COLUMNS} FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY requested_at DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    rows = store.query(sql, params)
    return [_entry(row) for row in reversed(rows)]


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    params = json.loads(row[5])
    return AuditEntry(row[0], row[1], row[2], row[3], row[4],
                      params if isinstance(params, dict) else {}, *row[6:])
