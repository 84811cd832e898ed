"""MQ-135 driver: divider to Rs, Rs/R0, the ppm curve from the datasheet chart, R0 calibration,
warm-up and open/short detection - worked numbers by hand, then on the emulated ADC."""

from __future__ import annotations

import asyncio
import math

import emu
import machine
import pytest
from sensornode.drivers.errors import NotReady, SensorError
from sensornode.drivers.mq135 import CO2_A, CO2_B, MQ135, fit_curve

from testkit.emulated import FakeClock, emulated_board, fresh_emulation  # noqa: F401


class FakeADC:
    def __init__(self, raw: int) -> None:
        self.raw = raw
        self.reads = 0

    def read_u16(self) -> int:
        self.reads += 1
        return self.raw


def sensor(raw: int = 26214, **kwargs: object) -> tuple[MQ135, FakeADC, FakeClock]:
    clock = FakeClock()
    adc = FakeADC(raw)
    args: dict[str, object] = {"rl_ohm": 10000, "vc": 5.0, "adc_vref": 3.3,
                               "divider_ratio": 0.5, "warmup_s": 0, "clock": clock}
    args.update(kwargs)
    return MQ135(adc, **args), adc, clock  # type: ignore[arg-type]


# ---- the curve ------------------------------------------------------------------------------


def test_co2_curve_goes_through_the_two_datasheet_points() -> None:
    # b = ln(200/10) / ln(0.80/2.30) = 2.995732 / -1.056053 = -2.83673
    # a = 10 * 2.30^2.83673 = 10 * e^(0.832909 * 2.83673) = 10 * 10.61996 = 106.1996
    assert round(CO2_B, 5) == -2.83673
    assert round(CO2_A, 3) == 106.2
    mq, _, _ = sensor(r0_ohm=10000)
    assert mq.ppm(2.30) == pytest.approx(10.0)
    assert mq.ppm(0.80) == pytest.approx(200.0)
    # The chart's middle point (1.05 at 100 ppm) is within 8 %: the chart is read by eye.
    assert mq.ppm(1.05) == pytest.approx(100, rel=0.08)


def test_fit_curve_and_its_inverse() -> None:
    a, b = fit_curve((10, 2.545), (200, 0.770))  # any other line of the chart, e.g. NH4
    assert a * 2.545**b == pytest.approx(10)
    mq, _, _ = sensor(a=a, b=b)
    assert mq.ppm(mq.ratio_for_ppm(150)) == pytest.approx(150)
    # Clean air on the datasheet's CO2 line reads ~2.8 ppm; to read ambient CO2 instead,
    # calibrate with the ratio the curve gives for it: (420 / 106.1996)^(1/-2.83673) = 0.6159.
    default, _, _ = sensor()
    assert default.ppm(3.6) == pytest.approx(2.806, abs=1e-3)
    assert default.ratio_for_ppm(420) == pytest.approx(0.6159, abs=1e-4)


# ---- divider, Rs, ratio, ppm ----------------------------------------------------------------


def test_worked_reading_through_a_half_divider() -> None:
    # u16 26214 = 0.4 of full scale: 1.32 V at the pin, 2.64 V at the sensor output;
    # Rs = 10 k * (5 - 2.64) / 2.64 = 8939.39 ohm; R0 = 10 k -> Rs/R0 = 0.89394;
    # ppm = 106.1996 * 0.89394^-2.83673 = 106.1996 * e^0.318045 = 145.97.
    mq, adc, _ = sensor(26214, r0_ohm=10000)
    assert mq.vout(26214) == pytest.approx(2.64)
    assert mq.rs_ohm(26214) == pytest.approx(8939.39, abs=0.01)
    assert mq.read_measurement() == {"mq135_ppm": 146.0, "mq135_ratio": 0.894}
    assert adc.reads == 8  # averaged over `samples`


def test_more_gas_means_lower_rs_and_more_ppm() -> None:
    clean, _, _ = sensor(13107, r0_ohm=10000)  # 0.66 V at the pin, 1.32 V out
    assert clean.rs_ohm(13107) == pytest.approx(27878.79, abs=0.01)
    dirty, _, _ = sensor(26214, r0_ohm=10000)
    assert dirty.read_measurement()["mq135_ppm"] > clean.read_measurement()["mq135_ppm"]


def test_without_a_divider_the_rail_is_vc_at_the_pin() -> None:
    # Sensing element at Vc = 3.3 V (heater still 5 V): no divider needed.
    mq, _, _ = sensor(32768, vc=3.3, divider_ratio=1.0, rl_ohm=20000)
    v = 32768 * 3.3 / 65535
    assert mq.rs_ohm(32768) == pytest.approx(20000 * (3.3 - v) / v)


def test_r0_calibration_in_clean_air() -> None:
    # u16 6554 = 0.1: 0.33 V at the pin, 0.66 V out; Rs = 10 k * 4.34 / 0.66 = 65757.58;
    # R0 = Rs / 3.6 = 18265.99.
    mq, adc, _ = sensor(6554)
    with pytest.raises(SensorError, match="r0_ohm is not calibrated"):
        mq.read_measurement()
    adc.reads = 0
    r0 = mq.calibrate_r0(samples=4)
    assert r0 == pytest.approx(65757.58 / 3.6, rel=1e-4)
    assert mq.r0_ohm == r0
    assert adc.reads == 4 * 8
    assert mq.read_measurement() == {"mq135_ppm": 2.8, "mq135_ratio": 3.6}


