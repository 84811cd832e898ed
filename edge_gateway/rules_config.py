"""Reading the [rules] section of the gateway's TOML file into a `RuleSet`.

The config loader hands over the section as a mapping; every key is checked here and the
first mistake is raised as a ConfigError naming its dotted key (`rules.<name>.when[2].for_s`,
entries of a list counted from 1) and the fix. The format is described in docs/rules.md.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Mapping
from datetime import time
from types import MappingProxyType
from typing import Any, NoReturn

from sensornode import protocol

from edge_gateway.configerror import ConfigError
from edge_gateway.rules_model import (
    DEFAULT_LATE_S,
    DEFAULT_MAX_AGE_S,
    SEVERITIES,
    WEEKDAYS,
    Action,
    Alert,
    DailyAt,
    Diffuse,
    Every,
    Irrigate,
    Rule,
    RuleSet,
    Schedule,
    Setpoint,
    Threshold,
    Window,
)

SETTINGS = ("water_budget_l_per_day",)
RULE_KEYS = ("description", "enabled", "cooldown_s", "when", "only", "action")
THRESHOLD_KEYS = ("node", "quantity", "above", "below", "for_s", "max_age_s")
DAILY_KEYS = ("at", "late_s")
EVERY_KEYS = ("every_min",)
# The key that says which kind of trigger a `when` table is.
TRIGGER_KINDS = {"quantity": THRESHOLD_KEYS, "at": DAILY_KEYS, "every_min": EVERY_KEYS}
WINDOW_KEYS = ("from", "to", "days")
ACTION_KEYS = {
    "irrigate": ("type", "node", "seconds"),
    "diffuse": ("type", "node", "channel", "duty_pct", "seconds"),
    "setpoint": ("type", "node", "channel", "target"),
    "alert": ("type", "message", "severity"),
}
HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
MAX_MESSAGE = 200
MAX_DESCRIPTION = 200
MAX_EVERY_MIN = 7 * 24 * 60
MAX_LATE_S = 12 * 3600  # later than that, a missed run is rather yesterday's than today's


def parse_rules(
    table: Mapping[str, Any],
    key: str = "rules",
    *,
    known_nodes: Collection[str] | None = None,
    flow_l_per_min: Mapping[str, float] | None = None,
) -> RuleSet:
    """The [rules] section (`key` is its dotted path, for messages) as a RuleSet.

    known_nodes: the [nodes] names, so a rule naming another node is refused (None: not
    checked). flow_l_per_min: each irrigating node's pump flow, from its plant profile; with a
    water budget, an irrigate rule for a node without one is refused (None: not checked here;
    `evaluate` then refuses such asks with a budget alert).
    """
    section = _Table(key, table)
    budget: float | None = None
    rules: list[Rule] = []
    for name, value in table.items():
        if isinstance(value, Mapping):
            rules.append(_rule(_Table(section.path(name), value), name, known_nodes))
        elif name == "water_budget_l_per_day":
            budget = section.number(name, low=0.0, exclusive=True, example="200")
        else:
            section.fail(name, "neither a rule nor a setting of [rules]",
                         f"{_suggest(name, SETTINGS)}write a rule as a [{key}.<name>] table; "
                         f"settings: {', '.join(SETTINGS)}")
    if budget is not None and flow_l_per_min is not None:
        for rule in rules:
            action = rule.action
            if isinstance(action, Irrigate) and action.node not in flow_l_per_min:
                raise ConfigError(
                    f"{key}.{rule.name}.action.node",
                    f"node {action.node!r} has no flow rate, so its water cannot be counted "
                    f"against {key}.water_budget_l_per_day",
                    "give the node a plant profile with flow_l_per_min")
    flows = {} if flow_l_per_min is None else dict(flow_l_per_min)
    for node, flow in flows.items():
        if not (isinstance(flow, int | float) and math.isfinite(flow) and flow > 0):
            raise ValueError(f"flow_l_per_min[{node!r}]: must be a number above 0, got {flow!r}")
    return RuleSet(tuple(rules), budget, MappingProxyType(flows))


def _rule(table: _Table, name: str, known_nodes: Collection[str] | None) -> Rule:
    if not protocol.valid_name(name):
        raise ConfigError(table.key, f"{name!r} is not a valid rule name",
                          "use 1-32 characters of a-z, 0-9, '-' or '_'")
    table.only_keys(RULE_KEYS)
    when = table.require("when", '{ node = "bed1", quantity = "soil_moisture", below = 30, '
                                 'for_s = 600 }')
    entries: list[_Table]
    if isinstance(when, Mapping):
        entries = [_Table(table.path("when"), when)]
    elif isinstance(when, list) and when and all(isinstance(entry, Mapping) for entry in when):
        entries = [_Table(f"{table.path('when')}[{i}]", entry) for i, entry in enumerate(when, 1)]
    else:
        table.fail("when", f"must be a table or a list of tables, got {_describe(when)}",
                   "write when = { ... }, or [[rules.<name>.when]] tables that must all hold")
    conditions: list[Threshold] = []
    schedule: Schedule | None = None
    for entry in entries:
        trigger = _trigger(entry, known_nodes)
        if isinstance(trigger, Threshold):
            conditions.append(trigger)
        elif schedule is not None:
            raise ConfigError(entry.key, "a second schedule in one rule",
                              "give a rule at most one `at` or `every_min`; write another rule "
                              "for another schedule")
        else:
            schedule = trigger
    cooldown_s = table.number("cooldown_s", low=0.0, example="3600",
                              default=0.0 if schedule is not None else None,
                              missing_fix="add cooldown_s = 3600 (how long after firing the "
                                          "rule waits before it may fire again)")
    window = _window(_Table(table.path("only"), table.values["only"])) if table.has(
        "only") else None
    action = _action(_Table(table.path("action"), table.require(
        "action", '{ type = "irrigate", node = "bed1", seconds = 120 }')), known_nodes)
    return Rule(
        name=name, action=action, conditions=tuple(conditions), schedule=schedule,
        window=window, cooldown_s=cooldown_s, enabled=table.boolean("enabled", True),
        description=table.text("description", "", MAX_DESCRIPTION),
    )


def _trigger(table: _Table, known_nodes: Collection[str] | None) -> Threshold | Schedule:
    kinds = [kind for kind in TRIGGER_KINDS if table.has(kind)]
    if len(kinds) != 1:
        problem = ("says nothing that triggers the rule" if not kinds
                   else f"mixes {' and '.join(kinds)}")
        raise ConfigError(table.key, problem,
                          "give exactly one of: quantity (a threshold, with node, above or "
                          "below, for_s), at = \"HH:MM\" (daily) or every_min = N; combine "
                          "several with a list of [[...when]] tables")
    kind = kinds[0]
    table.only_keys(TRIGGER_KINDS[kind],
                    other_kinds={k: v for k, v in TRIGGER_KINDS.items() if k != kind})
    if kind == "at":
        return DailyAt(table.clock_time("at"),
                       table.number("late_s", low=0.0, exclusive=True, high=MAX_LATE_S,
                                    example="600", default=DEFAULT_LATE_S))
    if kind == "every_min":
        return Every(table.integer("every_min", 1, MAX_EVERY_MIN, example="30"))
    node = table.node("node", known_nodes)
    quantity = table.text("quantity", None, 64)
    if not protocol.known_quantity(quantity):
        table.fail("quantity", f"{quantity!r} is not a quantity nodes report",
                   f"{_suggest(quantity, protocol.QUANTITIES)}use one of "
                   f"{', '.join(sorted(protocol.QUANTITIES))} (with _<n> for channels: "
                   f"{', '.join(protocol.MULTI_QUANTITIES)})")
    directions = [d for d in ("above", "below") if table.has(d)]
    if len(directions) != 1:
        raise ConfigError(table.key, "needs exactly one of above or below" if not directions
                          else "has both above and below",
                          "write e.g. below = 30 (the rule triggers while the value is under "
                          "30); use two [[...when]] tables for a band")
    direction = directions[0]
    return Threshold(
        node=node, quantity=quantity,
        direction="above" if direction == "above" else "below",
        value=table.number(direction, example="30"),
        for_s=table.number("for_s", low=0.0, example="600", default=0.0),
        max_age_s=table.number("max_age_s", low=0.0, exclusive=True, example="1800",
                               default=DEFAULT_MAX_AGE_S),
    )


def _window(table: _Table) -> Window:
    table.only_keys(WINDOW_KEYS)
    if not table.values:
        table.fail("", "is empty", 'give from = "HH:MM" and to = "HH:MM", or days, or drop it')
    has_from, has_to = table.has("from"), table.has("to")
    if has_from != has_to:
        missing = "to" if has_from else "from"
        table.fail(missing, "missing", f'give both from and to, e.g. {missing} = "06:00"')
    start = table.clock_time("from") if has_from else None
    end = table.clock_time("to") if has_to else None
    if start is not None and start == end:
        table.fail("to", "is the same time as from, so the window is empty or the whole day",
                   "give two different times, or leave out from and to for the whole day")
    days: frozenset[int] | None = None
    if table.has("days"):
        value = table.values["days"]
        if not isinstance(value, list) or not value or not all(
                isinstance(day, str) for day in value):
            table.fail("days", f"must be a list of weekdays, got {_describe(value)}",
                       'write e.g. days = ["mon", "wed", "fri"]')
        for day in value:
            if day not in WEEKDAYS:
                table.fail("days", f"{day!r} is not a weekday",
                           f"{_suggest(day, WEEKDAYS)}use {', '.join(WEEKDAYS)}")
        days = frozenset(WEEKDAYS.index(day) for day in value)
    return Window(start, end, days)


def _action(table: _Table, known_nodes: Collection[str] | None) -> Action:
    kind = table.text("type", None, 16)
    if kind not in ACTION_KEYS:
        table.fail("type", f"{kind!r} is not an action",
                   f"{_suggest(kind, ACTION_KEYS)}use one of {', '.join(ACTION_KEYS)}")
    table.only_keys(ACTION_KEYS[kind])
    if kind == "alert":
        return Alert(table.text("message", None, MAX_MESSAGE),
                     table.choice("severity", SEVERITIES, "warning"))
    node = table.node("node", known_nodes)
    if kind == "irrigate":
        return Irrigate(node, table.integer("seconds", 1, protocol.MAX_IRRIGATE_S, "120"))
    channel = table.integer("channel", 1, protocol.DIFFUSER_CHANNELS, "1")
    if kind == "setpoint":
        return Setpoint(node, channel, table.number("target", low=0.0, example="150"))
    return Diffuse(node, channel, table.integer("duty_pct", 0, 100, "40"),
                   table.integer("seconds", 1, protocol.MAX_DIFFUSE_S, "60"))


class _Table:
    """One TOML table at dotted path `key`; each getter checks its value or raises."""

    def __init__(self, key: str, value: object) -> None:
        self.key = key
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a table, got {_describe(value)}",
                              f"write it as a [{key}] table or an inline {{ ... }} table")
        self.values: Mapping[str, Any] = value

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if name else self.key

    def has(self, name: str) -> bool:
        return name in self.values

    def fail(self, name: str, problem: str, fix: str) -> NoReturn:
        raise ConfigError(self.path(name), problem, fix)

    def only_keys(self, known: Collection[str],
                  other_kinds: Mapping[str, Collection[str]] | None = None) -> None:
        for name in self.values:
            if name in known:
                continue
            belongs = [kind for kind, keys in (other_kinds or {}).items() if name in keys]
            hint = f"{name} belongs to a trigger with {belongs[0]}; " if belongs else ""
            self.fail(name, "unknown key", f"{hint}{_suggest(name, known)}known keys here: "
                                           f"{', '.join(known)}")

    def require(self, name: str, example: str) -> Any:
        if name not in self.values:
            self.fail(name, "missing", f"add {name} = {example}")
        return self.values[name]

    def text(self, name: str, default: str | None, max_len: int) -> str:
        if name not in self.values and default is not None:
            return default
        value = self.require(name, '"..."')
        if not isinstance(value, str) or not value.strip() or len(value) > max_len:
            self.fail(name, f"must be non-empty text of at most {max_len} characters, got "
                            f"{_describe(value)}", f'write e.g. {name} = "..."')
        return value

    def choice(self, name: str, options: Collection[str], default: str) -> str:
        value = self.text(name, default, 32)
        if value not in options:
            self.fail(name, f"{value!r} is not one of {', '.join(options)}",
                      f"{_suggest(value, options)}use one of {', '.join(options)}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.values.get(name, default)
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, got {_describe(value)}",
                      f"write {name} = true or {name} = false")
        return value

    def node(self, name: str, known_nodes: Collection[str] | None) -> str:
        value = self.require(name, '"bed1"')
        if not protocol.valid_name(value):
            self.fail(name, f"{_describe(value)} is not a node name",
                      "use the node's name from [nodes]: 1-32 characters of a-z, 0-9, - or _")
        if known_nodes is not None and value not in known_nodes:
            self.fail(name, f"no node {value!r} in [nodes]",
                      f"{_suggest(value, known_nodes)}use one of "
                      f"{', '.join(sorted(known_nodes)) or '(none: add a [nodes.<name>])'}")
        return str(value)

    def integer(self, name: str, low: int, high: int, example: str) -> int:
        value = self.require(name, example)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(name, f"must be a whole number from {low} to {high}, got "
                            f"{_describe(value)}", f"write e.g. {name} = {example}")
        return value

    def number(self, name: str, *, example: str, low: float | None = None,
               exclusive: bool = False, high: float | None = None,
               default: float | None = None,
               missing_fix: str | None = None) -> float:
        if name not in self.values:
            if default is not None:
                return default
            self.fail(name, "missing", missing_fix or f"add {name} = {example}")
        value = self.values[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            self.fail(name, f"must be a number, got {_describe(value)}",
                      f"write e.g. {name} = {example}")
        if low is not None and (value <= low if exclusive else value < low):
            bound = f"more than {low:g}" if exclusive else f"at least {low:g}"
            self.fail(name, f"must be {bound}, got {value!r}", f"write e.g. {name} = {example}")
        if high is not None and value > high:
            self.fail(name, f"must be at most {high:g}, got {value!r}",
                      f"write e.g. {name} = {example}")
        return float(value)

    def clock_time(self, name: str) -> time:
        """"HH:MM" text, or a TOML local time (06:30:00)."""
        value = self.require(name, '"06:30"')
        if isinstance(value, time) and value.tzinfo is None:
            return value
        match = HHMM.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            self.fail(name, f"{_describe(value)} is not a time of day",
                      f'write 24-hour local time as "HH:MM", e.g. {name} = "06:30"')
        return time(int(match.group(1)), int(match.group(2)))


def _suggest(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _describe(value: object) -> str:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    kinds = {str: "text", bool: "true/false", int: "a whole number", float: "a number",
             list: "a list", dict: "a table"}
    return f"{shown} ({kinds.get(type(value), type(value).__name__)})"
