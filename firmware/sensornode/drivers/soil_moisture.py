# Capacitive soil moisture probe (e.g. "Capacitive Soil Moisture Sensor v1.2/v2.0") on an ADC.
#
# Two-point calibration in SOIL, per probe: `dry_raw` is the reading in dry soil (0 %),
# `wet_raw` in saturated soil (100 %). Calibrating in air and water (a common mistake) gives a
# range the probe never reaches in a bed. A capacitive probe reads LOWER when wetter, so
# dry_raw must be above wet_raw. The driver takes the ADC it is given (already at full-range
# attenuation: see sensornode.board.Board.soil_adc) and never builds one.
from sensornode.compat import const

try:
    from typing import Any, Tuple
except ImportError:
    pass

_ADC_MAX = const(65535)
_SAMPLES_MAX = const(64)


def _check_raw(field: str, value: "Any") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _ADC_MAX:
        raise ValueError("%s: must be an ADC reading (integer 0..65535), got %r" % (field, value))
    return value


class CapacitiveSoilMoisture:
    def __init__(self, adc: "Any", dry_raw: int, wet_raw: int, samples: int = 8) -> None:
        self._dry = _check_raw("dry_raw", dry_raw)
        self._wet = _check_raw("wet_raw", wet_raw)
        if dry_raw == wet_raw:
            raise ValueError("dry_raw, wet_raw: both are %d; calibrate the probe in dry soil "
                             "and in saturated soil (they must differ)" % dry_raw)
        if wet_raw > dry_raw:
            raise ValueError("wet_raw: %d is above dry_raw %d, but a capacitive probe reads lower "
                             "in wetter soil; were they swapped?" % (wet_raw, dry_raw))
        if isinstance(samples, bool) or not isinstance(samples, int) \
                or not 1 <= samples <= _SAMPLES_MAX:
            raise ValueError("samples: must be an integer 1..%d, got %r" % (_SAMPLES_MAX, samples))
        self._adc = adc
        self._samples = samples

    @property
    def dry_raw(self) -> int:
        return self._dry

    @property
    def wet_raw(self) -> int:
        return self._wet

    def read_raw(self) -> int:
        """Mean of `samples` ADC readings (u16)."""
        total = 0
        for _ in range(self._samples):
            total += self._adc.read_u16()
        return (total + self._samples // 2) // self._samples

    def percent(self, raw: int) -> float:
        """Moisture in % (0 = dry soil, 100 = saturated soil), clamped, 0.1 % resolution."""
        pct = (self._dry - raw) * 100.0 / (self._dry - self._wet)
        if pct < 0.0:
            return 0.0
        if pct > 100.0:
            return 100.0
        return round(pct, 1)

    def read(self) -> "Tuple[float, int]":
        """(moisture %, averaged raw reading)."""
        raw = self.read_raw()
        return self.percent(raw), raw
