"""The fleet registry and the stale watcher, on a real SQLite store with an injected clock.
Fault events come from the firmware's own Component, so the registry reads what nodes send."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sensornode.component import Component

from edge_gateway.registry import (
    OFFLINE,
    ONLINE,
    STALE,
    UNKNOWN,
    NodeState,
    StaleWatcher,
    fleet,
    open_faults,
)
from edge_gateway.store import Event, Reading, Status, Store, Telemetry
from testkit.procs import wait_for

T0 = 1_790_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def birth(node: str, at: float, seq_next: int = 0) -> Status:
    return Status("home", node, True, at, role="garden", fw="0.3.1", board="esp32-devkit",
                  uptime_s=5, seq_next=seq_next)


def last_will(node: str, at: float) -> Status:
    return Status("home", node, False, at)


def reading(node: str, seq: int, at: float) -> Telemetry:
    return Telemetry("home", node, (Reading(node, seq, at, "soil_moisture", 30.0, at),), at)


def event(node: str, seq: int, kind: str, name: str, state: str, detail: str = "") -> Event:
    return Event("home", node, seq, T0 + seq, kind, name, state, detail, T0 + seq)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "gw.db") as opened:
        yield opened


def by_node(states: list[NodeState]) -> dict[str, NodeState]:
    return {state.node: state for state in states}


def test_availability_from_birth_last_will_and_silence(store: Store) -> None:
    store.write([birth("fresh", T0), birth("quiet", T0 - 400), birth("gone", T0 - 50),
                 last_will("gone", T0 - 10), reading("nostatus", 1, T0 - 10),
                 birth("slow", T0 - 400)])
    nodes = by_node(fleet(store, now=T0, stale_after_s=300, per_node={"slow": 600}))
    assert {name: state.availability for name, state in nodes.items()} == {
        "fresh": ONLINE, "quiet": STALE, "gone": OFFLINE, "nostatus": ONLINE, "slow": ONLINE}
    assert nodes["quiet"].stale and nodes["quiet"].away
    assert nodes["gone"].away and not nodes["gone"].stale
    assert (nodes["fresh"].role, nodes["fresh"].fw, nodes["fresh"].board) == (
        "garden", "0.3.1", "esp32-devkit")
    assert nodes["fresh"].last_seen == T0
    assert nodes["gone"].last_seen == T0 - 50  # a last will is not the node speaking
    assert nodes["gone"].online is False and nodes["nostatus"].online is None
    # Silence makes a node that never sent its status stale too.
    assert by_node(fleet(store, now=T0 + 301))["nostatus"].availability == STALE


def test_a_node_with_nothing_known_is_unknown(store: Store) -> None:
    store.query("INSERT INTO nodes (node, site) VALUES ('new', 'home')")
    assert fleet(store, now=T0)[0].availability == UNKNOWN


def firmware_fault_events(node: str, first_seq: int) -> list[Event]:
    """A component failing three reads and then recovering, as the node reports it."""
    results: list[object] = [OSError(19), OSError(19), OSError(19), {"air_temp": 21.5}]

    class Driver:
        def read(self) -> dict[str, float]:
            result = results.pop(0)
            if isinstance(result, Exception):
                raise result
            assert isinstance(result, dict)
            return result

    reported: list[tuple[str, str, str]] = []
    component = Component("sht4x", Driver(), interval_s=1, fail_after=3,
                          on_fault=lambda *args: reported.append(args))
    for tick in range(4):
        asyncio.run(component.run_once(tick * 1_000_000))
    assert [state for _, state, _ in reported] == ["warning", "ok"]
    return [event(node, first_seq + i, "fault", name, state, detail)
            for i, (name, state, detail) in enumerate(reported)]


def test_faults_are_open_until_the_component_recovers(store: Store) -> None:
    breaking, recovering = firmware_fault_events("bed-1", 10)
    store.write([birth("bed-1", T0), breaking])
    faults = open_faults(store)
    assert [(f.node, f.name, f.state, f.seq) for f in faults] == [
        ("bed-1", "sht4x", "warning", 10)]
    assert "ENODEV" in faults[0].detail or "19" in faults[0].detail
    assert by_node(fleet(store, T0))["bed-1"].open_faults == tuple(faults)
    store.write([recovering])
    assert open_faults(store) == []


def test_one_off_incidents_and_other_event_kinds_are_not_open_faults(store: Store) -> None:
    store.write([birth("bed-1", T0),
                 event("bed-1", 1, "fault", "outbox", "dropped", "12 records, seq 3..14"),
                 event("bed-1", 2, "fault", "outbox", "torn", "1 torn record(s)"),
                 event("bed-1", 3, "fault", "cmd", "refused", "bad signature"),
                 event("bed-1", 4, "actuator", "pump", "on", "irrigate 30 s"),
                 event("bed-1", 5, "fault", "soil", "failed", "SensorError: open circuit"),
                 event("bed-2", 6, "fault", "soil", "warning", "stuck")])
    assert [(f.node, f.name) for f in open_faults(store)] == [("bed-1", "soil"),
                                                               ("bed-2", "soil")]
    assert [(f.node, f.name) for f in open_faults(store, node="bed-2")] == [("bed-2", "soil")]


def test_a_fault_from_before_the_current_boot_is_not_open(store: Store) -> None:
    store.write([birth("bed-1", T0, seq_next=0),
                 event("bed-1", 5, "fault", "soil", "failed", "SensorError: open circuit")])
    assert len(open_faults(store)) == 1
    # The node rebooted; its components start afresh and report again if still broken.
    store.write([birth("bed-1", T0 + 60, seq_next=64)])
    assert open_faults(store) == []
    store.write([event("bed-1", 64, "fault", "soil", "warning", "still open")])
    assert [f.seq for f in open_faults(store)] == [64]


def test_config_version_is_what_the_node_last_said_it_applied(store: Store) -> None:
    store.write([birth("bed-1", T0)])
    assert fleet(store, T0)[0].config_version is None
    store.write([replace(birth("bed-1", T0 + 1), config_version="0123456789ab")])
    assert fleet(store, T0 + 1)[0].config_version == "0123456789ab"


def test_the_watcher_logs_once_when_a_node_goes_and_once_when_it_returns(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    changes: list[tuple[str, str]] = []
    watcher = StaleWatcher(store, stale_after_s=300, clock=clock,
                           on_change=lambda s: changes.append((s.node, s.availability)))
    store.write([birth("bed-1", T0), birth("bed-2", T0)])
    caplog.set_level(logging.INFO, logger="edge_gateway.registry")
    assert watcher.check() == [] and watcher.stale == frozenset()
    clock.now = T0 + 200
    store.write([reading("bed-2", 1, clock.now)])
    clock.now = T0 + 301
    assert [s.node for s in watcher.check()] == ["bed-1"]
    assert watcher.stale == frozenset({"bed-1"}) and watcher.away == frozenset({"bed-1"})
    for _ in range(3):  # still gone: nothing more is logged
        clock.now += 60
        watcher.check()
    # The broker delivers its last will at last: offline now, still away, still quiet.
    store.write([last_will("bed-1", clock.now)])
    clock.now = T0 + 510  # and bed-2 has been silent for 310 s
    assert [s.node for s in watcher.check()] == ["bed-2"]
    assert watcher.stale == frozenset({"bed-2"}) and watcher.away == {"bed-1", "bed-2"}
    clock.now = T0 + 520
    store.write([birth("bed-1", clock.now), reading("bed-2", 2, clock.now)])
    assert sorted(s.node for s in watcher.check()) == ["bed-1", "bed-2"]
    assert watcher.stale == frozenset() and watcher.away == frozenset()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "node bed-1 went away: nothing heard for 5m and no last will (stale after 300s)",
        "node bed-2 went away: nothing heard for 5m and no last will (stale after 300s)",
        "node bed-1 is back (online) after 39s away",
        "node bed-2 is back (online) after 5m away",
    ]
    assert changes == [("bed-1", STALE), ("bed-2", STALE), ("bed-1", ONLINE),
                       ("bed-2", ONLINE)]


def test_a_node_already_offline_at_start_is_logged_once(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    store.write([birth("bed-1", T0 - 100), last_will("bed-1", T0 - 50)])
    watcher = StaleWatcher(store, clock=FakeClock())
    watcher.check()
    watcher.check()
    assert [r.getMessage() for r in caplog.records] == ["node bed-1 went offline (its last will)"]
    assert watcher.away == {"bed-1"} and watcher.stale == frozenset()


def test_a_failing_listener_does_not_stop_the_watcher(store: Store) -> None:
    def broken(state: NodeState) -> None:
        raise RuntimeError("listener bug")

    store.write([birth("bed-1", T0 - 1000)])
    watcher = StaleWatcher(store, clock=FakeClock(), on_change=broken)
    assert [s.node for s in watcher.check()] == ["bed-1"]
    assert watcher.stale == {"bed-1"}


def test_the_watcher_thread_notices_and_stops(tmp_path: Path) -> None:
    clock = FakeClock()
    with Store(tmp_path / "gw.db") as writer, Store(tmp_path / "gw.db") as own:
        writer.write([birth("bed-1", T0)])
        watcher = StaleWatcher(own, stale_after_s=30, clock=clock, interval_s=0.02)
        assert watcher.interval_s == 0.02
        watcher.start()
        try:
            with pytest.raises(RuntimeError):
                watcher.start()
            clock.now = T0 + 31
            wait_for(lambda: watcher.stale == {"bed-1"}, 10, "bed-1 to be marked stale")
            clock.now += 1
            writer.write([reading("bed-1", 1, clock.now)])
            wait_for(lambda: watcher.stale == frozenset(), 10, "bed-1 to be back")
        finally:
            assert watcher.stop(timeout=5)
    assert StaleWatcher(own, stale_after_s=40).interval_s == 10
