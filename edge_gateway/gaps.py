"""Gaps in a node's seq: readings or events the gateway never stored (there should be none).

Telemetry entries and events share one seq per node (docs/protocol.md, "Sequence numbers"). A
gap is a run of seqs missing below the highest one stored, except:
- the reboot skip: a node's birth announces where the boot's seqs start (`seq_next`) and,
  when its outbox could tell, the last seq its earlier boots took (`seq_last`; usually
  seq_next - 1). Then only seq_last+1 .. seq_next-1 are unused, and a seq absent below them is
  lost: e.g. the record whose write a power cut interrupted, which the node counts as taken.
  Without `seq_last` the node continued at its next reserved block of seqs, and everything
  between the last seq stored before the boot start and the boot start counts as unused;
- anything below the lowest seq stored for the node (from before this database knew it).
A run is reported only once it has been missing for `settle_s` seconds or `settle_seqs` newer
seqs, because redelivery can reorder messages; then it is logged once (WARNING), kept in the
`gaps` table, and closed (`filled_at`) if the missing seqs arrive after all. Seqs the node says
it dropped (event fault/outbox/dropped, detail "N records, seq A..B") are recorded as
`dropped` rather than `lost`, also when that event comes after the gap was reported.

State is per node in memory: the stored seqs as ranges, the boot starts, the dropped ranges,
the reported gaps. `load()` rebuilds it from the database at start (one grouped query over the
seqs), then each message costs a few bisections; the table is written only when a gap is found,
reclassified or filled.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise

from edge_gateway.history import pruned_seqs
from edge_gateway.seqranges import SeqRanges
from edge_gateway.store import Event, Message, Status, Store, Telemetry

log = logging.getLogger(__name__)

LOST, DROPPED = "lost", "dropped"
SETTLE_S = 30.0
SETTLE_SEQS = 10_000  # far beyond what a node has in flight at once
DROP_DETAIL = re.compile(r"\bseq (\d+)(?:\s*\.\.\s*(\d+))?")
GAP_COLUMNS = "node, first_seq, last_seq, cause, detected_at, missing, filled_at"
# Runs of consecutive stored seqs per node ("gaps and islands"): seq - row number is constant
# along a run.
_ISLANDS_SQL = """
    SELECT node, min(seq), max(seq) FROM (
        SELECT node, seq, seq - row_number() OVER (PARTITION BY node ORDER BY seq) AS island
        FROM (SELECT node, seq FROM readings UNION SELECT node, seq FROM events))
    GROUP BY node, island ORDER BY node, min(seq)"""


@dataclass(frozen=True)
class Gap:
    node: str
    first_seq: int
    last_seq: int
    cause: str  # LOST or DROPPED
    detected_at: float  # gateway clock
    missing: int  # how many of first_seq..last_seq are still not stored
    filled_at: float | None = None  # gateway clock: when the last of them arrived late

    @property
    def size(self) -> int:
        return self.last_seq - self.first_seq + 1

    @property
    def seqs(self) -> str:
        if self.first_seq == self.last_seq:
            return str(self.first_seq)
        return f"{self.first_seq}..{self.last_seq}"


def parse_drop(event: Event) -> tuple[int, int] | None:
    """The seq range of a node's "dropped" report (fault/outbox/dropped), else None."""
    if (event.kind, event.name, event.state) != ("fault", "outbox", "dropped"):
        return None
    match = DROP_DETAIL.search(event.detail)
    if match is None:
        log.warning("node %s reported dropped records without a seq range: %r", event.node,
                    event.detail)
        return None
    first = int(match.group(1))
    last = int(match.group(2) or first)
    return (first, last) if first <= last else None


def list_gaps(store: Store, node: str | None = None, open_only: bool = False) -> list[Gap]:
    where = [c for c, on in (("node = ?", node is not None), ("filled_at IS NULL", open_only))
             if on]
    sql = f"SELECT {GAP_COLUMNS} FROM gaps"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = store.query(sql + " ORDER BY node, first_seq", () if node is None else (node,))
    return [Gap(*row) for row in rows]


