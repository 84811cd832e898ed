"""Properties of rule evaluation over random sequences (hypothesis): the water budget is never
exceeded, cooldowns hold, a threshold fires exactly when it held for its duration, windows
across midnight, daily schedules across DST. Each property is checked against a small model
written independently of the evaluator."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_gateway.rules import (
    Alert,
    Availability,
    DailyAt,
    Every,
    Irrigate,
    NodeState,
    Rule,
    RuleMemory,
    RuleSet,
    Sample,
    SiteState,
    Threshold,
    Window,
    evaluate,
    in_window,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
# Starts near both 2026 DST changes in Berlin and on an ordinary day.
STARTS = [datetime(2026, 3, 29, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 0, 0, tzinfo=UTC),
          datetime(2026, 6, 3, 9, 0, tzinfo=UTC)]
EPSILON_L = 1e-9


# ---- the water budget ----

@dataclass
class Run:
    """A pump run the node carried out for an ask: from start, `seconds` long."""
    node: str
    start: datetime
    seconds: int
    flow: float

    def litres_by(self, moment: datetime) -> float:
        elapsed = min(max((moment - self.start).total_seconds(), 0.0), self.seconds)
        return elapsed * self.flow / 60


@dataclass
class Garden:
    """The truth: what the pumps delivered; nodes report it with a lag."""
    flows: dict[str, float]
    runs: list[Run] = field(default_factory=list)
    as_of: dict[str, datetime] = field(default_factory=dict)

    def used_by(self, node: str, moment: datetime) -> float:
        return sum(run.litres_by(moment) for run in self.runs if run.node == node)

    def total(self) -> float:
        far = datetime(2100, 1, 1, tzinfo=UTC)
        return sum(self.used_by(node, far) for node in self.flows)


step = st.fixed_dictionaries({
    "advance_s": st.integers(1, 300),
    "report_lag_s": st.dictionaries(st.sampled_from(["bed1", "bed2"]),
                                    st.integers(0, 90) | st.integers(0, 1200)),
    "offline": st.sets(st.sampled_from(["bed1", "bed2"]), max_size=1),
})


@settings(max_examples=150, deadline=None)
@given(
    budget=st.floats(1.0, 60.0),
    flows=st.tuples(st.floats(0.5, 6.0), st.floats(0.5, 6.0)),
    seconds=st.tuples(st.integers(1, 120) | st.integers(1, 600), st.integers(1, 600)),
    steps=st.lists(step, min_size=30, max_size=100),
    data=st.data(),
)
def test_the_budget_is_never_exceeded(budget: float, flows: tuple[float, float],
                                      seconds: tuple[int, int], steps: list[dict[str, object]],
                                      data: st.DataObject) -> None:
    """Nodes carry out an ask late (up to a minute) or not at all, and report their water
    truthfully as of some moment up to 20 minutes back; whatever the order, the water the
    asks deliver stays within the budget."""
    garden = Garden({"bed1": flows[0], "bed2": flows[1]})
    rules = RuleSet(
        tuple(Rule(f"water_{node}", Irrigate(node, s), schedule=Every(1))
              for node, s in zip(garden.flows, seconds, strict=True)),
        budget, dict(garden.flows))
    memory = RuleMemory()
    now = datetime(2026, 6, 3, 0, 5, tzinfo=BERLIN).astimezone(UTC)
    for each in steps:
        now += timedelta(seconds=each["advance_s"])  # type: ignore[arg-type]
        lags: dict[str, int] = each["report_lag_s"]  # type: ignore[assignment]
        for node, lag in lags.items():
            as_of = max(now - timedelta(seconds=lag), garden.as_of.get(node, now - timedelta(
                seconds=lag)))
            garden.as_of[node] = as_of
        offline: set[str] = each["offline"]  # type: ignore[assignment]
        state = SiteState({
            node: NodeState(Availability.OFFLINE if node in offline else Availability.ONLINE,
                            water_today_l=garden.used_by(node, garden.as_of[node])
                            if node in garden.as_of else 0.0,
                            water_as_of=garden.as_of.get(node))
            for node in garden.flows})
        local = now.astimezone(BERLIN)
        assert local.date() == date(2026, 6, 3)  # one day: steps add up to < 9 h
        decisions, memory = evaluate(rules, state, memory, local)
        for decision in decisions:
            if isinstance(decision.action, Irrigate):
                assert decision.action.node not in offline
                delay = data.draw(st.sampled_from([0, 60]) | st.integers(0, 60),
                                  label="start delay")
                if data.draw(st.booleans(), label="carried out"):
                    garden.runs.append(Run(decision.action.node, now + timedelta(seconds=delay),
                                           decision.action.seconds,
                                           garden.flows[decision.action.node]))
            else:
                assert isinstance(decision.action, Alert) and decision.action.kind == "budget"
        assert garden.total() <= budget + EPSILON_L


# ---- cooldowns ----

@settings(max_examples=150, deadline=None)
@given(
    start=st.sampled_from(STARTS),
    cooldown_s=st.integers(0, 7200),
    for_s=st.integers(0, 1800),
    schedule=st.sampled_from([None, Every(10), DailyAt(time(2, 30), 3600)]),
    ticks=st.lists(st.tuples(st.integers(1, 1200), st.just(20.0) | st.floats(0, 60),
                             st.sampled_from([True, True, True, False])),
                   min_size=1, max_size=80),
)
def test_a_rule_never_fires_twice_within_its_cooldown(
        start: datetime, cooldown_s: int, for_s: int, schedule: Every | DailyAt | None,
        ticks: list[tuple[int, float, bool]]) -> None:
    rules = RuleSet((Rule("dry", Alert("dry"),
                          (Threshold("bed1", "soil_moisture", "below", 30.0, for_s=for_s),),
                          schedule, cooldown_s=cooldown_s),))
    memory = RuleMemory()
    now = start
    fired: list[datetime] = []
    for advance_s, value, online in ticks:
        now += timedelta(seconds=advance_s)
        state = SiteState({"bed1": NodeState(
            Availability.ONLINE if online else Availability.STALE,
            {"soil_moisture": (Sample(value, now.astimezone(BERLIN)),)})})
        decisions, memory = evaluate(rules, state, memory, now.astimezone(BERLIN))
        fired += [now] * len(decisions)
    for earlier, later in pairwise(fired):
        assert (later - earlier).total_seconds() >= cooldown_s


# ---- thresholds held for a duration ----

@dataclass
class Tick:
    now: datetime
    samples: list[tuple[datetime, float]]  # the samples first given at this evaluation
    online: bool


def expected_to_fire(ticks: list[Tick], k: int, condition: Threshold) -> bool:
    """The model: the condition holds at tick k when some sample F met it, every sample
    after F met it, F came at a tick j from which on the node was online with a latest sample
    no older than max_age_s at every tick, and F is at least for_s old. The earliest such F
    counts."""
    def fresh(i: int) -> bool:
        seen = [at for tick in ticks[:i + 1] for at, _ in tick.samples]
        return bool(seen) and (ticks[i].now - max(seen)).total_seconds() <= condition.max_age_s

    for j in range(k + 1):
        if not all(ticks[i].online and fresh(i) for i in range(j, k + 1)):
            continue
        later = [(at, value) for tick in ticks[j:k + 1] for at, value in tick.samples]
        for f, (first_at, _) in enumerate(later):
            if all(condition.met_by(value) for _, value in later[f:]):
                return (ticks[k].now - first_at).total_seconds() >= condition.for_s
    return False


@settings(max_examples=200, deadline=None)
@given(
    start=st.sampled_from(STARTS),
    for_s=st.integers(0, 1500),
    max_age_s=st.integers(60, 1800),
    raw_ticks=st.lists(st.tuples(
        st.integers(1, 600), st.booleans(),
        st.lists(st.sampled_from([20.0, 29.9, 30.0, 35.0]), max_size=4)), min_size=1,
        max_size=40),
)
def test_a_threshold_fires_exactly_when_it_held_for_its_duration(
        start: datetime, for_s: int, max_age_s: int,
        raw_ticks: list[tuple[int, bool, list[float]]]) -> None:
    condition = Threshold("bed1", "soil_moisture", "below", 30.0, for_s=for_s,
                          max_age_s=max_age_s)
    rules = RuleSet((Rule("dry", Alert("dry"), (condition,)),))  # no cooldown
    memory = RuleMemory()
    ticks: list[Tick] = []
    previous = start
    for advance_s, online, values in raw_ticks:
        now = previous + timedelta(seconds=advance_s)
        # Samples spread evenly over the interval since the previous evaluation.
        span = (now - previous) / (len(values) or 1)
        samples = [(previous + span * (i + 1), value) for i, value in enumerate(values)]
        ticks.append(Tick(now, samples, online))
        state = SiteState({"bed1": NodeState(
            Availability.ONLINE if online else Availability.OFFLINE,
            {"soil_moisture": tuple(Sample(v, at.astimezone(BERLIN)) for at, v in samples)}
            if samples else {})})
        decisions, memory = evaluate(rules, state, memory, now.astimezone(BERLIN))
        assert bool(decisions) == expected_to_fire(ticks, len(ticks) - 1, condition)
        previous = now


# ---- windows across midnight ----

@settings(max_examples=500, deadline=None)
@given(
    start_min=st.integers(0, 1439), length_min=st.integers(1, 1439),
    days=st.none() | st.frozensets(st.integers(0, 6)),
    moment=st.datetimes(datetime(2026, 1, 1), datetime(2027, 1, 1)),
    zone=st.sampled_from([BERLIN, NEW_YORK]),
)
def test_windows_match_a_minute_by_minute_model(start_min: int, length_min: int,
                                                days: frozenset[int] | None,
                                                moment: datetime, zone: ZoneInfo) -> None:
    """The window opens at `start` wall time on each of its days and stays open for its
    length of wall-clock minutes, into the next day if it has to."""
    end_min = (start_min + length_min) % 1440
    start = time(start_min // 60, start_min % 60)
    window = Window(start, time(end_min // 60, end_min % 60), days)
    now = moment.replace(tzinfo=zone)
    wall = now.replace(tzinfo=None)
    openings = [datetime.combine(wall.date() - timedelta(days=back), start)
                for back in (0, 1)]
    expected = any(
        opening <= wall < opening + timedelta(minutes=length_min)
        and (days is None or opening.weekday() in days) for opening in openings)
    assert in_window(window, now) == expected


# ---- daily schedules across DST ----

@settings(max_examples=60, deadline=None)
@given(
    at=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    start=st.sampled_from(STARTS) | st.sampled_from(
        [datetime(2026, 3, 8, 0, 0, tzinfo=UTC), datetime(2026, 11, 1, 0, 0, tzinfo=UTC)]),
    zone=st.sampled_from([BERLIN, NEW_YORK]),
    step_min=st.integers(1, 9),
)
def test_a_daily_schedule_runs_once_per_local_date(at: time, start: datetime, zone: ZoneInfo,
                                                   step_min: int) -> None:
    schedule = DailyAt(at, late_s=600)
    rules = RuleSet((Rule("daily", Alert("x"), schedule=schedule),))
    memory = RuleMemory()
    fired: list[datetime] = []
    begin = start - timedelta(days=1)
    for i in range(0, 3 * 24 * 60, step_min):
        now = (begin + timedelta(minutes=i)).astimezone(zone)
        decisions, memory = evaluate(rules, SiteState(), memory, now)
        fired += [now] * len(decisions)
    def slot(day: date) -> datetime:
        return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)  # fold=0: the first

    dates = []
    for now in fired:  # each run is within 10 minutes after the slot of its date
        (day,) = [day for day in (now.date(), now.date() - timedelta(days=1))
                  if 0 <= (now.astimezone(UTC) - slot(day)).total_seconds() <= 600]
        dates.append(day)
    assert len(dates) == len(set(dates))  # never twice for one date
    inner = {begin.astimezone(zone).date() + timedelta(days=d) for d in (1, 2)}
    assert inner <= set(dates)  # every whole day in the run had its run
