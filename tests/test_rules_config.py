"""Reading [rules] from the gateway's TOML: every example in docs/rules.md parses, and every
mistake is refused with its dotted key and a fix."""

from __future__ import annotations

import re
import tomllib
from datetime import time
from pathlib import Path
from typing import Any

import pytest

from edge_gateway.configerror import ConfigError
from edge_gateway.rules import (
    Alert,
    DailyAt,
    Diffuse,
    Every,
    Irrigate,
    Rule,
    RuleSet,
    Setpoint,
    Threshold,
    Window,
    parse_rules,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "rules.md"
NODES = ("bed1", "bed2", "drone1", "drone2")


def rules_of(text: str, **kwargs: Any) -> RuleSet:
    return parse_rules(tomllib.loads(text)["rules"], **kwargs)


def refused(text: str, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        rules_of(text, **kwargs)
    return caught.value


def test_every_example_in_the_docs_parses() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 3
    names = []
    for block in blocks:
        ruleset = rules_of(block, known_nodes=NODES, flow_l_per_min={"bed1": 2.0, "bed2": 1.5})
        names += [rule.name for rule in ruleset.rules]
    assert names == ["water_bed1", "morning_top_up", "night_mist", "show_scent",
                     "aroma_evening", "tank_low_alert"]


def test_a_full_rule_set() -> None:
    ruleset = rules_of("""
        [rules]
        water_budget_l_per_day = 120

        [rules.water_bed1]
        description = "Water bed 1"
        when = { node = "bed1", quantity = "soil_moisture", below = 30, for_s = 600 }
        only = { from = "22:00", to = "06:00", days = ["fri", "mon"] }
        action = { type = "irrigate", node = "bed1", seconds = 120 }
        cooldown_s = 3600

        [rules.both]
        when = [{ at = 06:15:00, late_s = 120 },
                { node = "drone1", quantity = "voc_index", above = 200.5, max_age_s = 60 }]
        action = { type = "diffuse", node = "drone1", channel = 2, duty_pct = 40, seconds = 30 }

        [rules.setp]
        enabled = false
        when = { every_min = 15 }
        only = { days = ["sun"] }
        action = { type = "setpoint", node = "drone2", channel = 1, target = 150 }

        [rules.warn]
        when = { node = "bed2", quantity = "soil_temperature_2", below = 1 }
        cooldown_s = 0
        action = { type = "alert", message = "frost" }
    """, flow_l_per_min={"bed1": 2.0})
    assert ruleset == RuleSet((
        Rule("water_bed1", Irrigate("bed1", 120),
             (Threshold("bed1", "soil_moisture", "below", 30.0, 600.0),), None,
             Window(time(22), time(6), frozenset({4, 0})), 3600.0, True, "Water bed 1"),
        Rule("both", Diffuse("drone1", 2, 40, 30),
             (Threshold("drone1", "voc_index", "above", 200.5, 0.0, 60.0),),
             DailyAt(time(6, 15), 120.0), None, 0.0),
        Rule("setp", Setpoint("drone2", 1, 150.0), (), Every(15), Window(days=frozenset({6})),
             0.0, enabled=False),
        Rule("warn", Alert("frost", "warning"),
             (Threshold("bed2", "soil_temperature_2", "below", 1.0),), cooldown_s=0.0),
    ), 120.0, {"bed1": 2.0})


def test_an_empty_section_is_no_rules() -> None:
    assert parse_rules({}) == RuleSet()


RULE = """
[rules.r]
cooldown_s = 60
when = { node = "bed1", quantity = "soil_moisture", below = 30 }
action = { type = "irrigate", node = "bed1", seconds = 120 }
"""


def variant(old: str, new: str) -> str:
    assert old in RULE
    return RULE.replace(old, new)


@pytest.mark.parametrize(("text", "key", "problem", "fix"), [
    # the section and the rule
    ("[rules]\nwater_budget = 5\n" + RULE, "rules.water_budget", "neither a rule nor a setting",
     "did you mean 'water_budget_l_per_day'?"),
    ("[rules]\nwater_budget_l_per_day = 0\n" + RULE, "rules.water_budget_l_per_day",
     "must be more than 0", "water_budget_l_per_day = 200"),
    ("[rules]\nwater_budget_l_per_day = nan\n" + RULE, "rules.water_budget_l_per_day",
     "must be a number", "= 200"),
    (RULE.replace("[rules.r]", "[rules.Bad-Name]"), "rules.Bad-Name", "not a valid rule name",
     "a-z"),
    (variant("cooldown_s = 60", "cooldown = 60"), "rules.r.cooldown", "unknown key",
     "did you mean 'cooldown_s'?"),
    (variant("cooldown_s = 60\n", ""), "rules.r.cooldown_s", "missing",
     "add cooldown_s = 3600"),
    (variant("cooldown_s = 60", "cooldown_s = -1"), "rules.r.cooldown_s", "at least 0", ""),
    (variant("cooldown_s = 60", "cooldown_s = true"), "rules.r.cooldown_s", "must be a number",
     ""),
    (RULE + "enabled = 1\n", "rules.r.enabled", "true or false", ""),
    (RULE + 'description = ""\n', "rules.r.description", "non-empty text", ""),
    (variant('when = { node = "bed1", quantity = "soil_moisture", below = 30 }\n', ""),
     "rules.r.when", "missing", "add when ="),
    (variant('when = { node = "bed1", quantity = "soil_moisture", below = 30 }', "when = 5"),
     "rules.r.when", "must be a table or a list of tables", "[[rules.<name>.when]]"),
    (variant('when = { node = "bed1", quantity = "soil_moisture", below = 30 }', "when = []"),
     "rules.r.when", "must be a table or a list of tables", ""),
    # triggers
    (variant('quantity = "soil_moisture", below = 30', 'below = 30'), "rules.r.when",
     "says nothing that triggers the rule", "exactly one of: quantity"),
    (variant('below = 30 }', 'below = 30, at = "06:00" }'), "rules.r.when",
     "mixes quantity and at", "exactly one of"),
    (variant('below = 30 }', 'below = 30, late_s = 5 }'), "rules.r.when.late_s",
     "unknown key", "late_s belongs to a trigger with at"),
    (variant('quantity = "soil_moisture"', 'quantity = "soil_moist"'), "rules.r.when.quantity",
     "'soil_moist' is not a quantity", "did you mean 'soil_moisture'?"),
    (variant('quantity = "soil_moisture"', 'quantity = "soil_temperature_9"'),
     "rules.r.when.quantity", "not a quantity", "_<n> for channels"),
    (variant('node = "bed1", quantity', 'node = "Bed 1", quantity'), "rules.r.when.node",
     "not a node name", "[nodes]"),
    (variant('node = "bed1", quantity', 'quantity'), "rules.r.when.node", "missing", ""),
    (variant("below = 30", "above = 30, below = 20"), "rules.r.when", "both above and below",
     "two [[...when]] tables for a band"),
    (variant("below = 30", "below = '30'"), "rules.r.when.below", "must be a number", ""),
    (variant("below = 30", "below = 30, for_s = -5"), "rules.r.when.for_s", "at least 0", ""),
    (variant("below = 30", "below = 30, max_age_s = 0"), "rules.r.when.max_age_s",
     "more than 0", ""),
    (variant('node = "bed1", quantity = "soil_moisture", below = 30', 'at = "6:30"'),
     "rules.r.when.at", "not a time of day", '"HH:MM"'),
    (variant('node = "bed1", quantity = "soil_moisture", below = 30', 'at = "24:00"'),
     "rules.r.when.at", "not a time of day", ""),
    (variant('node = "bed1", quantity = "soil_moisture", below = 30',
             'at = "06:30", late_s = 50000'), "rules.r.when.late_s", "at most 43200", ""),
    (variant('node = "bed1", quantity = "soil_moisture", below = 30', "every_min = 0"),
     "rules.r.when.every_min", "whole number from 1", ""),
    (variant('node = "bed1", quantity = "soil_moisture", below = 30', "every_min = 1.5"),
     "rules.r.when.every_min", "whole number", ""),
    (variant('when = { node = "bed1", quantity = "soil_moisture", below = 30 }',
             'when = [{ at = "06:00" }, { every_min = 5 }]'), "rules.r.when[2]",
     "a second schedule", "another rule"),
    (variant('when = { node = "bed1", quantity = "soil_moisture", below = 30 }',
             'when = [{ at = "06:00" }, { node = "bed1", quantity = "pump", above = 0, x = 1 }]'),
     "rules.r.when[2].x", "unknown key", "known keys here: node, quantity"),
    # windows
    (RULE + 'only = { from = "06:00" }\n', "rules.r.only.to", "missing", "give both"),
    (RULE + 'only = { from = "06:00", to = "06:00" }\n', "rules.r.only.to",
     "same time as from", ""),
    (RULE + "only = {}\n", "rules.r.only", "is empty", ""),
    (RULE + 'only = { days = ["mo"] }\n', "rules.r.only.days", "'mo' is not a weekday",
     "did you mean 'mon'?"),
    (RULE + "only = { days = [] }\n", "rules.r.only.days", "list of weekdays", ""),
    (RULE + 'only = { from = "06:00", to = "08:00", until = "x" }\n', "rules.r.only.until",
     "unknown key", "from, to, days"),
    (RULE + 'only = "mornings"\n', "rules.r.only", "must be a table", ""),
    # actions
    (variant("action = {", "actio = {"), "rules.r.actio", "unknown key",
     "did you mean 'action'?"),
    (variant('type = "irrigate"', 'type = "irigate"'), "rules.r.action.type",
     "'irrigate' is not an action".replace("'irrigate'", "'irigate'"),
     "did you mean 'irrigate'?"),
    (variant("seconds = 120", "seconds = 0"), "rules.r.action.seconds",
     "whole number from 1 to 3600", ""),
    (variant("seconds = 120", "seconds = 3601"), "rules.r.action.seconds", "to 3600", ""),
    (variant("seconds = 120", "seconds = 120, duty_pct = 5"), "rules.r.action.duty_pct",
     "unknown key", "node, seconds"),
    (variant('type = "irrigate", node = "bed1", seconds = 120',
             'type = "diffuse", node = "drone1", channel = 5, duty_pct = 40, seconds = 5'),
     "rules.r.action.channel", "from 1 to 4", ""),
    (variant('type = "irrigate", node = "bed1", seconds = 120',
             'type = "diffuse", node = "drone1", channel = 1, duty = 40, seconds = 5'),
     "rules.r.action.duty", "unknown key", "did you mean 'duty_pct'?"),
    (variant('type = "irrigate", node = "bed1", seconds = 120',
             'type = "diffuse", node = "drone1", channel = 1, duty_pct = 101, seconds = 5'),
     "rules.r.action.duty_pct", "from 0 to 100", ""),
    (variant('type = "irrigate", node = "bed1", seconds = 120',
             'type = "setpoint", node = "drone1", channel = 1, target = -1'),
     "rules.r.action.target", "at least 0", ""),
    (variant('type = "irrigate", node = "bed1", seconds = 120',
             'type = "alert", message = "x", severity = "urgent"'),
     "rules.r.action.severity", "not one of info, warning, critical", ""),
    (variant('type = "irrigate", node = "bed1", seconds = 120', 'type = "alert"'),
     "rules.r.action.message", "missing", ""),
    (variant('type = "irrigate", node = "bed1", seconds = 120',
             'type = "alert", message = "' + "x" * 201 + '"'),
     "rules.r.action.message", "at most 200 characters", ""),
])
def test_mistakes_are_refused_with_key_and_fix(text: str, key: str, problem: str,
                                               fix: str) -> None:
    error = refused(text)
    assert error.key == key
    assert problem in error.problem
    assert fix in error.fix
    assert str(error).startswith(f"{key}: ")


def test_nodes_must_be_known_when_the_names_are_given() -> None:
    error = refused(RULE, known_nodes=("bed2", "drone1"))
    assert (error.key, error.problem) == ("rules.r.when.node", "no node 'bed1' in [nodes]")
    assert "did you mean 'bed2'?" in error.fix
    assert rules_of(RULE, known_nodes=("bed1",)).rules[0].name == "r"


def test_with_a_budget_irrigated_nodes_need_a_flow_rate() -> None:
    text = "[rules]\nwater_budget_l_per_day = 50\n" + RULE
    error = refused(text, flow_l_per_min={"bed2": 2.0})
    assert error.key == "rules.r.action.node"
    assert "no flow rate" in error.problem and "flow_l_per_min" in error.fix
    assert rules_of(text).flow_l_per_min == {}  # not checked without the rates
    assert rules_of(RULE, flow_l_per_min={}).water_budget_l_per_day is None
    with pytest.raises(ValueError, match=r"flow_l_per_min\['bed1'\]"):
        rules_of(text, flow_l_per_min={"bed1": 0.0})


def test_the_section_key_prefixes_every_message() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules({"r": {"when": {"every_min": 5}}}, key="site_b.rules")
    assert caught.value.key == "site_b.rules.r.action"


def test_a_section_from_a_read_only_mapping() -> None:
    """The config loader hands over its sections as MappingProxyType."""
    from types import MappingProxyType
    table = tomllib.loads(RULE)["rules"]
    assert parse_rules(MappingProxyType(table)).rules[0].action == Irrigate("bed1", 120)
