"""Rule evaluation, example by example: thresholds held for a duration, windows, schedules,
offline nodes, cooldowns, the water budget and DST. The properties are in
test_rules_properties.py."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge_gateway.rules import (
    Action,
    Alert,
    Availability,
    DailyAt,
    Decision,
    Diffuse,
    Every,
    Irrigate,
    NodeState,
    Rule,
    RuleMemory,
    RuleSet,
    Sample,
    Setpoint,
    SiteState,
    Threshold,
    Window,
    due_slot,
    evaluate,
    in_window,
    site_water_used_l,
)

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=BERLIN)  # a Monday
DRY = Threshold("bed1", "soil_moisture", "below", 30.0, for_s=600)
WATER = Irrigate("bed1", 120)


def node(availability: Availability = Availability.ONLINE,
         samples: Sequence[tuple[datetime, float]] = (), quantity: str = "soil_moisture",
         water_l: float = 0.0, water_as_of: datetime | None = None) -> NodeState:
    readings = {quantity: tuple(Sample(value, at) for at, value in samples)} if samples else {}
    return NodeState(availability, readings, water_l, water_as_of)


def site(**nodes: NodeState) -> SiteState:
    return SiteState(nodes)


def rule(name: str = "dry", action: Action = WATER, conditions: tuple[Threshold, ...] = (DRY,),
         **fields: object) -> Rule:
    return Rule(name, action, conditions, **fields)  # type: ignore[arg-type]


class Runner:
    """Evaluates a rule set over time, carrying the memory like the daemon does."""

    def __init__(self, rules: RuleSet | Iterable[Rule]) -> None:
        self.rules = rules if isinstance(rules, RuleSet) else RuleSet(tuple(rules))
        self.memory = RuleMemory()
        self.decisions: list[Decision] = []

    def at(self, now: datetime, state: SiteState) -> list[Decision]:
        decisions, self.memory = evaluate(self.rules, state, self.memory, now)
        self.decisions += decisions
        return decisions


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


# ---- thresholds held for a duration ----

def test_threshold_fires_only_once_it_held_for_for_s() -> None:
    runner = Runner([rule(cooldown_s=3600)])
    samples: list[tuple[datetime, float]] = []
    fired_at = []
    for i in range(15):
        now = T0 + minutes(i)
        samples = [(now, 25.0)]  # the latest sample only, as a daemon evaluating per batch
        if runner.at(now, site(bed1=node(samples=samples))):
            fired_at.append(i)
    assert fired_at == [10]
    (decision,) = runner.decisions
    assert decision.action == WATER
    assert decision.requested_by == "rule:dry"
    assert decision.reason == "bed1 soil_moisture 25 % below 30 for 600 s"
    assert decision.at == T0 + minutes(10)


def test_one_sample_back_across_the_threshold_restarts_the_duration() -> None:
    """The excursion falls between two evaluations; it is seen because every sample since the
    previous evaluation is given."""
    runner = Runner([rule(cooldown_s=0)])
    assert not runner.at(T0, site(bed1=node(samples=[(T0, 25.0)])))
    between = [(T0 + minutes(4), 25.0), (T0 + minutes(5), 31.0), (T0 + minutes(6), 25.0)]
    assert not runner.at(T0 + minutes(7), site(bed1=node(samples=between)))
    # 10 min after the first dry sample: would have fired without the wet one at minute 5
    assert not runner.at(T0 + minutes(10), site(bed1=node(samples=[(T0 + minutes(10), 25.0)])))
    assert not runner.at(T0 + minutes(15), site(bed1=node(samples=[(T0 + minutes(15), 25.0)])))
    assert runner.at(T0 + minutes(16), site(bed1=node(samples=[(T0 + minutes(16), 25.0)])))


def test_exactly_at_the_threshold_is_not_beyond_it() -> None:
    runner = Runner([rule(conditions=(replace(DRY, for_s=0),), cooldown_s=0)])
    assert not runner.at(T0, site(bed1=node(samples=[(T0, 30.0)])))
    assert runner.at(T0 + minutes(1), site(bed1=node(samples=[(T0 + minutes(1), 29.9)])))


def test_an_old_latest_sample_is_not_trusted() -> None:
    condition = replace(DRY, for_s=0, max_age_s=900)
    runner = Runner([rule(conditions=(condition,), action=Alert("dry"), cooldown_s=0)])
    dry = node(samples=[(T0, 20.0)])
    assert runner.at(T0 + minutes(15), site(bed1=dry))
    assert not runner.at(T0 + minutes(16), site(bed1=dry))
    # The same old sample again does not bring it back; a new one does.
    assert not runner.at(T0 + minutes(17), site(bed1=node(samples=[(T0, 20.0)])))
    assert runner.at(T0 + minutes(18), site(bed1=node(samples=[(T0 + minutes(18), 20.0)])))


def test_samples_out_of_order_or_repeated_are_taken_once() -> None:
    runner = Runner([rule(cooldown_s=0)])
    runner.at(T0 + minutes(5), site(bed1=node(samples=[(T0 + minutes(5), 20.0),
                                                      (T0, 20.0)])))
    # The earlier sample was sorted first, so the run started at T0.
    assert runner.at(T0 + minutes(10), site(bed1=node(samples=[(T0 + minutes(5), 20.0)])))
    # A late sample older than the newest one seen cannot reset the run.
    assert runner.at(T0 + minutes(11), site(bed1=node(samples=[(T0 + minutes(2), 99.0)])))


def test_every_condition_must_hold() -> None:
    warm = Threshold("bed1", "air_temperature", "above", 25.0)
    runner = Runner([rule(conditions=(replace(DRY, for_s=0), warm), cooldown_s=0)])
    readings = {"soil_moisture": (Sample(20.0, T0),), "air_temperature": (Sample(22.0, T0),)}
    assert not runner.at(T0, site(bed1=NodeState(Availability.ONLINE, readings)))
    later = T0 + minutes(1)
    readings = {"air_temperature": (Sample(26.5, later),)}
    (decision,) = runner.at(later, site(bed1=NodeState(Availability.ONLINE, readings)))
    assert decision.reason == ("bed1 soil_moisture 20 % below 30 for 60 s; "
                               "bed1 air_temperature 26.5 degC above 25 for 0 s")


# ---- offline and stale nodes ----

@pytest.mark.parametrize("availability", [Availability.OFFLINE, Availability.STALE])
def test_a_rule_does_not_ask_a_node_that_is_not_online(availability: Availability) -> None:
    """The condition is on another node; the target is away, then back."""
    condition = Threshold("probe", "soil_moisture", "below", 30.0)
    runner = Runner([rule(conditions=(condition,), cooldown_s=3600)])
    probe = node(samples=[(T0, 20.0)])
    assert not runner.at(T0, site(probe=probe, bed1=node(availability)))
    assert not runner.at(T0 + minutes(1), site(probe=probe))  # unknown to the registry
    (decision,) = runner.at(T0 + minutes(2), site(probe=probe, bed1=node()))
    assert decision.action == WATER


def test_a_node_going_away_resets_its_conditions() -> None:
    runner = Runner([rule(action=Alert("dry"), cooldown_s=0)])
    runner.at(T0, site(bed1=node(samples=[(T0, 20.0)])))
    runner.at(T0 + minutes(5), site(bed1=node(Availability.STALE, [(T0 + minutes(5), 20.0)])))
    back = T0 + minutes(6)
    assert not runner.at(T0 + minutes(11), site(bed1=node(samples=[(back, 20.0)])))
    assert runner.at(T0 + minutes(16), site(bed1=node(samples=[(back, 20.0)])))


def test_alerts_need_no_node() -> None:
    runner = Runner([Rule("hourly", Alert("check the beds", "info"), schedule=Every(60))])
    (decision,) = runner.at(T0, site())
    assert decision.action == Alert("check the beds", "info")
    assert decision.reason == "every 60 min"


# ---- cooldowns and schedules ----

def test_a_rule_holding_on_fires_again_only_after_its_cooldown() -> None:
    runner = Runner([rule(conditions=(replace(DRY, for_s=0),), action=Alert("dry"),
                          cooldown_s=1800)])
    fired = [i for i in range(0, 91, 5)
             if runner.at(T0 + minutes(i), site(bed1=node(samples=[(T0 + minutes(i), 20.0)])))]
    assert fired == [0, 30, 60, 90]


def test_every_n_minutes_counts_from_the_last_time_it_fired() -> None:
    runner = Runner([Rule("fan", Diffuse("drone1", 2, 40, 30), schedule=Every(20))])
    fired = [i for i in range(0, 70, 7) if runner.at(T0 + minutes(i), site(drone1=node()))]
    assert fired == [0, 21, 42, 63]
    assert runner.decisions[0].action == Diffuse("drone1", 2, 40, 30)


def test_daily_at_fires_once_a_day_within_its_late_time() -> None:
    runner = Runner([Rule("morning", Alert("good morning"), schedule=DailyAt(time(6, 30), 600))])
    start = datetime(2026, 6, 1, 0, 0, tzinfo=BERLIN)
    fired = [start + minutes(i) for i in range(0, 3 * 24 * 60, 3)
             if runner.at(start + minutes(i), site())]
    assert fired == [datetime(2026, 6, d, 6, 30, tzinfo=BERLIN) for d in (1, 2, 3)]
    assert runner.decisions[0].reason == "daily at 06:30"


def test_daily_at_is_skipped_when_the_gateway_comes_back_too_late() -> None:
    schedule = DailyAt(time(6, 30), 600)
    assert due_slot(schedule, datetime(2026, 6, 1, 6, 40, tzinfo=BERLIN), None) == date(2026,
                                                                                        6, 1)
    assert due_slot(schedule, datetime(2026, 6, 1, 6, 41, tzinfo=BERLIN), None) is None
    assert due_slot(schedule, datetime(2026, 6, 1, 6, 29, tzinfo=BERLIN), None) is None
    assert due_slot(schedule, datetime(2026, 6, 1, 6, 35, tzinfo=BERLIN), date(2026, 6, 1)) \
        is None


def test_daily_at_just_before_midnight_is_still_due_just_after() -> None:
    schedule = DailyAt(time(23, 55), 900)
    just_after = datetime(2026, 6, 2, 0, 5, tzinfo=BERLIN)
    assert due_slot(schedule, just_after, None) == date(2026, 6, 1)
    assert due_slot(schedule, just_after, date(2026, 6, 1)) is None


def test_a_schedule_with_a_condition_runs_when_both_hold() -> None:
    morning = Rule("morning", WATER, (replace(DRY, for_s=0),), DailyAt(time(6, 0), 600))
    runner = Runner([morning])
    start = datetime(2026, 6, 1, 5, 58, tzinfo=BERLIN)
    wet, dry = node(samples=[(start, 40.0)]), node(samples=[(start + minutes(4), 20.0)])
    assert not runner.at(start + minutes(2), site(bed1=wet))
    (decision,) = runner.at(start + minutes(4), site(bed1=dry))
    assert decision.reason == "daily at 06:00; bed1 soil_moisture 20 % below 30 for 0 s"
    assert not runner.at(start + minutes(5), site(bed1=dry))  # today's run is done


def test_changing_a_rule_restarts_its_conditions_but_keeps_its_cooldown() -> None:
    first = rule(conditions=(replace(DRY, for_s=0),), action=Alert("dry"), cooldown_s=3600)
    runner = Runner([first])
    assert runner.at(T0, site(bed1=node(samples=[(T0, 20.0)])))
    runner.rules = RuleSet((replace(first, conditions=(replace(DRY, for_s=60),)),))
    fired = [i for i in range(1, 62)
             if runner.at(T0 + minutes(i), site(bed1=node(samples=[(T0 + minutes(i), 20.0)])))]
    assert fired == [60]  # held from minute 2, but cooling down until minute 60


def test_a_disabled_rule_never_fires_and_removed_rules_are_forgotten() -> None:
    alert = Rule("hourly", Alert("x"), schedule=Every(60))
    runner = Runner([alert, Rule("off", Alert("y"), schedule=Every(1), enabled=False)])
    assert [d.rule for d in runner.at(T0, site())] == ["hourly"]
    runner.rules = RuleSet((alert,))
    runner.at(T0 + minutes(1), site())
    assert set(runner.memory.rules) == {"hourly"}


# ---- windows ----

def test_a_window_across_midnight_belongs_to_the_day_it_opens() -> None:
    window = Window(time(22, 0), time(6, 0), frozenset({4}))  # Friday night
    friday = datetime(2026, 6, 5, tzinfo=BERLIN)
    assert in_window(window, friday.replace(hour=23))
    assert in_window(window, friday + timedelta(hours=24 + 5, minutes=59))  # Saturday 05:59
    assert not in_window(window, friday + timedelta(hours=24 + 6))  # Saturday 06:00
    assert not in_window(window, friday.replace(hour=2))  # Thursday's night
    assert not in_window(window, friday.replace(hour=21, minute=59))
    assert not in_window(window, friday + timedelta(hours=24 + 23))  # Saturday night


def test_a_rule_outside_its_window_waits_for_it() -> None:
    runner = Runner([rule(conditions=(replace(DRY, for_s=0),), cooldown_s=3600,
                          window=Window(time(6, 0), time(10, 0)))])
    evening = datetime(2026, 6, 1, 21, 0, tzinfo=BERLIN)
    fired = [evening + minutes(i) for i in range(0, 14 * 60, 30)
             if runner.at(evening + minutes(i), site(bed1=node(samples=[
                 (evening + minutes(i), 20.0)])))]
    assert fired == [datetime(2026, 6, 2, 6, 0, tzinfo=BERLIN),
                     datetime(2026, 6, 2, 7, 0, tzinfo=BERLIN),
                     datetime(2026, 6, 2, 8, 0, tzinfo=BERLIN),
                     datetime(2026, 6, 2, 9, 0, tzinfo=BERLIN)]
    assert runner.decisions[0].reason.endswith("; only between 06:00 and 10:00")


def test_days_only_window() -> None:
    weekend = Window(days=frozenset({5, 6}))
    assert not in_window(weekend, datetime(2026, 6, 5, 23, 59, tzinfo=BERLIN))
    assert in_window(weekend, datetime(2026, 6, 6, 0, 0, tzinfo=BERLIN))


# ---- DST (Europe/Berlin: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00) ----

def berlin_minutes(first: datetime, count: int, step: int = 1) -> list[datetime]:
    """Every `step` real minutes from `first`, as Berlin wall-clock datetimes."""
    start = first.astimezone(UTC)
    return [(start + minutes(i)).astimezone(BERLIN) for i in range(0, count, step)]


def test_daily_at_in_the_skipped_hour_runs_once_an_hour_of_wall_time_later() -> None:
    runner = Runner([Rule("night", Alert("x"), schedule=DailyAt(time(2, 30), 600))])
    fired = [now for now in berlin_minutes(datetime(2026, 3, 28, 12, tzinfo=BERLIN), 40 * 60)
             if runner.at(now, site())]
    assert [now.isoformat() for now in fired] == ["2026-03-29T03:30:00+02:00",
                                                  "2026-03-30T02:30:00+02:00"]


def test_daily_at_in_the_repeated_hour_runs_once_at_the_first() -> None:
    runner = Runner([Rule("night", Alert("x"), schedule=DailyAt(time(2, 30), 600))])
    fired = [now for now in berlin_minutes(datetime(2026, 10, 24, 12, tzinfo=BERLIN), 36 * 60)
             if runner.at(now, site())]
    assert [now.isoformat() for now in fired] == ["2026-10-25T02:30:00+02:00"]


def test_durations_and_cooldowns_are_real_time_across_the_repeated_hour() -> None:
    """02:50 CEST to 02:05 CET is 15 minutes, though the wall clock went back 45."""
    condition = replace(DRY, for_s=900)
    runner = Runner([rule(conditions=(condition,), action=Alert("dry"), cooldown_s=1200)])
    times = berlin_minutes(datetime(2026, 10, 25, 2, 50, tzinfo=BERLIN), 60, 5)
    fired = [now for now in times if runner.at(now, site(bed1=node(samples=[(now, 20.0)])))]
    assert [now.isoformat() for now in fired] == ["2026-10-25T02:05:00+01:00",
                                                  "2026-10-25T02:25:00+01:00",
                                                  "2026-10-25T02:45:00+01:00"]


def test_every_n_minutes_is_real_time_across_the_skipped_hour() -> None:
    runner = Runner([Rule("fan", Alert("x"), schedule=Every(45))])
    times = berlin_minutes(datetime(2026, 3, 29, 1, 0, tzinfo=BERLIN), 120, 15)
    fired = [now.isoformat() for now in times if runner.at(now, site())]
    assert fired == ["2026-03-29T01:00:00+01:00", "2026-03-29T01:45:00+01:00",
                     "2026-03-29T03:30:00+02:00"]  # 45 real minutes after 01:45 CET


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match=r"now: .* no time zone"):
        evaluate(RuleSet(), site(), RuleMemory(), datetime(2026, 6, 1, 8, 0))
    with pytest.raises(ValueError, match=r"Sample\.at"):
        Sample(1.0, datetime(2026, 6, 1, 8, 0))


# ---- the water budget ----

def budgeted(*rules: Rule, budget: float = 10.0, flows: dict[str, float] | None = None
             ) -> RuleSet:
    return RuleSet(rules, budget, {"bed1": 2.0, "bed2": 3.0} if flows is None else flows)


def test_an_irrigate_beyond_the_budget_becomes_a_budget_alert() -> None:
    every = [Rule(f"w{n}", Irrigate(f"bed{n}", 60), schedule=Every(60)) for n in (1, 2)]
    runner = Runner(budgeted(*every, budget=10.0))
    state = site(bed1=node(water_l=4.0, water_as_of=T0), bed2=node())
    first = runner.at(T0, state)
    assert [d.action for d in first] == [Irrigate("bed1", 60), Irrigate("bed2", 60)]
    assert first[1].reason == "every 60 min; 3.0 l, 9.0 of 10 l budget used today"
    second = runner.at(T0 + minutes(60), state)
    assert [d.action.kind for d in second if isinstance(d.action, Alert)] == ["budget", "budget"]
    assert second[0].action == Alert(
        "rule w1 did not irrigate bed1 for 60 s (2.0 l): the site has used 9.0 l of its 10 l "
        "daily water budget", "warning", "budget")
    assert second[0].reason == "every 60 min; over the water budget"
    assert runner.memory.asked_today_l == 5.0
    # A refusal counts as firing: no second alert within the schedule's interval.
    assert not runner.at(T0 + minutes(61), state)


def test_asks_count_until_a_report_is_past_them() -> None:
    rules = budgeted(Rule("w", Irrigate("bed1", 60), schedule=Every(1)), budget=5.0)
    runner = Runner(rules)
    assert runner.at(T0, site(bed1=node()))  # 2 l asked, not reported yet
    assert runner.at(T0 + minutes(1), site(bed1=node()))  # 4 l
    assert all(isinstance(d.action, Alert) for d in runner.at(T0 + minutes(2), site(bed1=node())))
    # The node reports 4 l as of a moment after both runs and the settle time.
    reported = node(water_l=4.0, water_as_of=T0 + minutes(2) + timedelta(seconds=121))
    assert site_water_used_l(rules, site(bed1=reported), runner.memory.asks) == 4.0
    # Reported as of before the second run settled: that one still counts in full.
    early = node(water_l=3.0, water_as_of=T0 + minutes(3))
    assert site_water_used_l(rules, site(bed1=early), runner.memory.asks) == 5.0
    # The node refused the runs (tank empty): after the settle time, the room is back.
    refused = node(water_l=0.0, water_as_of=T0 + minutes(5))
    (decision,) = runner.at(T0 + minutes(5), site(bed1=refused))
    assert decision.action == Irrigate("bed1", 60)


def test_the_budget_is_per_local_day() -> None:
    rules = budgeted(Rule("w", Irrigate("bed1", 150), schedule=Every(60)), budget=5.0)
    runner = Runner(rules)
    evening = datetime(2026, 6, 1, 23, 0, tzinfo=BERLIN)
    assert isinstance(runner.at(evening, site(bed1=node()))[0].action, Irrigate)
    assert runner.memory.day == date(2026, 6, 1)
    (decision,) = runner.at(evening + minutes(60), site(bed1=node()))
    assert decision.action == Irrigate("bed1", 150)
    assert runner.memory.day == date(2026, 6, 2)
    assert runner.memory.asked_today_l == 5.0


def test_water_used_without_the_rules_counts_too() -> None:
    runner = Runner(budgeted(Rule("w", Irrigate("bed1", 60), schedule=Every(60)), budget=5.0))
    (decision,) = runner.at(T0, site(bed1=node(water_l=4.5, water_as_of=T0)))
    assert isinstance(decision.action, Alert)


def test_without_a_flow_rate_the_budget_cannot_be_kept() -> None:
    runner = Runner(budgeted(Rule("w", Irrigate("bed3", 60), schedule=Every(60))))
    (decision,) = runner.at(T0, site(bed3=node()))
    assert decision.action == Alert(
        "rule w did not irrigate bed3 for 60 s: the node's flow rate is unknown, so its water "
        "cannot be counted against the 10 l site budget", "warning", "budget")


def test_without_a_budget_irrigation_is_counted_but_not_limited() -> None:
    rules = RuleSet((Rule("w", Irrigate("bed1", 3600), schedule=Every(1)),), None, {"bed1": 2.0})
    runner = Runner(rules)
    for i in range(5):
        assert runner.at(T0 + minutes(i), site(bed1=node()))[0].action == Irrigate("bed1", 3600)
    assert runner.memory.asked_today_l == 600.0


def test_other_actions_pass_through() -> None:
    runner = Runner([Rule("scent", Setpoint("drone1", 1, 150.0), schedule=Every(5))])
    (decision,) = runner.at(T0, site(drone1=node()))
    assert decision == Decision("scent", Setpoint("drone1", 1, 150.0), "every 5 min", T0)