@dataclass
class _Candidate:
    first: int
    last: int
    noticed_at: float
    high: int  # the highest stored seq when it was noticed


@dataclass
class _NodeSeqs:
    stored: SeqRanges = field(default_factory=SeqRanges)
    boots: list[int] = field(default_factory=list)  # boot starts (seq_next), sorted
    boot_last: dict[int, int] = field(default_factory=dict)  # boot start -> its seq_last
    dropped: SeqRanges = field(default_factory=SeqRanges)
    reported: SeqRanges = field(default_factory=SeqRanges)  # every gap's range, open or not
    open: dict[int, Gap] = field(default_factory=dict)  # open gaps by first_seq
    open_firsts: list[int] = field(default_factory=list)  # sorted keys of `open`
    candidates: list[_Candidate] = field(default_factory=list)

    def add_boot(self, seq_next: int, seq_last: int | None) -> None:
        i = bisect_left(self.boots, seq_next)
        if i == len(self.boots) or self.boots[i] != seq_next:
            self.boots.insert(i, seq_next)
        if seq_last is not None:
            # Two boots may start at the same seq (the first one took none): the larger
            # seq_last leaves fewer seqs unexplained, so more of them reported.
            self.boot_last[seq_next] = max(seq_last, self.boot_last.get(seq_next, seq_last))

    def add_open(self, gap: Gap) -> None:
        self.open[gap.first_seq] = gap
        insort(self.open_firsts, gap.first_seq)

    def remove_open(self, gap: Gap) -> None:
        del self.open[gap.first_seq]
        self.open_firsts.remove(gap.first_seq)

    def open_gap_at(self, seq: int) -> Gap | None:
        i = bisect_right(self.open_firsts, seq) - 1
        if i < 0:
            return None
        gap = self.open[self.open_firsts[i]]
        return gap if seq <= gap.last_seq else None

    def split(self, lo: int, hi: int) -> list[tuple[int, int, str]]:
        """lo..hi in pieces the node said it dropped and pieces it did not."""
        pieces = [(a, b, DROPPED) for a, b in self.dropped.present(lo, hi)]
        pieces += [(a, b, LOST) for a, b in self.dropped.missing(lo, hi)]
        return sorted(pieces)


