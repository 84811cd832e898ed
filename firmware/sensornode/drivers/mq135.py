# MQ-135 air-quality sensor (SnO2, heated) read through an ADC.
#
# Circuit (datasheet "basic measuring circuit"): the sensing resistance Rs sits between the
# circuit voltage Vc (5 V) and the output; the load resistor RL goes from the output to GND:
#   Vout = Vc * RL / (Rs + RL)   so   Rs = RL * (Vc - Vout) / Vout
# Vout reaches 5 V, which an ESP32 or RP2040 pin must never see: put a divider between the
# output and the ADC pin and give its ratio (V at pin / Vout, e.g. 10 k over 20 k to GND:
# 20/30 = 0.667), or feed the sensing element's Vc from 3.3 V (the heater stays at 5 V) and
# keep divider_ratio 1. A setting where Vc could drive the pin above its range is refused.
# rl_ohm is the load the sensor sees: RL in parallel with the divider's total resistance.
# Readings within rail_margin counts of 0 or of full scale are faults (open / short); the
# ESP32's ADC reads 0 below ~0.1 V at 11 dB, so pick RL so clean air sits well above that.
#
# Datasheet facts used (Hanwei/Winsen MQ-135): Vc = VH = 5.0 V +/- 0.1; Rs = 30..200 kOhm in
# 100 ppm NH3; preheat (burn-in) "over 24 hours" for a new sensor; in the sensitivity chart
# (20 degC, 65 %RH, log-log Rs/R0 against ppm) the clean-air line is flat at Rs/R0 ~ 3.6,
# and the CO2 line runs from Rs/R0 ~ 2.30 at 10 ppm to ~ 0.80 at 200 ppm. A straight line on
# log-log axes is ppm = a * (Rs/R0)^b; through those two points:
#   b = ln(200/10) / ln(0.80/2.30) = -2.8367     a = 10 / 2.30^b = 106.19
# (the chart's middle point, 1.05 at 100 ppm, comes out at 92 ppm: the chart is read by eye).
# R0 is calibrated in clean air: R0 = Rs_clean / clean_air_ratio. With the datasheet's 3.6
# clean air reads ~2.8 ppm "CO2-equivalent" and polluted air rises from there. To make clean
# air read the ambient CO2 level instead, calibrate with clean_air_ratio = ratio_for_ppm(420).
# Temperature/humidity compensation (the datasheet's Rs/R0-vs-temperature chart) is not applied.
#
# Warm-up: the heater needs time after power-up. For `warmup_s` (default 60 s, counted from
# the driver's construction, i.e. boot) reads raise NotReady: no fault, nothing reported. The
# 24 h burn-in of a NEW sensor is a once-only step before calibrate_r0(); it is not enforced.
import math

from sensornode.compat import const, ticks_diff, ticks_ms
from sensornode.drivers.errors import NotReady, SensorError

try:
    from typing import Any, Callable, Dict, Optional, Tuple
except ImportError:
    pass

_ADC_MAX = const(65535)
_SAMPLES_MAX = const(64)

CO2_POINTS = ((10.0, 2.30), (200.0, 0.80))  # (ppm, Rs/R0) read off the datasheet chart
CLEAN_AIR_RATIO = 3.6  # Rs/R0 in clean air, datasheet chart
WARMUP_S = 60


def fit_curve(p1: "Tuple[float, float]", p2: "Tuple[float, float]") -> "Tuple[float, float]":
    """(a, b) of ppm = a * ratio**b through two (ppm, ratio) points of a datasheet line."""
    (ppm1, r1), (ppm2, r2) = p1, p2
    b = math.log(ppm2 / ppm1) / math.log(r2 / r1)
    return ppm1 / r1 ** b, b


CO2_A, CO2_B = fit_curve(CO2_POINTS[0], CO2_POINTS[1])


