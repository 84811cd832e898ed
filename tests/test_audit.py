"""The command audit log: rows the gateway writes as a command goes out and comes back, and the
refusals nodes report on their own, imported once each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_gateway import audit
from edge_gateway.store import Event, Store

T0 = 1795300000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "gw.db") as opened:
        audit.ensure_table(opened)
        yield opened


def refusal_event(seq: int, detail: str, node: str = "bed-1", name: str = "cmd",
                  state: str = "refused") -> Event:
    return Event("home", node, seq, T0 + seq, "fault", name, state, detail, T0 + seq + 0.5)


def ack(ok: bool, result: str, detail: str = "") -> dict[str, Any]:
    return {"id": "c1", "ok": ok, "result": result, "detail": detail, "ts": T0}


def test_a_command_row_goes_from_not_sent_to_its_result(store: Store) -> None:
    row = audit.record(store, "alice", "bed-1", "irrigate", {"seconds": 30}, cmd_id="c1",
                       counter=7, requested_at=T0)
    (entry,) = audit.entries(store)
    assert (entry.id, entry.requested_at, entry.requested_by, entry.node, entry.action) == (
        row, T0, "alice", "bed-1", "irrigate")
    assert (entry.params, entry.result, entry.done_at) == ({"seconds": 30}, "not sent", None)
    assert (entry.cmd_id, entry.counter, entry.event_seq) == ("c1", 7, None)

    audit.update(store, row, audit.SENT)
    assert audit.entries(store)[0].result == "sent" and audit.entries(store)[0].done_at is None
    audit.update(store, row, audit.ACKED_OK, "pump on for 30 s", done_at=T0 + 1)
    (entry,) = audit.entries(store)
    assert (entry.result, entry.detail, entry.done_at) == ("acked ok", "pump on for 30 s", T0 + 1)


def test_updating_a_row_that_does_not_exist_is_an_error(store: Store) -> None:
    with pytest.raises(KeyError, match="audit row 99"):
        audit.update(store, 99, audit.TIMEOUT)


@pytest.mark.parametrize("who", ["", "rule:", "unknown", "al\nice"])
def test_every_row_says_who_asked(store: Store, who: str) -> None:
    with pytest.raises(ValueError, match="requested_by"):
        audit.record(store, who, "bed-1", "irrigate", {"seconds": 1}, cmd_id="c", counter=1)
    assert audit.entries(store) == []


def test_rules_are_named_as_requesters(store: Store) -> None:
    audit.record(store, "rule:dry-bed", "bed-1", "irrigate", {"seconds": 1}, cmd_id="c",
                 counter=1)
    assert audit.entries(store)[0].requested_by == "rule:dry-bed"


@pytest.mark.parametrize(("given", "result"), [
    (ack(True, "started", "pump on for 30 s"), "acked ok"),
    (ack(False, "refused", "forged: the signature does not match this node's key"),
     "refused forged"),
    (ack(False, "refused", "replayed: counter 3, last accepted 7"), "refused replayed"),
    (ack(False, "refused", "pump is already running"), "refused pump is already running"),
    (ack(False, "refused", ""), "refused by the node"),
    (ack(False, "error", "error: cmd_counter.json is damaged; remove it"),
     "error cmd_counter.json is damaged; remove it"),
])
def test_result_of_an_ack_names_the_reason(given: dict[str, Any], result: str) -> None:
    assert audit.result_of_ack(given) == result


def test_node_refusals_land_in_the_audit_once(store: Store) -> None:
    store.write([
        refusal_event(1, "cmd ab12 irrigate: forged: the signature does not match this "
                         "node's key"),
        refusal_event(2, "cmd.action: must be one of irrigate, diffuse, got 'flood'"),
        refusal_event(3, "cmd cd34 diffuse: wrong node: it is for drone-2, this is bed-1"),
        refusal_event(4, "cmd ef56 irrigate: replayed: counter 3, last accepted 7",
                      node="bed-2"),
        refusal_event(7, "cmd 9a irrigate: error: cmd_counter.json is damaged; remove it"),
        # not refusals of commands
        refusal_event(5, "3 records, seq 1..3", name="outbox", state="dropped"),
        Event("home", "bed-1", 6, T0, "actuator", "pump", "on", "cmd ab12", T0),
    ])
    assert audit.import_node_refusals(store) == 5
    assert audit.import_node_refusals(store) == 0
    rows = [(e.node, e.event_seq, e.requested_by, e.action, e.cmd_id, e.result)
            for e in audit.entries(store)]
    assert rows == [
        ("bed-1", 1, "unknown", "irrigate", "ab12", "refused forged"),
        ("bed-1", 2, "unknown", "?", None, "refused malformed"),
        ("bed-1", 3, "unknown", "diffuse", "cd34", "refused wrong node"),
        ("bed-2", 4, "unknown", "irrigate", "ef56", "refused replayed"),
        ("bed-1", 7, "unknown", "irrigate", "9a", "error cmd_counter.json is damaged; remove it"),
    ]
    first = audit.entries(store, node="bed-1")[0]
    assert (first.requested_at, first.done_at) == (T0 + 1, T0 + 1.5)
    assert first.detail.endswith("does not match this node's key")


def test_entries_filter_by_node_and_time_and_keep_the_newest(store: Store) -> None:
    for i, node in enumerate(["bed-1", "bed-2", "bed-1", "bed-1"]):
        audit.record(store, "alice", node, "irrigate", {"seconds": i + 1}, cmd_id=f"c{i}",
                     counter=i + 1, requested_at=T0 + i)
    assert [e.cmd_id for e in audit.entries(store)] == ["c0", "c1", "c2", "c3"]
    assert [e.cmd_id for e in audit.entries(store, node="bed-1")] == ["c0", "c2", "c3"]
    assert [e.cmd_id for e in audit.entries(store, since=T0 + 2)] == ["c2", "c3"]
    assert [e.cmd_id for e in audit.entries(store, limit=2)] == ["c2", "c3"]


def test_the_table_is_made_by_the_first_listing_of_a_fresh_database(tmp_path: Path) -> None:
    with Store(tmp_path / "fresh.db") as store:
        assert audit.entries(store) == []
