# The drone payload's world (part of the world model, boards/emulated/world.py): aroma in the
# air, the tanks that feed the flavor diffusers, their float switches, and the MQ-135 gas
# sensor's analog front end.
#
# Aroma: voc_ppb (ethanol-equivalent) obeys dC/dt = E - k (C - background), where
# E = sum over diffusers of duty_n * diffuser_emission_ppb_per_s_<n> (only while the diffuser's
# tank holds liquid) and k = ventilation_per_s. For a constant E the solution is exponential
# in closed form, so a lazy step is exact; it is split where a tank runs dry (E changes there).
# Tanks: diffuser n draws duty_n * diffuser_flow_ml_per_s_<n> from tank diffuser_tank_<n>.
# Float switch of tank t: its contact is closed while tank_level_ml_<t> is at or above
# tank_switch_threshold_ml_<t> and opens below it; within tank_slosh_ml of the threshold the
# liquid sloshes and the contact chatters (what the driver's debounce is for).
# Arm switch (the wiring role ARM_ROLE): its contact is closed while the payload is "armed"
# (the flight controller or a key switch says the diffusers may run).
#
# MQ-135 (a tin-oxide sensor in a load-resistor divider, module powered at mq135_vc_v):
#   ppm  = mq135_clean_air_ppm + voc_ppb * mq135_ppm_per_voc_ppb     (CO2-equivalent)
#   Rs   = R0 * (ppm / a) ** (1 / b) * warm-up factor                (a, b: mq135_curve_a/_b)
#   Vout = Vc * RL / (Rs + RL);  ADC pin = Vout * mq135_divider_ratio;  u16 = V / 3.3 V * 65535
# The curve ppm = a * (Rs/R0) ** b is the usual power-law fit of the datasheet's CO2
# sensitivity line (a = 116.6, b = -2.769). During the first mq135_warmup_s after the heater
# is powered Rs is higher, by mq135_warmup_rs_factor at power-on falling linearly to 1.
#
# Runs under MicroPython and CPython: no typing at runtime.
import math
import random

DIFFUSERS = 4
TANKS = 2
ARM_ROLE = "arm_switch"
ADC_FULL_SCALE_V = 3.3  # what an ADC u16 of 65535 means (ESP32 at 11 dB, RP2040)
VOC_MAX_PPB = 1000000

# name: (default, kind, low, high, unit)   (see world.CONDITIONS)
CONDITIONS = {
    "voc_ppb": (100.0, "num", 0, VOC_MAX_PPB, "ppb ethanol-equivalent aroma/VOC in the air"),
    "voc_background_ppb": (100.0, "num", 0, 100000, "ppb the air settles to"),
    "ventilation_per_s": (0.01, "num", 0, 10, "1/s, exponential decay rate of the excess VOC"),
    "tank_slosh_ml": (0.0, "num", 0, 10000, "ml band around a threshold where a switch chatters"),
    "armed": (True, "bool", 0, 0, "the payload's arm switch is closed (diffusers may run)"),
    "mq135_heated_s": (0.0, "num", 0, 1000000000,
                       "s the MQ-135 heater has been on (a power cut: 0)"),
    "mq135_warmup_s": (60, "num", 0, 86400, "s until Rs settles after power-on"),
    "mq135_warmup_rs_factor": (4.0, "num", 1, 100, "Rs multiplier at power-on"),
    "mq135_r0_kohm": (76.6, "num", 0.1, 10000, "kOhm, Rs at Rs/R0 = 1"),
    "mq135_rl_kohm": (10.0, "num", 0.1, 10000, "kOhm load resistor"),
    "mq135_vc_v": (5.0, "num", 0, 10, "V supply of the divider"),
    "mq135_divider_ratio": (2 / 3, "num", 0, 1, "fraction of Vout reaching the ADC pin"),
    "mq135_curve_a": (116.6, "num", 0.001, 1000000, "ppm = a * (Rs/R0) ** b"),
    "mq135_curve_b": (-2.769, "num", -100, -0.001, "ppm = a * (Rs/R0) ** b"),
    "mq135_clean_air_ppm": (400.0, "num", 1, 100000, "ppm CO2-equivalent of clean air"),
    "mq135_ppm_per_voc_ppb": (0.1, "num", 0, 1000, "ppm CO2-equivalent per ppb VOC"),
}
for _n in range(1, DIFFUSERS + 1):
    CONDITIONS["diffuser_emission_ppb_per_s_%d" % _n] = (
        50.0, "num", 0, 100000, "ppb/s added to voc_ppb at 100 % duty")
    CONDITIONS["diffuser_flow_ml_per_s_%d" % _n] = (
        0.02, "num", 0, 1000, "ml/s drawn from its tank at 100 % duty")
    CONDITIONS["diffuser_tank_%d" % _n] = ((_n - 1) % TANKS + 1, "int", 1, TANKS, "tank number")