def _number(field: str, value: "Any", low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not low <= value <= high:
        raise ValueError("%s: must be a number %s..%s, got %r" % (field, low, high, value))
    return float(value)


def _whole(field: str, value: "Any", low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError("%s: must be a whole number %d..%d, got %r" % (field, low, high, value))
    return value


class MQ135:
    """Rs, Rs/R0 and a ppm estimate from an MQ-135 on the ADC it is given."""

    def __init__(self, adc: "Any", rl_ohm: float = 10000.0, r0_ohm: "Optional[float]" = None,
                 vc: float = 5.0, adc_vref: float = 3.3, divider_ratio: float = 1.0,
                 a: float = CO2_A, b: float = CO2_B, clean_air_ratio: float = CLEAN_AIR_RATIO,
                 warmup_s: float = WARMUP_S, samples: int = 8, rail_margin: int = 64,
                 clock: "Callable[[], int]" = ticks_ms) -> None:
        self.rl_ohm = _number("rl_ohm", rl_ohm, 10.0, 1e7)
        self.r0_ohm = None if r0_ohm is None else _number("r0_ohm", r0_ohm, 1.0, 1e8)
        self.vc = _number("vc", vc, 0.5, 24.0)
        self.adc_vref = _number("adc_vref", adc_vref, 0.1, 6.0)
        self.divider_ratio = _number("divider_ratio", divider_ratio, 0.01, 1.0)
        self.a = _number("a", a, 1e-6, 1e9)
        self.b = _number("b", b, -20.0, 20.0)
        self.clean_air_ratio = _number("clean_air_ratio", clean_air_ratio, 0.01, 100.0)
        self.warmup_ms = int(_number("warmup_s", warmup_s, 0, 7 * 86400) * 1000)
        self.samples = _whole("samples", samples, 1, _SAMPLES_MAX)
        self.rail_margin = _whole("rail_margin", rail_margin, 0, 4096)
        if self.b == 0:
            raise ValueError("b: must not be 0 (the curve would be flat); fit it with fit_curve")
        if self.vc * self.divider_ratio > self.adc_vref * 1.05:
            # The output can approach Vc in heavy gas: the pin would see more than it takes.
            raise ValueError("divider_ratio: Vc %.2f V x %.3f exceeds the ADC range %.2f V and "
                             "can damage the pin; add a divider and give its ratio (%.3f or "
                             "less)" % (self.vc, self.divider_ratio, self.adc_vref,
                                        self.adc_vref / self.vc))
        self._adc = adc
        self._clock = clock
        self._powered_ms = clock()
        self._warm = self.warmup_ms == 0

    # ---- warm-up ------------------------------------------------------------------------

    def warmup_left_ms(self) -> int:
        """Milliseconds of heater warm-up still to go (0 once warm; stays 0)."""
        if self._warm:
            return 0
        elapsed = ticks_diff(self._clock(), self._powered_ms)
        if 0 <= elapsed < self.warmup_ms:
            return self.warmup_ms - elapsed
        self._warm = True  # a negative elapsed means ticks wrapped: long since warm
        return 0

    def _check_warm(self) -> None:
        left = self.warmup_left_ms()
        if left:
            raise NotReady("mq135: heater warming up, %d s left" % ((left + 999) // 1000))

    # ---- conversion ---------------------------------------------------------------------

    def read_raw(self) -> int:
        """Mean of `samples` ADC readings (u16)."""
        total = 0
        for _ in range(self.samples):
            total += self._adc.read_u16()
        return (total + self.samples // 2) // self.samples

    def vout(self, raw: int) -> float:
        """The sensor's output voltage (before the divider) for an ADC reading."""
        return raw * self.adc_vref / _ADC_MAX / self.divider_ratio

    def rs_ohm(self, raw: int) -> float:
        """Sensing resistance for an ADC reading; SensorError at either rail."""
        if raw <= self.rail_margin:
            raise SensorError("mq135: output at 0 V (ADC %d): sensor missing, heater or wire "
                              "open, or no supply at Vc; check the wiring" % raw)
        if raw >= _ADC_MAX - self.rail_margin:
            raise SensorError("mq135: ADC at full scale (%d): output shorted to the supply, or "
                              "the divider is missing (divider_ratio %.3f)"
                              % (raw, self.divider_ratio))
        v = self.vout(raw)
        if v >= self.vc:
            raise SensorError("mq135: output %.2f V is at or above Vc %.2f V: Rs shorted, or "
                              "vc / adc_vref / divider_ratio do not match the circuit"
                              % (v, self.vc))
        return self.rl_ohm * (self.vc - v) / v

    def ratio(self, rs_ohm: float) -> float:
        if self.r0_ohm is None:
            raise SensorError("mq135: r0_ohm is not calibrated; run calibrate_r0() in clean "
                              "air after burn-in and store the result as r0_ohm")
        return rs_ohm / self.r0_ohm

    def ppm(self, ratio: float) -> float:
        return self.a * ratio ** self.b

    def ratio_for_ppm(self, ppm: float) -> float:
        """Rs/R0 at which the curve gives `ppm` (e.g. a clean_air_ratio for ambient CO2)."""
        return (ppm / self.a) ** (1.0 / self.b)

    def calibrate_r0(self, samples: int = 16) -> float:
        """In clean air, warm: R0 = mean Rs / clean_air_ratio. Sets and returns r0_ohm (store
        it in the node's config)."""
        _whole("samples", samples, 1, 1000)
        self._check_warm()
        total = 0.0
        for _ in range(samples):
            total += self.rs_ohm(self.read_raw())
        self.r0_ohm = total / samples / self.clean_air_ratio
        return self.r0_ohm

    # ---- driver API ---------------------------------------------------------------------

    def start_measurement(self) -> int:
        """Nothing to start on an ADC: 0 ms to wait (reads raise NotReady while warming)."""
        return 0

    def read_measurement(self) -> "Dict[str, float]":
        self._check_warm()
        ratio = self.ratio(self.rs_ohm(self.read_raw()))
        return {"mq135_ppm": round(self.ppm(ratio), 1), "mq135_ratio": round(ratio, 3)}

    async def read(self) -> "Dict[str, float]":
        return self.read_measurement()
