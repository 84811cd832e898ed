"""The data the automation rules work on: rules, what the site looks like, what rules remember.

Everything here is a frozen dataclass so `edge_gateway.rules.evaluate` can stay a pure
function: the rule set comes from the config (`rules_config.parse_rules`), the site state is
built by the daemon from its registry and store, and the memory one evaluation returns is the
one the next evaluation is given. Times are aware datetimes; the evaluation compares them in
UTC (Python compares two datetimes of the same zone by wall clock, which is wrong across DST).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from types import MappingProxyType
from typing import Literal

# An irrigate ask counts against the site budget until the node's water report is this much
# past the end of the run: the command may start late (it is refused once expired) and the
# report may lag the pump by a report interval.
ASK_SETTLE_S = 120.0
DEFAULT_MAX_AGE_S = 1800.0
DEFAULT_LATE_S = 600.0
SEVERITIES = ("info", "warning", "critical")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()


def require_aware(what: str, moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what}: {moment!r} has no time zone; give an aware datetime "
                         "(the site's zone for `now`, e.g. ZoneInfo('Europe/Berlin'))")


# ---- triggers ----

@dataclass(frozen=True)
class Threshold:
    """node's quantity above/below value, held continuously for for_s seconds."""
    node: str
    quantity: str
    direction: Literal["above", "below"]
    value: float
    for_s: float = 0.0
    max_age_s: float = DEFAULT_MAX_AGE_S  # an older latest sample is not trusted

    def met_by(self, value: float) -> bool:
        return value > self.value if self.direction == "above" else value < self.value


@dataclass(frozen=True)
class DailyAt:
    """Once a day at a local wall-clock time, if an evaluation falls within late_s of it."""
    at: time
    late_s: float = DEFAULT_LATE_S


@dataclass(frozen=True)
class Every:
    """At the first chance, then again once `minutes` have passed since the rule last fired."""
    minutes: int


Schedule = DailyAt | Every


@dataclass(frozen=True)
class Window:
    """Local wall-clock times [start, end), across midnight when end <= start; `days` are the
    weekdays (0 = Monday) on which the window opens. None: all day / every day."""
    start: time | None = None
    end: time | None = None
    days: frozenset[int] | None = None


# ---- actions ----

@dataclass(frozen=True)
class Irrigate:
    node: str
    seconds: int


@dataclass(frozen=True)
class Diffuse:
    node: str
    channel: int
    duty_pct: int
    seconds: int


@dataclass(frozen=True)
class Setpoint:
    node: str
    channel: int
    target: float


@dataclass(frozen=True)
class Alert:
    message: str
    severity: str = "warning"
    kind: Literal["rule", "budget"] = "rule"  # "budget": an irrigate refused by the budget


Action = Irrigate | Diffuse | Setpoint | Alert


@dataclass(frozen=True)
class Rule:
    name: str
    action: Action
    conditions: tuple[Threshold, ...] = ()  # all must hold
    schedule: Schedule | None = None
    window: Window | None = None
    cooldown_s: float = 0.0
    enabled: bool = True
    description: str = ""


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()  # evaluated in this order (the file's), sharing the budget
    water_budget_l_per_day: float | None = None  # None: the rules' water is not limited here
    flow_l_per_min: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    ask_settle_s: float = ASK_SETTLE_S

    def rule(self, name: str) -> Rule:
        return next(rule for rule in self.rules if rule.name == name)


# ---- what the site looks like now ----

class Availability(enum.StrEnum):
    ONLINE = "online"
    STALE = "stale"  # no LWT, but nothing heard for longer than the node's stale interval
    OFFLINE = "offline"


@dataclass(frozen=True)
class Sample:
    value: float
    at: datetime  # aware: when the node measured it

    def __post_init__(self) -> None:
        require_aware("Sample.at", self.at)


@dataclass(frozen=True)
class NodeState:
    availability: Availability
    # quantity -> samples oldest first: at least the latest; give every sample since the
    # previous evaluation so that a short excursion across a threshold is not missed.
    readings: Mapping[str, tuple[Sample, ...]] = field(
        default_factory=lambda: MappingProxyType({}))
    water_today_l: float = 0.0  # what the node reports it used today (local date), any cause
    water_as_of: datetime | None = None  # the moment that figure is complete up to

    def __post_init__(self) -> None:
        if self.water_as_of is not None:
            require_aware("NodeState.water_as_of", self.water_as_of)


@dataclass(frozen=True)
class SiteState:
    nodes: Mapping[str, NodeState] = field(default_factory=lambda: MappingProxyType({}))


# ---- what rules remember between evaluations ----

@dataclass(frozen=True)
class ConditionState:
    since: datetime | None = None  # UTC: first sample of the current run meeting the condition
    last_sample_at: datetime | None = None  # UTC: newest sample already taken into account
    last_value: float | None = None  # that sample's value


@dataclass(frozen=True)
class RuleState:
    definition: Rule | None = None  # conditions restart when the rule's definition changes
    conditions: tuple[ConditionState, ...] = ()
    last_fired: datetime | None = None  # UTC; a budget refusal counts as firing
    last_slot: date | None = None  # DailyAt: the local date whose run has happened


@dataclass(frozen=True)
class WaterAsk:
    rule: str
    node: str
    litres: float
    start: datetime  # UTC
    end: datetime  # UTC: start + the run's seconds


@dataclass(frozen=True)
class RuleMemory:
    rules: Mapping[str, RuleState] = field(default_factory=lambda: MappingProxyType({}))
    day: date | None = None  # the local date `asks` belong to
    asks: tuple[WaterAsk, ...] = ()  # irrigate asks emitted on `day`

    @property
    def asked_today_l(self) -> float:
        return sum(ask.litres for ask in self.asks)


@dataclass(frozen=True)
class Decision:
    rule: str
    action: Action
    reason: str  # for people: the readings, times and limits behind it
    at: datetime  # the `now` of the evaluation

    @property
    def requested_by(self) -> str:
        """For the audit log."""
        return f"rule:{self.rule}"