for _n in range(1, TANKS + 1):
    CONDITIONS["tank_level_ml_%d" % _n] = (100.0, "num", 0, 100000, "ml")
    CONDITIONS["tank_switch_threshold_ml_%d" % _n] = (
        10.0, "num", 0, 100000, "ml; below it the float switch opens")

STATE = ("voc_ppb", "mq135_heated_s") + tuple("tank_level_ml_%d" % n for n in range(1, TANKS + 1))


def _voc_after(voc, emission, k, background, dt):
    if k <= 0:
        return voc + emission * dt
    settled = background + emission / k
    return settled + (voc - settled) * math.exp(-k * dt)


def step(world, dt):
    """Advance aroma, tanks and the MQ-135 heater by dt simulated seconds."""
    c = world.conditions
    duties = [world.duty("diffuser_%d" % n) for n in range(1, DIFFUSERS + 1)]
    remaining = dt
    for _ in range(TANKS + 1):  # each pass ends the step or empties at least one tank
        draw = [0.0] * (TANKS + 1)
        emission = 0.0
        for n in range(1, DIFFUSERS + 1):
            duty = duties[n - 1]
            tank = c["diffuser_tank_%d" % n]
            if duty > 0 and c["tank_level_ml_%d" % tank] > 0:
                draw[tank] += duty * c["diffuser_flow_ml_per_s_%d" % n]
                emission += duty * c["diffuser_emission_ppb_per_s_%d" % n]
        segment = remaining
        for t in range(1, TANKS + 1):
            if draw[t] > 0:
                segment = min(segment, c["tank_level_ml_%d" % t] / draw[t])
        for t in range(1, TANKS + 1):
            name = "tank_level_ml_%d" % t
            if draw[t] > 0:
                left = c[name] - draw[t] * segment
                c[name] = left if left > 1e-9 else 0.0
        voc = _voc_after(c["voc_ppb"], emission, c["ventilation_per_s"],
                         c["voc_background_ppb"], segment)
        c["voc_ppb"] = min(float(VOC_MAX_PPB), max(0.0, voc))
        remaining -= segment
        if remaining <= 0:
            break
    c["mq135_heated_s"] = min(1e9, c["mq135_heated_s"] + dt)


def switch_closed(c, tank):
    """Whether tank's float switch contact is closed (level at or above its threshold)."""
    level = c["tank_level_ml_%d" % tank]
    threshold = c["tank_switch_threshold_ml_%d" % tank]
    slosh = c["tank_slosh_ml"]
    if slosh > 0 and abs(level - threshold) < slosh:
        return bool(random.getrandbits(1))
    return level >= threshold


def arm_closed(c):
    """Whether the arm switch's contact is closed (the payload is armed)."""
    return bool(c["armed"])


def mq135(c):
    """The MQ-135 front end now: {"ppm", "rs_kohm", "vout_v", "raw"} (raw: noiseless ADC u16)."""
    ppm = c["mq135_clean_air_ppm"] + c["voc_ppb"] * c["mq135_ppm_per_voc_ppb"]
    rs = c["mq135_r0_kohm"] * (ppm / c["mq135_curve_a"]) ** (1.0 / c["mq135_curve_b"])
    warmup, heated = c["mq135_warmup_s"], c["mq135_heated_s"]
    if heated < warmup:
        rs *= 1 + (c["mq135_warmup_rs_factor"] - 1) * (1 - heated / warmup)
    rl = c["mq135_rl_kohm"]
    vout = c["mq135_vc_v"] * rl / (rs + rl)
    raw = vout * c["mq135_divider_ratio"] / ADC_FULL_SCALE_V * 65535
    return {"ppm": ppm, "rs_kohm": rs, "vout_v": vout, "raw": min(65535.0, raw)}
