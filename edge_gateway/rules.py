"""Automation rules: threshold, time-window and schedule triggers that ask nodes to act.

Rules are pure: `parse_rules` turns the [rules] section of the gateway config into a RuleSet,
and `evaluate(rules, state, memory, now)` says what the rules ask for, given what the site
looks like and what the previous evaluation remembered. The daemon builds the SiteState, keeps
the RuleMemory between calls and sends the decisions as commands (each node's safety layer
still decides what actually happens: rules ask, they never bypass it). docs/rules.md has the
format and the semantics.

The parts: rules_model (the data), rules_config (reading the TOML), rules_eval (evaluating).
"""

from __future__ import annotations

from edge_gateway.rules_config import parse_rules
from edge_gateway.rules_eval import due_slot, evaluate, in_window, site_water_used_l
from edge_gateway.rules_model import (
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
)

__all__ = [
    "Action", "Alert", "Availability", "DailyAt", "Decision", "Diffuse", "Every", "Irrigate",
    "NodeState", "Rule", "RuleMemory", "RuleSet", "Sample", "Setpoint", "SiteState",
    "Threshold", "Window", "due_slot", "evaluate", "in_window", "parse_rules",
    "site_water_used_l",
]