class GapTracker:
    """Finds, records and closes gaps. Feed it every message after it is stored (`observe`);
    `check` (or the thread `start` runs) reports the runs that have settled. Thread-safe; it
    writes through the Store it is given, so give it its own when another thread writes too."""

    def __init__(self, store: Store, settle_s: float = SETTLE_S,
                 settle_seqs: int = SETTLE_SEQS, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settle_s = settle_s
        self.settle_seqs = settle_seqs
        self.clock = clock
        self._nodes: dict[str, _NodeSeqs] = {}
        self._unsettled: set[str] = set()  # nodes with candidates
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- start-up and the settle thread ----

    def load(self) -> None:
        """Rebuild the state from the database; every hole is checked again once settled."""
        now = self.clock()
        with self._lock:
            self._nodes.clear()
            self._unsettled.clear()
            for node, lo, hi in self.store.query(_ISLANDS_SQL):
                self._node(node).stored.add_range(lo, hi)
            for node, seq_next, seq_last in self.store.query(
                    "SELECT node, seq_next, max(seq_last) FROM ("
                    " SELECT node, seq_next, seq_last FROM boots UNION"
                    " SELECT node, seq_next, NULL FROM nodes WHERE seq_next IS NOT NULL)"
                    " GROUP BY node, seq_next"):
                self._node(node).add_boot(seq_next, seq_last)
            for event_row in self.store.query(
                    "SELECT node, seq, ts, kind, name, state, detail, received_at FROM events"
                    " WHERE kind = 'fault' AND name = 'outbox' AND state = 'dropped'"):
                event = Event("", *event_row)
                drop = parse_drop(event)
                if drop is not None:
                    self._node(event.node).dropped.add_range(*drop)
            updates = []
            for gap in list_gaps(self.store):
                state = self._node(gap.node)
                state.reported.add_range(gap.first_seq, gap.last_seq)
                if gap.filled_at is None:
                    current = self._recount(state, gap, now)
                    if current != gap:
                        updates.append(current)
                    if current.filled_at is None:
                        state.add_open(current)
            # Retention deletes old rows: the holes it leaves up to its floor are not losses.
            floors = pruned_seqs(self.store)
            for node, state in self._nodes.items():
                floor = floors.get(node, -1)
                for (_, hi), (lo, _) in pairwise(state.stored.ranges()):
                    if lo - 1 > floor:
                        self._notice(node, state, max(hi + 1, floor + 1), lo - 1, now)
            self._save([], updates)

    def start(self) -> None:
        """Check for settled gaps in a daemon thread until stop()."""
        if self._thread is not None:
            raise RuntimeError("gap tracker already started")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="neoterra-gaps", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join()

    def _run(self) -> None:
        period = min(5.0, max(0.05, self.settle_s / 4))
        while not self._stopping.wait(period):
            try:
                self.check()
            except Exception:  # e.g. the database is locked for long: try again next period
                log.exception("gap check failed")

    # ---- messages ----

    def observe(self, messages: Sequence[Message]) -> None:
        """Take stored messages into account: seqs seen, boots, the node's drop reports."""
        now = self.clock()
        with self._lock:
            updates: list[Gap] = []
            inserts: list[Gap] = []
            deletes: list[Gap] = []
            for message in messages:
                if isinstance(message, Telemetry):
                    state = self._node(message.node)
                    for seq in sorted({reading.seq for reading in message.readings}):
                        self._seen(message.node, state, seq, now, updates)
                elif isinstance(message, Event):
                    state = self._node(message.node)
                    self._seen(message.node, state, message.seq, now, updates)
                    drop = parse_drop(message)
                    if drop is not None:
                        self._dropped(message.node, state, drop, now, inserts, deletes)
                elif isinstance(message, Status) and message.online:
                    self._node(message.node).add_boot(message.seq_next, message.seq_last)
            if updates or inserts:
                self._save(inserts, updates, deletes)

    def check(self, now: float | None = None) -> list[Gap]:
        """Report the runs that have been missing long enough; returns the new gaps."""
        now = self.clock() if now is None else now
        with self._lock:
            found: list[Gap] = []
            for node in sorted(self._unsettled):
                state = self._nodes[node]
                high = state.stored.max
                high = 0 if high is None else high
                waiting = []
                for candidate in state.candidates:
                    if (now - candidate.noticed_at >= self.settle_s
                            or high - candidate.high >= self.settle_seqs):
                        found += self._settle(node, state, candidate, now)
                    else:
                        waiting.append(candidate)
                state.candidates = waiting
                if not waiting:
                    self._unsettled.discard(node)
            if found:
                self._save(found, [])
            for gap in found:
                if gap.cause == DROPPED:
                    log.warning("node %s: seq %s (%d) dropped by the node (its outbox was full)",
                                gap.node, gap.seqs, gap.size)
                else:
                    log.warning("node %s: seq %s (%d) lost: never stored, not a reboot skip",
                                gap.node, gap.seqs, gap.size)
            return found

    # ---- internals (lock held) ----

    def _node(self, node: str) -> _NodeSeqs:
        state = self._nodes.get(node)
        if state is None:
            state = self._nodes[node] = _NodeSeqs()
        return state

    def _notice(self, node: str, state: _NodeSeqs, first: int, last: int, now: float) -> None:
        high = state.stored.max
        state.candidates.append(_Candidate(first, last, now, last if high is None else high))
        self._unsettled.add(node)

    def _seen(self, node: str, state: _NodeSeqs, seq: int, now: float,
              updates: list[Gap]) -> None:
        stored = state.stored
        previous_max = stored.max
        if not stored.add(seq):
            return  # redelivered
        if previous_max is None or seq == previous_max + 1:
            return  # in order: no new hole, nothing to fill
        # The holes on either side of seq are new or changed: have them checked once settled.
        below, above = stored.below(seq), stored.above(seq)
        if below is not None and below < seq - 1:
            self._notice(node, state, below + 1, seq - 1, now)
        if above is not None and above > seq + 1:
            self._notice(node, state, seq + 1, above - 1, now)
        gap = state.open_gap_at(seq)
        if gap is not None:
            gap = replace(gap, missing=gap.missing - 1)
            state.remove_open(gap)
            if gap.missing > 0:
                state.add_open(gap)
            else:
                gap = replace(gap, filled_at=now)
                log.info("node %s: seq %s arrived late after all; gap closed", node, gap.seqs)
            updates.append(gap)

    def _settle(self, node: str, state: _NodeSeqs, candidate: _Candidate,
                now: float) -> list[Gap]:
        pieces = state.stored.missing(candidate.first, candidate.last)
        # Reboot skips: above the last seq the node took before a boot start (seq_last), or
        # when it did not say, above the last one stored, up to the boot start.
        start = bisect_right(state.boots, candidate.first)
        end = bisect_right(state.boots, candidate.last + 1)
        for boot in state.boots[start:end]:
            seq_last = state.boot_last.get(boot)
            if seq_last is None:
                below = state.stored.below(boot)
                seq_last = candidate.first - 1 if below is None else below
            pieces = _subtract(pieces, seq_last + 1, boot - 1)
        gaps = []
        for lo, hi in pieces:
            for a, b in state.reported.missing(lo, hi):
                for first, last, cause in state.split(a, b):
                    gap = Gap(node, first, last, cause, now, last - first + 1)
                    state.reported.add_range(first, last)
                    state.add_open(gap)
                    gaps.append(gap)
        return gaps

    def _dropped(self, node: str, state: _NodeSeqs, drop: tuple[int, int], now: float,
                 inserts: list[Gap], deletes: list[Gap]) -> None:
        state.dropped.add_range(*drop)
        lost = [gap for gap in state.open.values()
                if gap.cause == LOST and gap.first_seq <= drop[1] and gap.last_seq >= drop[0]]
        for gap in lost:
            state.remove_open(gap)
            deletes.append(gap)
            for first, last, cause in state.split(gap.first_seq, gap.last_seq):
                piece = self._recount(state, replace(gap, first_seq=first, last_seq=last,
                                                     cause=cause), now)
                inserts.append(piece)
                if piece.filled_at is None:
                    state.add_open(piece)
            log.info("node %s: seq %s was dropped by the node, not lost", node,
                     f"{max(gap.first_seq, drop[0])}..{min(gap.last_seq, drop[1])}")

    @staticmethod
    def _recount(state: _NodeSeqs, gap: Gap, now: float) -> Gap:
        missing = gap.size - state.stored.count(gap.first_seq, gap.last_seq)
        filled_at = gap.filled_at if missing else (gap.filled_at or now)
        return replace(gap, missing=missing, filled_at=filled_at)

    def _save(self, inserts: list[Gap], updates: list[Gap], deletes: Sequence[Gap] = ()) -> None:
        if not (inserts or updates or deletes):
            return
        # In this order: a gap updated (a seq filled) and then split (a drop report) in the
        # same call is updated, deleted, and its pieces inserted with their own counts.
        with self.store.transaction() as db:
            db.executemany("UPDATE gaps SET missing = ?, filled_at = ?"
                           " WHERE node = ? AND first_seq = ?",
                           [(g.missing, g.filled_at, g.node, g.first_seq) for g in updates])
            db.executemany("DELETE FROM gaps WHERE node = ? AND first_seq = ?",
                           [(gap.node, gap.first_seq) for gap in deletes])
            db.executemany(f"INSERT INTO gaps ({GAP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(g.node, g.first_seq, g.last_seq, g.cause, g.detected_at, g.missing,
                             g.filled_at) for g in inserts])


def _subtract(pieces: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    out = []
    for a, b in pieces:
        if b < lo or a > hi:
            out.append((a, b))
            continue
        if a < lo:
            out.append((a, lo - 1))
        if b > hi:
            out.append((hi + 1, b))
    return out
