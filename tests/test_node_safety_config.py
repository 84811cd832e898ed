"""The node config's safety and autonomy sections, the limits the node builds its safety layer
with, and the site e-stop messages as the node applies them (sensornode.node_safety)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sensornode import config, node_safety, protocol
from sensornode.safety import Safety, SafetyConfigError

BASE: dict[str, Any] = {"site": "t", "node": "bed-1"}
PROFILE = {"name": "tomatoes", "moisture_low": 30, "moisture_high": 45, "soak_s": 900,
           "max_run_s": 60, "budget_l_per_day": 20, "flow_l_per_min": 2}
TS = 1795300000.0


def test_defaults_have_empty_safety_and_no_autonomy() -> None:
    cfg = config.validate(dict(BASE))
    assert cfg["safety"] == {} and cfg["autonomy"] == {}


@pytest.mark.parametrize(("given", "message"), [
    ({"safety": {"failsafe_s": 1}}, "safety.failsafe_s: must be a whole number from 5 to 86400"),
    ({"safety": {"pumps": {"pump": {"max_on_s": 0}}}},
     "safety.pumps.pump.max_on_s: must be a whole number from 1 to 3600, got 0"),
    ({"safety": {"pump": {}}}, "safety.pump: unknown field; known fields here: failsafe_s"),
    ({"safety": []}, "safety: must be an object"),
    ({"autonomy": {"name": "tomatoes"}}, "autonomy.budget_l_per_day: missing"),
    ({"autonomy": dict(PROFILE, moisture_high=20)},
     "autonomy.moisture_high: must be above moisture_low (30)"),
    ({"role": "drone", "autonomy": PROFILE}, "autonomy: only a garden node waters by itself"),
])
def test_bad_safety_and_autonomy_sections_are_named_with_their_fix(
    given: dict[str, Any], message: str
) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.validate(dict(BASE, **given))
    assert message in str(info.value)


def test_limits_come_from_the_safety_section_then_the_older_fields() -> None:
    cfg = config.validate(dict(BASE, irrigation={"max_run_s": 120}, autonomy=PROFILE,
                               safety={"failsafe_s": 30,
                                       "pumps": {"pump": {"min_off_s": 5}}}))
    limits = node_safety.limits_for(cfg, {"pumps": ["pump"], "diffusers": []})
    assert limits["failsafe_s"] == 30
    assert limits["pumps"]["pump"] == {"max_on_s": 120, "min_off_s": 5, "flow_l_per_min": 2,
                                       "daily_budget_l": 20, "dry_input": ""}
    drone = config.validate(dict(BASE, role="drone",
                                 diffusers={"max_duty_pct": 60, "max_run_s": 90}))
    limits = node_safety.limits_for(drone, {"pumps": [], "diffusers": ["diffuser_1"]},
                                    {"diffuser_1": {"tank_input": "tank_switch_1"}})
    assert limits["diffusers"]["diffuser_1"] == {
        "max_duty_pct": 60, "max_on_s": 90, "min_off_s": 0, "tank_input": "tank_switch_1",
        "armed_input": "armed"}


def test_limits_for_an_actuator_the_board_lacks_are_refused() -> None:
    cfg = config.validate(dict(BASE, safety={"pumps": {"pump_2": {"max_on_s": 10}}}))
    with pytest.raises(SafetyConfigError, match=re.escape(
            "safety.pumps.pump_2: this board has no such actuator; it has: pump")):
        node_safety.limits_for(cfg, {"pumps": ["pump"], "diffusers": []})


def make_safety(tmp_path: Path) -> Safety:
    cfg = config.validate(dict(BASE))
    limits = node_safety.limits_for(cfg, {"pumps": ["pump"], "diffusers": []})
    return Safety(limits, str(tmp_path / "safety.json"), wall=lambda: TS + 10)


def test_site_estop_messages_latch_and_reset_only_what_the_site_latched(
    tmp_path: Path
) -> None:
    safety = make_safety(tmp_path)
    logged: list[str] = []

    def log(*parts: object) -> None:
        logged.append(" ".join(str(p) for p in parts))

    assert node_safety.site_estop(safety, b"", log) is None  # deleted: no news
    assert not safety.estop_by
    assert node_safety.site_estop(safety, protocol.encode_estop(True, "button", TS, "bed 3"),
                                  log) is True
    assert safety.estop_by == "site ts=1795300000 by button: bed 3"
    older_reset = protocol.encode_estop(False, "alice", TS - 5)
    assert node_safety.site_estop(safety, older_reset, log) is False
    assert safety.estop_by, "a reset older than the e-stop must not clear it"
    assert node_safety.site_estop(safety, protocol.encode_estop(False, "alice", TS + 5),
                                  log) is False
    assert safety.estop_by == ""
    safety.estop("cmd c1")
    node_safety.site_estop(safety, protocol.encode_estop(False, "alice", TS + 9), log)
    assert safety.estop_by == "cmd c1", "the site's reset does not clear a command's e-stop"
    safety.reset_estop("cmd c2")
    assert node_safety.site_estop(safety, b'{"v": 1, "latched": 1}', log) is True
    assert safety.estop_by == "site unreadable e-stop message"
    assert logged[-1].startswith("unreadable site e-stop taken as latched: estop.latched")


def test_estop_payload_round_trips_and_refuses_what_is_not_one() -> None:
    payload = protocol.encode_estop(True, "button", TS + 0.25, "child in bed 3")
    assert protocol.decode_estop(payload) == {"latched": True, "by": "button",
                                              "ts": TS + 0.25, "reason": "child in bed 3"}
    with pytest.raises(protocol.ProtocolError, match=re.escape("estop.reason: must be at most")):
        protocol.encode_estop(True, "button", TS, "x" * 201)
    with pytest.raises(protocol.ProtocolError, match=re.escape("estop.ts: must be Unix time")):
        protocol.decode_estop(b'{"v":1,"latched":false,"by":"a","ts":5}')
