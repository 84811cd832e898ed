"""The world around a drone payload (boards/emulated/world_drone.py) and the air and soil
temperatures (world_air.py): closed-form physics stepped lazily, checked against the
formulas, and seen through the emulated machine (PWM, ADC, Pin) of the drone profile."""

from __future__ import annotations

import math

import emu
import machine
import pytest
import world_drone
from world import World

from edge_gateway.emulated_world import EMULATED_DIR
from testkit.emulated import FakeClock, emulated_board, fresh_emulation  # noqa: F401

pytestmark = pytest.mark.usefixtures("fresh_emulation")

DRONE = EMULATED_DIR / "drone.json"  # diffusers on 25, 26, 27, 13; switches 18, 19; MQ-135 35
WIRING = {"diffuser_1": 25, "diffuser_2": 26, "diffuser_3": {"pin": 27, "active_low": True},
          "tank_switch_1": 18, "tank_switch_2": {"pin": 19, "active_low": False}, "mq135": 35}
CALM = {"voc_ppb": 100, "voc_background_ppb": 100, "ventilation_per_s": 0.01,
        "adc_noise_raw": 0, "mq135_heated_s": 3600}


def make_world(**conditions: object) -> World:
    return World(WIRING, {**CALM, **conditions}, 0.0)


def pwm(world: World, pin: int, duty: float, now_s: float) -> None:
    world.pin_driven(pin, "pwm" if 0 < duty < 1 else round(duty), now_s, duty)


# ---- aroma ----------------------------------------------------------------------------------


def test_aroma_rises_with_duty_towards_its_steady_state() -> None:
    world = make_world(diffuser_emission_ppb_per_s_1=40)
    pwm(world, 25, 0.5, 0.0)
    world.step(50.0)
    # dC/dt = 0.5 * 40 - 0.01 (C - 100): steady state 100 + 20 / 0.01 = 2100 ppb.
    expected = 2100 + (100 - 2100) * math.exp(-0.01 * 50)
    assert world.conditions["voc_ppb"] == pytest.approx(expected)
    world.step(5000.0)
    assert world.conditions["voc_ppb"] == pytest.approx(2100, rel=1e-6)


def test_aroma_decays_with_ventilation_once_the_diffuser_stops() -> None:
    world = make_world(voc_ppb=1100, ventilation_per_s=0.05)
    world.step(20.0)
    assert world.conditions["voc_ppb"] == pytest.approx(100 + 1000 * math.exp(-1.0))
    still = make_world(voc_ppb=1100, ventilation_per_s=0)
    still.step(1000.0)
    assert still.conditions["voc_ppb"] == 1100  # a sealed room keeps its aroma


def test_channels_add_up_and_active_low_inverts_the_duty() -> None:
    world = make_world(ventilation_per_s=0, voc_ppb=0, voc_background_ppb=0)
    pwm(world, 25, 1.0, 0.0)  # 50 ppb/s
    pwm(world, 27, 0.25, 0.0)  # active-low: high 25 % of the time is on 75 % -> 37.5 ppb/s
    world.step(2.0)
    assert world.conditions["voc_ppb"] == pytest.approx(2 * (50 + 37.5))
    assert world.actuators() == {"diffuser_1": 100.0, "diffuser_2": 0.0, "diffuser_3": 75.0}
    world.pin_driven(27, None, 2.0)  # released: the diffuser's driver pulls it off
    assert world.duty("diffuser_3") == 0.0 and world.duty("diffuser_4") == 0.0  # 4: unwired


# ---- tanks and float switches ----------------------------------------------------------------


def test_tanks_drain_by_duty_and_a_dry_tank_stops_its_diffusers() -> None:
    world = make_world(ventilation_per_s=0, voc_ppb=0, voc_background_ppb=0,
                       tank_level_ml_1=10, diffuser_flow_ml_per_s_1=0.5,
                       diffuser_flow_ml_per_s_3=0.5)
    pwm(world, 25, 0.5, 0.0)  # diffuser 1 and 3 both draw from tank 1 (the default mapping)
    pwm(world, 27, 0.5, 0.0)  # active-low at 50 %: on 50 %
    pwm(world, 26, 1.0, 0.0)  # diffuser 2 draws from tank 2
    world.step(15.0)  # tank 1 empties at 10 / 0.5 = 20 s
    assert world.conditions["tank_level_ml_1"] == pytest.approx(2.5)
    assert world.conditions["tank_level_ml_2"] == pytest.approx(100 - 0.3)
    world.step(100.0)
    assert world.conditions["tank_level_ml_1"] == 0.0
    # Emission: 1 and 3 (25 ppb/s each) for 20 s, 2 (50 ppb/s) for the whole 100 s.
    assert world.conditions["voc_ppb"] == pytest.approx(2 * 25 * 20 + 50 * 100)


def test_lazy_steps_are_exact_across_a_tank_running_dry() -> None:
    one = make_world(tank_level_ml_1=3, diffuser_flow_ml_per_s_1=0.1,
                     air_temperature_drift_c_per_h=50, soil_temperature_lag_s=600)
    many = make_world(tank_level_ml_1=3, diffuser_flow_ml_per_s_1=0.1,
                      air_temperature_drift_c_per_h=50, soil_temperature_lag_s=600)
    for world in (one, many):
        pwm(world, 25, 0.6, 0.0)
    one.step(4000.0)
    for i in range(1, 401):
        many.step(i * 10.0)
    for name in ("voc_ppb", "tank_level_ml_1", "air_temperature_c", "soil_temperature_c"):
        assert many.conditions[name] == pytest.approx(one.conditions[name], rel=1e-9), name