def test_calibration_for_ambient_co2_reads_ambient_in_clean_air() -> None:
    mq, _, _ = sensor(6554)
    mq.clean_air_ratio = mq.ratio_for_ppm(420)
    mq.calibrate_r0()
    assert mq.read_measurement()["mq135_ppm"] == pytest.approx(420, abs=0.1)


# ---- faults and warm-up ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "why"),
    [(0, "output at 0 V"), (64, "output at 0 V"), (65535, "ADC at full scale"),
     (65471, "ADC at full scale")],
)
def test_open_or_short_circuit_is_a_sensor_error_naming_why(raw: int, why: str) -> None:
    mq, _, _ = sensor(raw, r0_ohm=10000)
    with pytest.raises(SensorError, match=why) as err:
        mq.read_measurement()
    assert not isinstance(err.value, NotReady)


def test_output_above_vc_means_the_circuit_settings_are_wrong() -> None:
    mq, _, _ = sensor(40000, r0_ohm=10000, divider_ratio=0.3)  # 2.01 V / 0.3 = 6.7 V > 5 V
    with pytest.raises(SensorError, match="at or above Vc"):
        mq.read_measurement()


def test_warm_up_raises_not_ready_then_reads() -> None:
    mq, _, clock = sensor(26214, r0_ohm=10000, warmup_s=60)
    assert mq.start_measurement() == 0
    with pytest.raises(NotReady, match="warming up, 60 s left"):
        mq.read_measurement()
    clock.advance(59.5)
    with pytest.raises(NotReady, match="1 s left"):
        asyncio.run(mq.read())
    with pytest.raises(NotReady):
        mq.calibrate_r0()
    clock.advance(0.5)
    assert mq.warmup_left_ms() == 0
    assert asyncio.run(mq.read())["mq135_ratio"] == 0.894


def test_warm_up_stays_done_across_a_ticks_wrap() -> None:
    clock = FakeClock((1 << 30) - 10_000)
    mq = MQ135(FakeADC(26214), r0_ohm=10000, divider_ratio=0.5, warmup_s=60, clock=clock)
    clock.advance(59)
    clock.ms &= (1 << 30) - 1  # the MCU's ticks wrapped
    assert mq.warmup_left_ms() == 1000
    clock.advance(1)
    assert mq.warmup_left_ms() == 0
    clock.advance(6 * 86400)  # days later (beyond a ticks half period): still warm
    assert mq.warmup_left_ms() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"divider_ratio": 1.0}, "divider_ratio: Vc 5.00 V x 1.000 exceeds the ADC range 3.30 V"),
     ({"rl_ohm": 0}, "rl_ohm: must be a number"),
     ({"r0_ohm": -5}, "r0_ohm: must be a number"),
     ({"b": 0}, "b: must not be 0"),
     ({"samples": 0}, "samples: must be a whole number 1..64"),
     ({"warmup_s": True}, "warmup_s: must be a number"),
     ({"clean_air_ratio": math.nan}, "clean_air_ratio: must be a number")],
)
def test_bad_settings_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        sensor(**kwargs)


# ---- on the emulated board ------------------------------------------------------------------

MQ_PIN = 35


@pytest.mark.usefixtures("fresh_emulation")
def test_on_the_emulated_adc_ppm_follows_the_aroma_in_the_world() -> None:
    clock = FakeClock()
    emulated_board("emulated", {"wiring": {"mq135": MQ_PIN}, "adc_noise_raw": 0,
                                "mq135_heated_s": 0, "voc_ppb": 100, "ventilation_per_s": 0},
                   clock)
    adc = machine.ADC(machine.Pin(MQ_PIN), atten=machine.ADC.ATTN_11DB)
    c = emu.get().world.conditions
    mq = MQ135(adc, rl_ohm=c["mq135_rl_kohm"] * 1000, vc=c["mq135_vc_v"],
               divider_ratio=c["mq135_divider_ratio"], warmup_s=c["mq135_warmup_s"],
               clock=clock)
    with pytest.raises(NotReady):
        mq.calibrate_r0()
    clock.advance(c["mq135_warmup_s"])
    r0 = mq.calibrate_r0()
    # The emulated sensor's Rs is R0_world * (ppm/a)^(1/b); ours is that over 3.6.
    rs_kohm = emu.get().world.snapshot()["mq135_rs_kohm"]
    assert r0 == pytest.approx(rs_kohm * 1000 / 3.6, rel=0.01)
    before = mq.read_measurement()
    assert before["mq135_ratio"] == pytest.approx(3.6, abs=0.01)
    emu.get().set_world(voc_ppb=20000)
    after = mq.read_measurement()
    assert after["mq135_ratio"] < before["mq135_ratio"]
    assert after["mq135_ppm"] > 3 * before["mq135_ppm"]
