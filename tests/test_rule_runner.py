"""The daemon's rule loop over a real store: availability, samples and water from the store,
decisions handed over, alerts only logged."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge_gateway.rule_runner import RuleRunner
from edge_gateway.rules import Decision, Irrigate, parse_rules
from edge_gateway.store import Event, Reading, Status, Store, Telemetry

T0 = 1_795_300_000.0  # 2026-11-22
ZONE = ZoneInfo("Europe/Berlin")
RULES = {
    "water_budget_l_per_day": 10.0,
    "dry_bed": {
        "when": {"node": "bed-1", "quantity": "soil_moisture", "below": 30, "for_s": 60},
        "action": {"type": "irrigate", "node": "bed-1", "seconds": 120},
        "cooldown_s": 3600,
    },
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def online(node: str, at: float) -> Status:
    return Status("home", node, True, at, role="garden", fw="0.3.0", board="emulated",
                  uptime_s=1, seq_next=0)


def moisture(node: str, seq: int, ts: float, value: float) -> Telemetry:
    return Telemetry("home", node, (Reading(node, seq, ts, "soil_moisture", value, ts),), ts)


def pump(node: str, seq: int, ts: float, state: str) -> Event:
    return Event("home", node, seq, ts, "actuator", "pump", state, "", ts)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "gw.db")


def runner(store: Store, clock: Clock, asked: list[Decision]) -> RuleRunner:
    rules = parse_rules(RULES, known_nodes=["bed-1"], flow_l_per_min={"bed-1": 2.0})
    return RuleRunner(store, rules, ZONE, asked.append, clock=clock,
                      stale_after_s={"bed-1": 300})


def test_a_dry_bed_held_long_enough_is_irrigated_once(store: Store) -> None:
    clock, asked = Clock(), []
    rule_loop = runner(store, clock, asked)
    store.write([online("bed-1", T0)])
    for i in range(5):  # dry for 80 s, a sample every 20 s
        store.write([moisture("bed-1", i, T0 + 20 * i, 25.0)])
        clock.now = T0 + 20 * i + 1
        rule_loop.step()
    assert [d.action for d in asked] == [Irrigate("bed-1", 120)]
    assert asked[0].requested_by == "rule:dry_bed"
    clock.now += 30  # still dry, but within the cooldown
    store.write([moisture("bed-1", 5, clock.now - 1, 24.0)])
    assert rule_loop.step() == []


def test_an_offline_node_is_not_asked(store: Store) -> None:
    clock, asked = Clock(), []
    rule_loop = runner(store, clock, asked)
    store.write([online("bed-1", T0), Status("home", "bed-1", False, T0 + 1)])
    for i in range(5):
        store.write([moisture("bed-1", i, T0 + 20 * i, 25.0)])
        clock.now = T0 + 20 * i + 1
        rule_loop.step()
    assert asked == []


def test_water_used_today_comes_from_the_pump_runs(store: Store) -> None:
    clock, asked = Clock(), []
    rule_loop = runner(store, clock, asked)
    store.write([online("bed-1", T0), pump("bed-1", 1, T0 - 300, "on"),
                 pump("bed-1", 2, T0 - 180, "off"), pump("bed-1", 3, T0 - 60, "on")])
    state = rule_loop.site_state(T0)
    # 120 s done + 60 s running, at 2 l/min.
    assert state.nodes["bed-1"].water_today_l == pytest.approx(6.0)
