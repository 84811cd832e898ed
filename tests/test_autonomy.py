"""Local autonomy of a garden node (firmware/sensornode/autonomy.py): waters by its profile
only while the gateway is unreachable, within its daily budget, never during a soak, and keeps
a log to report. Properties over random sequences (hypothesis) are checked against the
requests themselves, written independently of the module's own bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sensornode.autonomy import DAY_S, GardenAutonomy, check_profile

PROFILE = {"name": "tomatoes", "moisture_low": 30, "moisture_high": 45, "soak_s": 600,
           "max_run_s": 60, "budget_l_per_day": 5, "flow_l_per_min": 2, "takeover_s": 120}
EPSILON_L = 1e-9


def auto(**changes: Any) -> GardenAutonomy:
    return GardenAutonomy({**PROFILE, **changes})


def test_waters_when_dry_and_the_gateway_is_gone_after_takeover() -> None:
    a = auto()
    assert a.tick(0, 20, True) is None  # the gateway is in charge
    assert a.tick(10, 20, False) is None  # gone only 0 s... takeover starts now
    assert a.tick(100, 20, False) is None  # 90 s < takeover_s
    assert a.tick(130, 20, False) == ("local tomatoes", 60)
    assert a.busy(130 + 60 + 599) and not a.busy(130 + 60 + 600)
    assert a.tick(500, 20, False) is None  # soaking: the reading does not count
    assert a.tick(790, 35, False) == ("local tomatoes", 60)  # still below the band's top
    assert a.tick(1450, 46, False) is None  # above moisture_high: done
    assert a.tick(2000, 40, False) is None  # inside the band: hysteresis holds off
    report = a.report()
    assert [(e["start_s"], e["seconds"], e["litres"], e["result"]) for e in report] == [
        (130, 60, 2.0, "ran"), (790, 60, 2.0, "ran")]
    a.reported(1)
    assert len(a.report()) == 1


def test_the_budget_shortens_the_last_run_and_then_stops_watering() -> None:
    a = auto(takeover_s=0, soak_s=0)
    seconds = []
    for t in range(0, 2000, 100):
        request = a.tick(t, 10, False)
        if request:
            seconds.append(request[1])
    assert seconds == [60, 60, 30]  # 2 + 2 + 1 litres of the 5
    assert a.left_l(2000) == 0
    assert a.tick(DAY_S, 10, False) == ("local tomatoes", 60)  # the first run aged out


def test_refused_and_stopped_runs_charge_what_really_ran() -> None:
    a = auto(takeover_s=0)
    assert a.tick(0, 10, False) == ("local tomatoes", 60)
    a.refused(0, "emergency stop latched")
    assert a.used_l(1) == 0
    assert a.tick(300, 10, False) is None  # waits a soak before asking again
    assert a.tick(600, 10, False) == ("local tomatoes", 60)
    a.stopped(615, "dry run: no flow")
    assert a.used_l(616) == pytest.approx(0.5)
    assert [e["result"] for e in a.report()] == ["refused: emergency stop latched",
                                                 "stopped: dry run: no flow"]
    assert a.report()[1]["litres"] == 0.5


def test_no_reading_no_water_and_the_gateway_takes_over_again() -> None:
    a = auto(takeover_s=0)
    assert a.tick(0, None, False) is None
    assert a.tick(1, float("nan"), False) is None
    assert a.tick(2, 10, False) is not None
    assert a.tick(5000, 10, True) is None
    assert not a.watering


def test_state_survives_a_reboot_and_a_clock_jump_back_keeps_counting() -> None:
    a = auto(takeover_s=0, soak_s=0)
    a.tick(1000, 10, False)
    a.tick(1100, 10, False)
    again = GardenAutonomy(PROFILE, a.to_state())
    assert again.used_l(1200) == pytest.approx(4)
    assert len(again.report()) == 2
    # The clock went back 10 000 s: both runs still count for a full day from now.
    assert again.used_l(-8800) == pytest.approx(4)
    assert again.used_l(-8800 + DAY_S - 1) == pytest.approx(4)
    assert again.used_l(-8800 + DAY_S) == 0


@pytest.mark.parametrize(("change", "message"), [
    ({"moisture_low": 50}, "autonomy.moisture_high: must be above moisture_low"),
    ({"flow_l_per_min": 0}, "autonomy.flow_l_per_min: must be 0.001..10000"),
    ({"max_run_s": "60"}, "autonomy.max_run_s: must be 1..3600"),
    ({"soak": 10}, "autonomy.soak: unknown field"),
    ({"name": "my beds"}, "autonomy.name: must be a profile name"),
])
def test_bad_profiles_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_profile({**PROFILE, **change})


def test_a_missing_field_says_what_to_set() -> None:
    profile = dict(PROFILE)
    del profile["soak_s"]
    with pytest.raises(ValueError, match=r"autonomy\.soak_s: missing; set the seconds after"):
        check_profile(profile)


# ---- properties -------------------------------------------------------------------------

EVENT = st.tuples(
    st.integers(min_value=0, max_value=4000),  # seconds since the previous event
    # moisture: mostly dry soil, so the node has reasons to water
    st.one_of(st.none(), st.floats(min_value=0, max_value=100), st.floats(0, 5), st.floats(0, 5)),
    st.sampled_from([False, False, False, True]),  # gateway reachable
    st.sampled_from(["ok", "ok", "ok", "refuse", "stop"]),  # what the safety layer does
    st.integers(min_value=0, max_value=10000),  # clock jump back (0: none)
)
PROFILES = st.fixed_dictionaries({
    "name": st.just("bed"),
    "moisture_low": st.floats(min_value=5, max_value=40),
    "moisture_high": st.floats(min_value=45, max_value=90),
    "soak_s": st.integers(min_value=0, max_value=3600),
    "max_run_s": st.integers(min_value=1, max_value=600),
    "budget_l_per_day": st.floats(min_value=0, max_value=50),
    "flow_l_per_min": st.floats(min_value=0.01, max_value=20),
    "takeover_s": st.integers(min_value=0, max_value=600),
})


@settings(max_examples=300, deadline=None)
@given(profile=PROFILES, events=st.lists(EVENT, min_size=10, max_size=120),
       reboot_at=st.integers(0, 120))
def test_budget_soak_and_gateway_invariants(profile: dict[str, Any],
                                            events: list[tuple[Any, ...]],
                                            reboot_at: int) -> None:
    """Real time runs forward; the node's clock may jump back and the node may reboot (its
    state saved and restored). In any 24 h of real time the litres asked never exceed the
    budget; no request comes while the gateway is reachable or during a run + its soak."""
    a = GardenAutonomy(profile)
    lps = profile["flow_l_per_min"] / 60
    real = 0.0
    offset = 0.0  # node clock = real + offset, only ever decreasing
    runs: list[tuple[float, float]] = []  # (real start, litres) actually charged
    quiet_until = -1.0  # real time before which no request may come
    for i, (gap, moisture, reachable, outcome, jump_back) in enumerate(events):
        if i == reboot_at:
            a = GardenAutonomy(profile, a.to_state())
        real += gap
        offset -= jump_back
        now = real + offset
        request = a.tick(now, moisture, reachable)
        if request is None:
            continue
        assert not reachable, "asked while the gateway is reachable"
        assert real >= quiet_until, "asked during a run or its soak"
        reason, seconds = request
        assert reason == "local bed" and 1 <= seconds <= profile["max_run_s"]
        litres = seconds * lps
        if outcome == "refuse":
            a.refused(now, "interlock")
            quiet_until = real + profile["soak_s"]
            continue
        if outcome == "stop":
            ran = seconds / 2
            a.stopped(now + ran, "e-stop")
            litres = ran * lps
            quiet_until = real + ran + profile["soak_s"]
        else:
            quiet_until = real + seconds + profile["soak_s"]
        runs.append((real, litres))
        in_day = sum(lit for start, lit in runs if real - start < DAY_S)
        assert in_day <= profile["budget_l_per_day"] + EPSILON_L, "over the daily budget"
    logged = a.report()  # litres rounded to 3 decimals in the log
    assert sum(e["litres"] for e in logged) <= sum(lit for _, lit in runs) + 5e-4 * len(logged)


def test_the_gateway_coming_and_going_does_not_cut_a_soak_short() -> None:
    """Regression guard: the gateway coming and going does not restart the soak."""
    a = auto(takeover_s=0)
    assert a.tick(0, 10, False)
    assert a.tick(100, 10, True) is None
    assert a.tick(200, 10, False) is None  # still soaking (until 660)
    assert a.tick(661, 10, False)
