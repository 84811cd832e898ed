"""Filter chains: each filter with worked sequences, the chain, and config errors that name the
field and the fix."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sensornode.filters import (
    Delta,
    Ema,
    FilterChain,
    FilterConfigError,
    Median,
    Outlier,
    build,
    validate,
)


def run(f: Any, values: list[float], step_ms: int = 1000) -> list[float | None]:
    return [f.push(v, i * step_ms) for i, v in enumerate(values)]


# ---- each filter ----------------------------------------------------------------------------


def test_median_uses_what_it_has_then_the_window() -> None:
    assert run(Median(3), [5, 1, 9, 2, 2, 100, 2]) == [5, 3, 5, 2, 2, 2, 2]


def test_median_of_an_even_window_averages_the_middle_two() -> None:
    assert run(Median(4), [1, 3, 10, 20]) == [1, 2, 3, 6.5]


def test_median_reset_forgets_the_window() -> None:
    f = Median(3)
    run(f, [10, 10, 10])
    f.reset()
    assert f.push(1, 0) == 1


def test_ema_starts_at_the_first_sample_and_weights_by_alpha() -> None:
    out = run(Ema(0.5), [10, 20, 20, 0])
    assert out == [10, 15, 17.5, 8.75]
    assert run(Ema(1.0), [3, 7]) == [3, 7]


def test_outlier_drops_a_spike_and_keeps_the_reference() -> None:
    f = Outlier(max_jump=5, accept_after=3)
    assert run(f, [20, 21, 80, 22, 23]) == [20, 21, None, 22, 23]
    assert f.rejected == 0


def test_outlier_accepts_a_real_step_after_n_consecutive_jumps() -> None:
    f = Outlier(max_jump=5, accept_after=3)
    assert run(f, [20, 50, 51, 52, 53, 20]) == [20, None, None, 52, 53, None]
    assert f.rejected == 1


def test_outlier_accept_after_one_passes_everything() -> None:
    assert run(Outlier(1, accept_after=1), [0, 100, -100]) == [0, 100, -100]


def test_delta_passes_changes_of_at_least_delta_from_the_last_passed() -> None:
    # Slow drift is measured from the last REPORTED value, so it is reported eventually.
    assert run(Delta(0.5), [10, 10.2, 10.4, 10.5, 10.6, 9.9]) == [10, None, None, 10.5, None,
                                                                   9.9]


def test_delta_heartbeat_reports_an_unchanged_value() -> None:
    f = Delta(1.0, heartbeat_s=300)
    assert f.push(10, 0) == 10
    assert f.push(10, 299_999) is None
    assert f.push(10, 300_000) == 10
    assert f.push(10, 300_001) is None
    assert f.push(12, 310_000) == 12  # a change restarts the heartbeat
    assert f.push(12, 600_000) is None
    assert f.push(12, 610_000) == 12


def test_delta_heartbeat_survives_a_ticks_wrap() -> None:
    period = 1 << 30
    f = Delta(1.0, heartbeat_s=10)
    assert f.push(5, period - 5000) == 5
    assert f.push(5, 4000) is None  # 9 s later, across the wrap
    assert f.push(5, 5000) == 5


def test_delta_zero_passes_every_sample() -> None:
    assert run(Delta(0), [1, 1, 1]) == [1, 1, 1]


# ---- the chain ------------------------------------------------------------------------------


def test_chain_runs_filters_in_order_and_stops_at_none() -> None:
    chain = FilterChain(
        [{"outlier": {"max_jump": 10, "accept_after": 2}}, {"median": 3}, {"delta": 1}]
    )
    out = run(chain, [20, 20.2, 90, 20.4, 21.5, 22, 22])
    # 90 dropped by the outlier filter; median of (20, 20.2, 20.4) = 20.2 < 1 away from 20;
    # median (20.2, 20.4, 21.5) = 20.4; median (20.4, 21.5, 22) = 21.5 -> 1.5 away: passed.
    assert out == [20, None, None, None, None, 21.5, None]


def test_chain_with_the_issue_example_config() -> None:
    chain = FilterChain(
        [{"median": 5}, {"ema": 0.3}, {"outlier": {"max_jump": 10}},
         {"delta": 0.5, "heartbeat_s": 300}]
    )
    # medians 400, 400.5, 400; ema 400, 400.15, 400.105; delta: first, < 0.5, heartbeat.
    assert chain.push(400, 0) == 400
    assert chain.push(401, 1000) is None
    assert chain.push(400, 301_000) == pytest.approx(400.105)


def test_chain_refuses_non_numbers_and_accepts_bools_as_0_1() -> None:
    chain = FilterChain([])
    assert chain.push(None, 0) is None
    assert chain.push(math.nan, 0) is None
    assert chain.push(math.inf, 0) is None
    assert chain.push("12", 0) is None
    assert chain.push(True, 0) == 1
    assert FilterChain(None).push(3.5, 0) == 3.5


def test_chain_round_and_reset() -> None:
    chain = FilterChain([{"ema": 0.5}, {"round": 1}])
    assert chain.push(1.0, 0) == 1.0
    assert chain.push(1.234, 0) == 1.1
    chain.reset()
    assert chain.push(7.77, 0) == 7.8


def test_all_parameter_forms_build_the_same_filter() -> None:
    a, b, c = (
        build([{"outlier": 10, "accept_after": 4}])[0],
        build([{"outlier": {"max_jump": 10, "accept_after": 4}}])[0],
        build([{"delta": {"delta": 0.5, "heartbeat_s": 60}}])[0],
    )
    assert (a.max_jump, a.accept_after) == (b.max_jump, b.accept_after) == (10, 4)
    assert (c.delta, c.heartbeat_ms) == (0.5, 60_000)
    assert build([{"outlier": 3}])[0].accept_after == 3  # default


# ---- config errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"median": 5}, "filters: must be a list of filters"),
        (["median"], "filters[0]: must be an object naming one filter"),
        ([{"mean": 3}], "filters[0]: must name exactly one filter (delta, ema, median, outlier"),
        ([{"median": 3, "ema": 0.2}], "filters[0]: must name exactly one filter"),
        ([{"median": 0}], "filters[0].median: must be a whole number of samples 1..31, got 0"),
        ([{"median": 2.5}], "filters[0].median: must be a whole number"),
        ([{"median": 99}], "filters[0].median: must be a whole number of samples 1..31"),
        ([{"ema": 0}], "filters[0].ema: must be a number above 0 and at most 1"),
        ([{"ema": 1.5}], "filters[0].ema: must be a number above 0"),
        ([{"ema": True}], "filters[0].ema: must be a number"),
        ([{"median": 3}, {"outlier": {"max_jump": -1}}],
         "filters[1].outlier.max_jump: must be a number above 0"),
        ([{"outlier": {"accept_after": 2}}],
         'filters[0].outlier.max_jump: missing; e.g. {"outlier": {"max_jump": 10}}'),
        ([{"outlier": 5, "accept_after": 0}], "filters[0].accept_after: must be a whole number"),
        ([{"outlier": {"max_jump": 5}, "accept_after": 2}],
         "filters[0].outlier: give all parameters inside the object"),
        ([{"delta": 0.5, "heartbeat": 300}],
         "filters[0].heartbeat: unknown parameter of delta; known: delta, heartbeat_s"),
        ([{"delta": 0.5, "heartbeat_s": -1}], "filters[0].heartbeat_s: must be seconds 0..86400"),
        ([{"delta": 0.5, "heartbeat_s": 10**6}], "filters[0].heartbeat_s: must be seconds"),
        ([{"delta": "0.5"}], "filters[0].delta: must be a number >= 0"),
        ([{"delta": math.nan}], "filters[0].delta: must be a number >= 0"),
        ([{"round": 9}], "filters[0].round: must be a whole number of decimals 0..6"),
    ],
)
def test_config_errors_name_the_field_and_the_fix(spec: Any, message: str) -> None:
    with pytest.raises(FilterConfigError) as err:
        validate(spec)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_config_error_uses_the_callers_field_name() -> None:
    with pytest.raises(FilterConfigError, match=r"^sensors.mq135.filters\[0\].ema: "):
        FilterChain([{"ema": 2}], "sensors.mq135.filters")


def test_empty_and_missing_specs_are_valid() -> None:
    validate(None)
    validate([])
    assert build(None) == []
