"""The fleet registry: per node, is it there, what is it running, and what is wrong with it.

Availability comes from the node's retained birth and its last will (`nodes.online`), refined
by silence: a node whose status says online (or was never seen) but that has sent nothing for
`stale_after_s` on the gateway clock is *stale* — it died without its last will reaching the
broker (power cut behind a Wi-Fi router that keeps the TCP session, a hung stack). A node is
*away* when it is offline (last will) or stale; `StaleWatcher` logs once when a node goes away
and once when it returns.

Open faults come from the node's `fault` events (sensornode.component, sensornode.app): a
component reports `warning` or `failed` once when it breaks and `ok` once when it recovers, so a
fault is open when the latest fault event of its (node, name) is neither a recovery nor a
one-off incident (`dropped`, `torn` outbox records, a `refused` command: reports of something
that happened, with no recovery to wait for). Faults from before the node's current boot are
not open either: components start afresh at boot and report again if still broken.

The config version a node applied is what its latest birth said (`nodes.config_version`);
None until it has applied one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edge_gateway.periodic import Periodic
from edge_gateway.store import Store

log = logging.getLogger(__name__)

ONLINE, OFFLINE, STALE, UNKNOWN = "online", "offline", "stale", "unknown"
RECOVERED_STATES = frozenset({"ok"})
INCIDENT_STATES = frozenset({"dropped", "torn", "refused"})
STALE_AFTER_S = 300.0


@dataclass(frozen=True)
class Fault:
    node: str
    name: str  # the component (sht4x, soil, ...)
    state: str  # warning, failed, or what newer firmware sends
    detail: str
    ts: float  # node clock
    seq: int


@dataclass(frozen=True)
class NodeState:
    node: str
    site: str
    availability: str  # ONLINE, OFFLINE, STALE, or UNKNOWN (no status and nothing heard)
    online: bool | None  # what the node's status says; None: no status seen yet
    last_seen: float | None  # gateway clock: the last message from the node itself
    changed_at: float | None  # gateway clock: when `online` last changed
    role: str | None
    fw: str | None
    board: str | None
    config_version: str | None  # the version the node says it applied
    open_faults: tuple[Fault, ...]
    stale_after_s: float

    @property
    def stale(self) -> bool:
        return self.availability == STALE

    @property
    def away(self) -> bool:
        return self.availability in (OFFLINE, STALE)


def availability(online: bool | None, last_seen: float | None, now: float,
                 stale_after_s: float) -> str:
    if online is False:
        return OFFLINE
    if last_seen is None:
        return UNKNOWN if online is None else STALE
    if now - last_seen > stale_after_s:
        return STALE
    return ONLINE


def open_faults(store: Store, node: str | None = None) -> list[Fault]:
    """The faults still open, by node and name (see the module docstring)."""
    incidents = sorted(RECOVERED_STATES | INCIDENT_STATES)
    sql = f"""
        SELECT e.node, e.name, e.state, e.detail, e.ts, e.seq FROM events e
        JOIN (SELECT node, name, max(seq) AS seq FROM events WHERE kind = 'fault'
              {'AND node = ?' if node is not None else ''}
              GROUP BY node, name) latest USING (node, name, seq)
        LEFT JOIN nodes n ON n.node = e.node
        WHERE e.seq >= coalesce(n.seq_next, 0)
          AND e.state NOT IN ({', '.join('?' * len(incidents))})
        ORDER BY e.node, e.name"""
    params = ([] if node is None else [node]) + incidents
    return [Fault(*row) for row in store.query(sql, params)]


def fleet(store: Store, now: float, stale_after_s: float = STALE_AFTER_S,
          per_node: Mapping[str, float] | None = None) -> list[NodeState]:
    """Every node the store knows, by name; `per_node` overrides `stale_after_s` by node."""
    per_node = per_node or {}
    faults: dict[str, list[Fault]] = {}
    for fault in open_faults(store):
        faults.setdefault(fault.node, []).append(fault)
    states = []
    for node, site, online, last_seen, changed_at, role, fw, board, applied in store.query(
            "SELECT node, site, online, last_seen, changed_at, role, fw, board,"
            " config_version FROM nodes ORDER BY node"):
        status = None if online is None else bool(online)
        limit = per_node.get(node, stale_after_s)
        states.append(NodeState(
            node, site, availability(status, last_seen, now, limit), status, last_seen,
            changed_at, role, fw, board, None if applied is None else str(applied),
            tuple(faults.get(node, ())), limit))
    return states


class StaleWatcher:
    """Checks the fleet every `interval_s`; logs once when a node goes away (offline or stale)
    and once when it comes back, and keeps the current stale and away sets.

    `on_change(state)` is called after each such change (from the watcher's thread, or from
    whoever calls `check`). Give it its own Store when another thread writes through one."""

    def __init__(self, store: Store, stale_after_s: float = STALE_AFTER_S,
                 per_node: Mapping[str, float] | None = None,
                 clock: Callable[[], float] = time.time, interval_s: float | None = None,
                 on_change: Callable[[NodeState], None] | None = None) -> None:
        self.store = store
        self.stale_after_s = stale_after_s
        self.per_node = dict(per_node or {})
        self.clock = clock
        shortest = min([stale_after_s, *self.per_node.values()])
        self.interval_s = interval_s if interval_s is not None else min(30.0, shortest / 4)
        self.on_change = on_change
        self._lock = threading.Lock()
        self._away: dict[str, NodeState] = {}
        self._stale: frozenset[str] = frozenset()
        self._periodic = Periodic("stale-watch", self.check, self.interval_s)
        self.start, self.stop = self._periodic.start, self._periodic.stop

    @property
    def stale(self) -> frozenset[str]:
        with self._lock:
            return self._stale

    @property
    def away(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._away)

    def check(self) -> list[NodeState]:
        """Look at the fleet now; returns the nodes that went away or came back."""
        now = self.clock()
        states = fleet(self.store, now, self.stale_after_s, self.per_node)
        changed = []
        with self._lock:
            for state in states:
                was_away = self._away.get(state.node)
                if state.away and was_away is None:
                    self._away[state.node] = state
                    changed.append(state)
                    _log_away(state, now)
                elif not state.away and was_away is not None:
                    del self._away[state.node]
                    changed.append(state)
                    log.info("node %s is back (%s) after %s away", state.node,
                             state.availability, _since(was_away, now))
                elif state.away:
                    self._away[state.node] = state  # offline after stale: still away, quiet
            self._stale = frozenset(s.node for s in states if s.stale)
        if self.on_change is not None:
            for state in changed:
                try:
                    self.on_change(state)
                except Exception:  # a broken listener must not stop the watching
                    log.exception("stale watcher listener failed for node %s", state.node)
        return changed


def _log_away(state: NodeState, now: float) -> None:
    if state.availability == OFFLINE:
        log.warning("node %s went offline (its last will)", state.node)
    elif state.last_seen is None:
        log.warning("node %s went away: its status says online but nothing was ever heard "
                    "from it", state.node)
    else:
        log.warning("node %s went away: nothing heard for %s and no last will (stale after "
                    "%gs)", state.node, short_duration(now - state.last_seen),
                    state.stale_after_s)


def _since(state: NodeState, now: float) -> str:
    began = state.changed_at if state.availability == OFFLINE else state.last_seen
    return "?" if began is None else short_duration(now - began)


def short_duration(seconds: float) -> str:
    """E.g. 45s, 12m, 3h, 2d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
