# The air around the node and the soil temperature under it (part of the world model,
# boards/emulated/world.py).
#
# Air temperature, humidity and pressure drift linearly at their *_drift_* rates and stop at
# the ends of their range. Soil temperature lags the air temperature as a first-order system
# with time constant soil_temperature_lag_s: dTs/dt = (Ta - Ts) / tau. For a linearly drifting
# air temperature that equation has a closed-form solution, so a lazy step of any length is
# exact (the step is split where the air temperature reaches the end of its range).
# Probe n of several reads soil_temperature_c + soil_temperature_offset_c_<n> (another depth).
#
# Runs under MicroPython and CPython: no typing at runtime.
import math

MAX_PROBES = 8  # protocol.MAX_CHANNELS: soil_temperature .. soil_temperature_8

AIR_MIN_C = -40
AIR_MAX_C = 85
SOIL_MIN_C = -55  # the DS18B20's range
SOIL_MAX_C = 125

# name: (default, kind, low, high, unit)   (see world.CONDITIONS)
CONDITIONS = {
    "air_temperature_c": (20.0, "num", AIR_MIN_C, AIR_MAX_C, "degC"),
    "air_temperature_drift_c_per_h": (0.0, "num", -100, 100, "degC per hour"),
    "air_humidity_pct": (50.0, "num", 0, 100, "%RH"),
    "air_humidity_drift_pct_per_h": (0.0, "num", -100, 100, "%RH per hour"),
    "pressure_hpa": (1013.25, "num", 300, 1100, "hPa"),
    "pressure_drift_hpa_per_h": (0.0, "num", -100, 100, "hPa per hour"),
    "soil_temperature_c": (18.0, "num", SOIL_MIN_C, SOIL_MAX_C, "degC at probe 1"),
    "soil_temperature_lag_s": (10800, "num", 0, 10000000,
                               "s, time constant of soil following air; 0: no lag"),
}
for _n in range(2, MAX_PROBES + 1):
    CONDITIONS["soil_temperature_offset_c_%d" % _n] = (
        0.0, "num", -50, 50, "degC, probe %d minus probe 1" % _n)

# Conditions that evolve with time: set() stores them as floats.
STATE = ("air_temperature_c", "air_humidity_pct", "pressure_hpa", "soil_temperature_c")


def _clamp(value, low, high):
    return low if value < low else high if value > high else value


def _ramp(value, rate_per_s, dt, low, high):
    return _clamp(value + rate_per_s * dt, low, high)


def _lagged(soil, air, rate, tau, dt):
    """Soil temperature after dt s of following air(t) = air + rate * t with time constant tau."""
    if tau <= 0:
        return air + rate * dt
    return air + rate * dt - rate * tau + (soil - air + rate * tau) * math.exp(-dt / tau)


def step(c, dt):
    """Advance the air and soil conditions `c` by dt simulated seconds."""
    air = c["air_temperature_c"]
    soil = c["soil_temperature_c"]
    rate = c["air_temperature_drift_c_per_h"] / 3600.0
    tau = c["soil_temperature_lag_s"]
    remaining = dt
    for _ in range(2):  # at most: drift until the end of the range, then flat
        segment = remaining
        if rate > 0 and air + rate * segment > AIR_MAX_C:
            segment = (AIR_MAX_C - air) / rate
        elif rate < 0 and air + rate * segment < AIR_MIN_C:
            segment = (AIR_MIN_C - air) / rate
        soil = _lagged(soil, air, rate, tau, segment)
        air = _ramp(air, rate, segment, AIR_MIN_C, AIR_MAX_C)
        remaining -= segment
        if remaining <= 0:
            break
        rate = 0.0
    c["air_temperature_c"] = air
    c["soil_temperature_c"] = _clamp(soil, SOIL_MIN_C, SOIL_MAX_C)
    c["air_humidity_pct"] = _ramp(c["air_humidity_pct"], c["air_humidity_drift_pct_per_h"] / 3600.0,
                                  dt, 0, 100)
    c["pressure_hpa"] = _ramp(c["pressure_hpa"], c["pressure_drift_hpa_per_h"] / 3600.0, dt,
                              300, 1100)


def soil_temperature(c, probe):
    """Temperature at soil probe 1..MAX_PROBES (degC)."""
    value = c["soil_temperature_c"]
    if probe > 1:
        value += c["soil_temperature_offset_c_%d" % probe]
    return _clamp(value, SOIL_MIN_C, SOIL_MAX_C)
