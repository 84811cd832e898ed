"""Evaluating the automation rules: a pure function of the rules, the site and the memory.

`evaluate(rules, state, memory, now)` returns what the rules ask for now and the memory to
give the next call. It reads no clock, does no I/O and keeps nothing between calls; the daemon
owns the loop (and sends the commands, through the node's safety layer, which may refuse).
The semantics are described in docs/rules.md; in short:
- a rule fires when all its threshold conditions hold, its schedule (if any) is due, `now` is
  inside its window (if any) and its cooldown has passed since it last fired;
- a threshold holds once every sample since the first one meeting it did, for at least for_s
  (sample times); a sample failing it, a latest sample older than max_age_s, or the node not
  being online resets it;
- a rule never asks a node that is not online (offline or stale): the node's own profile is in
  charge then. It is not fired either, so it asks as soon as the node is back and it still
  holds (thresholds need for_s of fresh samples first);
- an irrigate ask that would take the site past its daily water budget is not emitted; a
  "budget" alert is, and counts as the rule firing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType

from sensornode import protocol

from edge_gateway.rules_model import (
    WEEKDAYS,
    Alert,
    Availability,
    ConditionState,
    DailyAt,
    Decision,
    Every,
    Irrigate,
    Rule,
    RuleMemory,
    RuleSet,
    RuleState,
    SiteState,
    Threshold,
    WaterAsk,
    Window,
    require_aware,
)

BUDGET_EPSILON_L = 1e-9  # float sums of litres; never enough to matter


def evaluate(rules: RuleSet, state: SiteState, memory: RuleMemory,
             now: datetime) -> tuple[list[Decision], RuleMemory]:
    """What the rules ask for at `now` (aware, in the site's time zone), and the new memory.

    Times of day, weekdays and "today" (for the water budget) are `now`'s wall clock, so give
    it in the site's zone (a ZoneInfo, so that DST is right); durations are real seconds.
    """
    require_aware("now", now)
    now_utc = now.astimezone(UTC)
    today = now.date()
    asks = memory.asks if memory.day == today else ()
    decisions: list[Decision] = []
    rule_states: dict[str, RuleState] = {}
    for rule in rules.rules:
        previous = memory.rules.get(rule.name, RuleState())
        if not rule.enabled:
            rule_states[rule.name] = previous  # keeps its cooldown across being switched off
            continue
        rule_state, decision, ask = _evaluate_rule(rule, rules, state, previous, asks, now,
                                                   now_utc)
        rule_states[rule.name] = rule_state
        if decision is not None:
            decisions.append(decision)
        if ask is not None:
            asks = (*asks, ask)
    return decisions, RuleMemory(rules=MappingProxyType(rule_states), day=today, asks=asks)


def site_water_used_l(rules: RuleSet, state: SiteState, asks: tuple[WaterAsk, ...]) -> float:
    """Water the site used today as far as the rules can know: what the nodes reported, plus
    every rule ask their reports cannot include yet."""
    reported = sum(node.water_today_l for node in state.nodes.values())
    settle = timedelta(seconds=rules.ask_settle_s)
    pending = 0.0
    for ask in asks:
        node = state.nodes.get(ask.node)
        as_of = None if node is None or node.water_as_of is None else node.water_as_of
        if as_of is None or as_of.astimezone(UTC) < ask.end + settle:
            pending += ask.litres
    return reported + pending


def in_window(window: Window, now: datetime) -> bool:
    """Whether `now`'s wall clock is inside the window (opened on one of its days)."""
    clock, weekday = now.time(), now.weekday()
    if window.start is None or window.end is None:
        opened_on = weekday
    elif window.start < window.end:
        if not window.start <= clock < window.end:
            return False
        opened_on = weekday
    elif clock >= window.start:
        opened_on = weekday
    elif clock < window.end:
        opened_on = (weekday - 1) % 7  # the window opened yesterday evening
    else:
        return False
    return window.days is None or opened_on in window.days


def due_slot(schedule: DailyAt, now: datetime, last_slot: date | None) -> date | None:
    """The local date whose run of `schedule` is due at `now`, if any.

    A run is due from its time until late_s later. A time the clock skips on a DST day is
    taken as the wall time before the jump would have read (02:30 -> 03:30 after a 02:00 ->
    03:00 jump); a time that happens twice runs at the first one (fold=0, PEP 495).
    """
    now_utc = now.astimezone(UTC)
    for day in (now.date() - timedelta(days=1), now.date()):
        if last_slot is not None and day <= last_slot:
            continue
        slot = datetime.combine(day, schedule.at, tzinfo=now.tzinfo).astimezone(UTC)
        if slot <= now_utc and (now_utc - slot).total_seconds() <= schedule.late_s:
            return day
    return None


def _evaluate_rule(
    rule: Rule, rules: RuleSet, state: SiteState, previous: RuleState,
    asks: tuple[WaterAsk, ...], now: datetime, now_utc: datetime,
) -> tuple[RuleState, Decision | None, WaterAsk | None]:
    known = previous.conditions if previous.definition == rule else ()
    if len(known) != len(rule.conditions):
        known = tuple(ConditionState() for _ in rule.conditions)
    conditions = tuple(_track(condition, condition_state, state, now_utc)
                       for condition, condition_state in zip(rule.conditions, known, strict=True))
    kept = RuleState(rule, conditions, previous.last_fired, previous.last_slot)

    reasons = []
    for condition, condition_state in zip(rule.conditions, conditions, strict=True):
        reason = _holds(condition, condition_state, now_utc)
        if reason is None:
            return kept, None, None
        reasons.append(reason)
    if rule.window is not None and not in_window(rule.window, now):
        return kept, None, None
    since_fired = (None if previous.last_fired is None
                   else (now_utc - previous.last_fired).total_seconds())
    slot = None
    if isinstance(rule.schedule, DailyAt):
        slot = due_slot(rule.schedule, now, previous.last_slot)
        if slot is None:
            return kept, None, None
        reasons.insert(0, f"daily at {rule.schedule.at:%H:%M}")
    elif isinstance(rule.schedule, Every):
        if since_fired is not None and since_fired < rule.schedule.minutes * 60:
            return kept, None, None
        reasons.insert(0, f"every {rule.schedule.minutes} min")
    if since_fired is not None and since_fired < rule.cooldown_s:
        return kept, None, None
    target = None if isinstance(rule.action, Alert) else rule.action.node
    if target is not None:
        node = state.nodes.get(target)
        if node is None or node.availability != Availability.ONLINE:
            return kept, None, None  # its own profile is in charge; ask once it is back
    if rule.window is not None:
        reasons.append(_describe_window(rule.window))
    fired = replace(kept, last_fired=now_utc, last_slot=slot or kept.last_slot)
    reason = "; ".join(reasons) or "no condition"
    if not isinstance(rule.action, Irrigate):
        return fired, Decision(rule.name, rule.action, reason, now), None
    return _irrigate(rule, rule.action, rules, state, asks, reason, now, now_utc, fired)


def _irrigate(
    rule: Rule, action: Irrigate, rules: RuleSet, state: SiteState,
    asks: tuple[WaterAsk, ...], reason: str, now: datetime, now_utc: datetime, fired: RuleState,
) -> tuple[RuleState, Decision, WaterAsk | None]:
    flow = rules.flow_l_per_min.get(action.node)
    litres = None if flow is None else action.seconds * flow / 60
    ask = None if litres is None else WaterAsk(
        rule.name, action.node, litres, now_utc, now_utc + timedelta(seconds=action.seconds))
    budget = rules.water_budget_l_per_day
    if budget is None:
        return fired, Decision(rule.name, action, reason, now), ask
    what = f"irrigate {action.node} for {action.seconds} s"
    if litres is None or ask is None:
        message = (f"rule {rule.name} did not {what}: the node's flow rate is unknown, so its "
                   f"water cannot be counted against the {budget:g} l site budget")
        return fired, _budget_alert(rule, message, reason, now), None
    used = site_water_used_l(rules, state, asks)
    if used + litres > budget + BUDGET_EPSILON_L:
        message = (f"rule {rule.name} did not {what} ({litres:.1f} l): the site has used "
                   f"{used:.1f} l of its {budget:g} l daily water budget")
        return fired, _budget_alert(rule, message, reason, now), None
    reason += f"; {litres:.1f} l, {used + litres:.1f} of {budget:g} l budget used today"
    return fired, Decision(rule.name, action, reason, now), ask


def _budget_alert(rule: Rule, message: str, reason: str, now: datetime) -> Decision:
    return Decision(rule.name, Alert(message, "warning", kind="budget"),
                    f"{reason}; over the water budget", now)


def _track(condition: Threshold, previous: ConditionState, state: SiteState,
           now_utc: datetime) -> ConditionState:
    """Take the samples newer than the last one seen into account, in time order."""
    node = state.nodes.get(condition.node)
    samples = () if node is None else node.readings.get(condition.quantity, ())
    since, last, value = previous.since, previous.last_sample_at, previous.last_value
    for sample in sorted(samples, key=lambda sample: sample.at.astimezone(UTC)):
        at = sample.at.astimezone(UTC)
        if last is not None and at <= last:
            continue  # seen already, or arrived out of order after a newer one
        if not condition.met_by(sample.value):
            since = None
        elif since is None:
            since = at
        last, value = at, sample.value
    # Unknown counts as not met: never act on a silent node or a stale value.
    online = node is not None and node.availability == Availability.ONLINE
    if not online or last is None or (now_utc - last).total_seconds() > condition.max_age_s:
        since = None
    return ConditionState(since, last, value)


def _holds(condition: Threshold, condition_state: ConditionState, now_utc: datetime) -> str | None:
    """Why the condition holds now (for the decision's reason), or None when it does not."""
    since = condition_state.since
    if since is None:
        return None
    held_s = (now_utc - since).total_seconds()
    if held_s < condition.for_s:
        return None
    unit = protocol.quantity_unit(condition.quantity)
    return (f"{condition.node} {condition.quantity} {condition_state.last_value:g} {unit} "
            f"{condition.direction} {condition.value:g} for {held_s:.0f} s")


def _describe_window(window: Window) -> str:
    parts = []
    if window.start is not None and window.end is not None:
        parts.append(f"between {window.start:%H:%M} and {window.end:%H:%M}")
    if window.days is not None:
        parts.append("on " + ", ".join(WEEKDAYS[day] for day in sorted(window.days)))
    return "only " + " ".join(parts)