def test_float_switch_levels_follow_the_wiring() -> None:
    world = make_world(tank_level_ml_1=50, tank_level_ml_2=50)
    assert (world.input_level(18), world.input_level(19)) == (0, 1)  # closed: active level
    world.set({"tank_level_ml_1": 9.99, "tank_level_ml_2": 9.99}, 0.0)
    assert (world.input_level(18), world.input_level(19)) == (None, None)  # open: pull decides
    world.set({"tank_level_ml_1": 10}, 0.0)
    assert world.input_level(18) == 0  # at the threshold the float is still up


def test_slosh_makes_the_switch_chatter_near_its_threshold() -> None:
    world = make_world(tank_level_ml_1=10.5, tank_slosh_ml=1.0)
    assert {world.input_level(18) for _ in range(64)} == {0, None}
    world.set({"tank_level_ml_1": 12}, 0.0)
    assert {world.input_level(18) for _ in range(64)} == {0}


# ---- MQ-135 front end ------------------------------------------------------------------------


def divider_raw(voc_ppb: float, heated_s: float = 3600) -> int:
    ppm = 400 + voc_ppb * 0.1
    rs = 76.6 * (ppm / 116.6) ** (1 / -2.769)
    if heated_s < 60:
        rs *= 1 + 3 * (1 - heated_s / 60)
    vout = 5.0 * 10 / (rs + 10)
    return round(vout * (2 / 3) / 3.3 * 65535)


def test_mq135_adc_is_the_load_resistor_divider_of_the_datasheet_curve() -> None:
    world = make_world()
    for voc in (0, 100, 2000, 20000):
        world.set({"voc_ppb": voc}, 0.0)
        assert world.adc_raw(35, 0.0) == divider_raw(voc)
    front = world_drone.mq135(world.conditions)
    # Inverting the curve at the modelled Rs gives back the CO2-equivalent ppm.
    ratio = front["rs_kohm"] / 76.6
    assert 116.6 * ratio ** -2.769 == pytest.approx(front["ppm"]) == pytest.approx(2400)


def test_mq135_reads_low_while_the_heater_warms_up() -> None:
    world = make_world(mq135_heated_s=0, voc_ppb=100)
    cold = world.adc_raw(35, 0.0)
    assert cold == divider_raw(100, 0)
    world.step(30.0)
    assert world.conditions["mq135_heated_s"] == 30
    assert cold < world.adc_raw(35, 30.0) == divider_raw(100, 30) < divider_raw(100)
    world.step(60.0)
    assert world.adc_raw(35, 60.0) == divider_raw(100)


# ---- air and soil temperature ----------------------------------------------------------------


def test_air_drifts_and_stops_at_the_end_of_its_range() -> None:
    world = make_world(air_temperature_c=80, air_temperature_drift_c_per_h=90,
                       air_humidity_pct=50, air_humidity_drift_pct_per_h=-36,
                       pressure_hpa=1000, pressure_drift_hpa_per_h=36)
    world.step(2.0)
    assert world.conditions["air_temperature_c"] == pytest.approx(80.05)
    assert world.conditions["air_humidity_pct"] == pytest.approx(49.98)
    assert world.conditions["pressure_hpa"] == pytest.approx(1000.02)
    world.step(1000.0)
    assert world.conditions["air_temperature_c"] == 85


def test_soil_lags_the_air_as_a_first_order_system() -> None:
    world = make_world(air_temperature_c=30, soil_temperature_c=10, soil_temperature_lag_s=1000)
    world.step(1000.0)
    assert world.value("soil_temperature_c") == pytest.approx(30 - 20 / math.e)
    ramp = make_world(air_temperature_c=10, soil_temperature_c=10, soil_temperature_lag_s=100,
                      air_temperature_drift_c_per_h=36)
    ramp.step(2000.0)  # a ramp of 0.01 degC/s: the soil trails it by rate * tau = 1 degC
    assert ramp.value("soil_temperature_c") == pytest.approx(30 - 1, abs=1e-6)
    instant = make_world(air_temperature_c=12, soil_temperature_lag_s=0)
    instant.step(1.0)
    assert instant.value("soil_temperature_c") == 12


# ---- through the emulated machine ------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    clock = FakeClock()
    emulated_board(DRONE, {**CALM, "ventilation_per_s": 0, "voc_ppb": 0,
                           "voc_background_ppb": 0, "tank_level_ml_2": 10.2,
                           "diffuser_flow_ml_per_s_2": 0.1}, clock)
    return clock


def test_a_diffuser_pwm_raises_the_aroma_and_drains_its_tank(clock: FakeClock) -> None:
    diffuser = machine.PWM(machine.Pin(26, machine.Pin.OUT, value=0), freq=1000, duty_u16=0)
    switch = machine.Pin(19, machine.Pin.IN, machine.Pin.PULL_UP)
    mq135 = machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB)
    clean = mq135.read_u16()
    assert switch.value() == 0  # tank 2 above its 10 ml threshold
    diffuser.duty_u16(32768)
    clock.advance(10)
    state = emu.get().state()
    assert state["actuators"]["diffuser_2"] == pytest.approx(50.0, abs=0.01)
    assert state["world"]["voc_ppb"] == pytest.approx(250, rel=1e-3)  # 50 % of 50 ppb/s, 10 s
    assert state["world"]["tank_level_ml_2"] == pytest.approx(9.7, abs=1e-3)
    assert switch.value() == 1  # below the threshold: open, the pull-up reads high
    assert state["world"]["tank_switch_closed_2"] is False
    assert mq135.read_u16() > clean
    diffuser.duty_u16(0)
    clock.advance(10)
    assert emu.get().state()["world"]["tank_level_ml_2"] == pytest.approx(9.7, abs=1e-3)
