"""The daemon's rule loop: builds the site state from the store, evaluates the rules (the pure
`edge_gateway.rules.evaluate`) and hands each decision to the command path.

State per node, every `interval_s`:
- availability from the fleet registry (online, stale, offline; a node never heard is offline);
- the samples of every quantity a rule watches that the gateway received since the previous
  step (plus the latest one before, so a threshold always has its newest sample);
- the water it used today (site-local date): the pump's runs from its `actuator` events
  (on -> off, or on -> now while it runs) times the node's flow rate.
Decisions are handed to `ask` (which signs and sends them in the background, audited as
`rule:<name>`); alerts are logged. The rules' memory lives in this object only: after a
restart cooldowns and daily runs start afresh (noted in docs/rules.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

from edge_gateway import registry
from edge_gateway.periodic import Periodic
from edge_gateway.rules import (
    Alert,
    Availability,
    Decision,
    NodeState,
    RuleMemory,
    RuleSet,
    Sample,
    SiteState,
    Threshold,
    evaluate,
)
from edge_gateway.store import Store

log = logging.getLogger(__name__)

INTERVAL_S = 10.0
_AVAILABILITY = {registry.ONLINE: Availability.ONLINE, registry.STALE: Availability.STALE}


class RuleRunner:
    def __init__(self, store: Store, rules: RuleSet, zone: ZoneInfo,
                 ask: Callable[[Decision], None], interval_s: float = INTERVAL_S,
                 stale_after_s: Mapping[str, float] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.rules = rules
        self.zone = zone
        self.ask = ask
        self.interval_s = interval_s
        self.stale_after_s = dict(stale_after_s or {})
        self.clock = clock
        self.memory = RuleMemory()
        self._watched = _watched(rules)
        self._since: float | None = None  # gateway clock of the previous step
        self._periodic = Periodic("rules", self.step, interval_s)
        self.start, self.stop = self._periodic.start, self._periodic.stop

    def step(self) -> list[Decision]:
        """One evaluation now; returns its decisions (already handed to `ask`)."""
        now = self.clock()
        state = self.site_state(now)
        decisions, self.memory = evaluate(self.rules, state, self.memory,
                                          datetime.fromtimestamp(now, self.zone))
        self._since = now
        for decision in decisions:
            if isinstance(decision.action, Alert):
                log.warning("rule %s: %s (%s)", decision.rule, decision.action.message,
                            decision.reason, extra={"rule": decision.rule,
                                                    "severity": decision.action.severity})
                continue
            log.info("rule %s asks %s: %s", decision.rule, decision.action, decision.reason)
            try:
                self.ask(decision)
            except Exception:
                log.exception("rule %s: could not hand over %s", decision.rule,
                              decision.action)
        return decisions

    def site_state(self, now: float) -> SiteState:
        fleet = {n.node: n for n in registry.fleet(self.store, now,
                                                   per_node=self.stale_after_s)}
        nodes: dict[str, NodeState] = {}
        for node in sorted(set(self._watched) | set(self.rules.flow_l_per_min)):
            known = fleet.get(node)
            availability = (Availability.OFFLINE if known is None
                            else _AVAILABILITY.get(known.availability, Availability.OFFLINE))
            nodes[node] = NodeState(
                availability,
                MappingProxyType(self._samples(node, self._watched.get(node, ()))),
                self._water_today(node, now),
                datetime.fromtimestamp(now, UTC),
            )
        return SiteState(MappingProxyType(nodes))

    def _samples(self, node: str, quantities: tuple[str, ...]) -> dict[str, tuple[Sample, ...]]:
        out: dict[str, tuple[Sample, ...]] = {}
        for quantity in quantities:
            rows = self.store.query(
                "SELECT ts, value FROM readings WHERE node = ? AND quantity = ?"
                " AND received_at > ? ORDER BY ts",
                (node, quantity, -1.0 if self._since is None else self._since))
            latest = self.store.query(
                "SELECT ts, value FROM readings WHERE node = ? AND quantity = ?"
                " ORDER BY ts DESC LIMIT 1", (node, quantity))
            merged = sorted({*rows, *latest})
            if merged:
                out[quantity] = tuple(Sample(float(value), datetime.fromtimestamp(ts, UTC))
                                      for ts, value in merged)
        return out

    def _water_today(self, node: str, now: float) -> float:
        flow = self.rules.flow_l_per_min.get(node)
        if not flow:
            return 0.0
        local_now = datetime.fromtimestamp(now, self.zone)
        midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
        day_start = midnight.timestamp()
        # The run going at midnight counts from midnight; its "on" may be earlier.
        rows = self.store.query(
            "SELECT ts, state FROM events WHERE node = ? AND kind = 'actuator'"
            " AND name = 'pump' AND ts >= ? ORDER BY ts, seq",
            (node, day_start - timedelta(days=1).total_seconds()))
        seconds = 0.0
        on_at: float | None = None
        for ts, state in rows:
            if state == "on" and on_at is None:
                on_at = float(ts)
            elif state == "off" and on_at is not None:
                seconds += max(0.0, float(ts) - max(on_at, day_start))
                on_at = None
        if on_at is not None:
            seconds += max(0.0, now - max(on_at, day_start))
        return seconds * flow / 60.0


def _watched(rules: RuleSet) -> dict[str, tuple[str, ...]]:
    watched: dict[str, set[str]] = {}
    for rule in rules.rules:
        for condition in rule.conditions:
            if isinstance(condition, Threshold):
                watched.setdefault(condition.node, set()).add(condition.quantity)
    return {node: tuple(sorted(q)) for node, q in watched.items()}
