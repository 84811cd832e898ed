# Register-level model of a Bosch BME680 on the emulated I2C bus.
#
# A 256-byte register file: chip id 0x61 at 0xD0, a plausible factory calibration in NVM
# (0x89..0xA1, 0xE1..0xF0, 0x00, 0x02, 0x04; typical values of real parts), control registers
# 0x50..0x75 that the host writes as (register, value) pairs, soft reset 0xB6 -> 0xE0. Reads
# auto-increment from the register pointer.
#
# Writing ctrl_meas with mode 01 starts a forced measurement (ctrl_hum takes effect then, as
# on the chip). It lasts 1.963 ms per T/P/H sample + 1.908 ms, plus, with run_gas, the heater
# set point's gas_wait + 2.385 ms. Meanwhile meas_status_0 shows measuring (and
# gas_measuring), new_data_0 is clear and the data registers keep their previous contents;
# at the end the chip goes back to sleep with new data.
#
# The raw values are what the chip's ADCs would give for the world's air: the datasheet's
# floating-point compensation (below) is inverted by bisection, so a host applying either of
# Bosch's compensations to them reads the world back. The gas sensor's resistance falls as
# voc_ppb rises (R = 200 kOhm / (1 + ppb / 50) ** 0.6 at a 320 degC plate, higher on a cooler
# one); the heater reaches its target in 5 ms + 0.08 ms per degC above ambient, and
# heat_stab_r is set only if gas_wait is that long. The ADC range is auto-selected.
#
# Faults via world.fault(self.name): "crc" (no CRC on this chip: the transfer of the data
# registers is corrupted, one bit flipped per read, never the same one twice in a row),
# "stuck" (the data registers repeat the last good frame), "noise" (uniform noise on the air
# values, +/-10 % on the gas resistance).
#
# Runs under MicroPython and CPython: no typing at runtime, no dataclasses.
import math
import random

CHIP_ID = 0x61
# Factory calibration of the modelled part (par_*), res_heat_val/range, range_sw_err.
CALIBRATION = {
    "t1": 26137, "t2": 26335, "t3": 3,
    "p1": 35783, "p2": -10356, "p3": 88, "p4": 6530, "p5": -58, "p6": 30, "p7": 41,
    "p8": -1693, "p9": -2664, "p10": 30,
    "h1": 781, "h2": 1012, "h3": 0, "h4": 45, "h5": 20, "h6": 120, "h7": -100,
    "g1": -30, "g2": -10720, "g3": 18,
    "res_heat_val": 42, "res_heat_range": 1, "range_sw_err": -1,
}
# par_* -> (register of the low byte, size); 12-bit h1/h2 are packed separately.
_LAYOUT = {
    "t1": (0xE9, 2), "t2": (0x8A, 2), "t3": (0x8C, 1),
    "p1": (0x8E, 2), "p2": (0x90, 2), "p3": (0x92, 1), "p4": (0x94, 2), "p5": (0x96, 2),
    "p6": (0x99, 1), "p7": (0x98, 1), "p8": (0x9C, 2), "p9": (0x9E, 2), "p10": (0xA0, 1),
    "h3": (0xE4, 1), "h4": (0xE5, 1), "h5": (0xE6, 1), "h6": (0xE7, 1), "h7": (0xE8, 1),
    "g1": (0xED, 1), "g2": (0xEB, 2), "g3": (0xEE, 1), "res_heat_val": (0x00, 1),
}
GAS_C1 = (1.0, 1.0, 1.0, 1.0, 1.0, 0.99, 1.0, 0.992, 1.0, 1.0, 0.998, 0.995, 1.0, 0.99, 1.0, 1.0)
GAS_C2 = (8000000.0, 4000000.0, 2000000.0, 1000000.0, 499500.4995, 248262.1648, 125000.0,
          63004.03226, 31281.28128, 15625.0, 7812.5, 3906.25, 1953.125, 976.5625, 488.28125,
          244.140625)
_OS = (0, 1, 2, 4, 8, 16, 16, 16)  # osrs code -> samples
_WRITABLE = (0x50, 0x75)  # control registers; plus 0xE0 (reset)


def calibration_registers(cal):
    """{register: byte} of the NVM holding `cal` (other NVM bytes hold unrelated data)."""
    regs = {}
    for reg in range(0x89, 0xA2):
        regs[reg] = (reg * 37 + 11) & 0xFF  # not calibration: must be ignored by the host
    for reg in range(0xE1, 0xF1):
        regs[reg] = (reg * 53 + 7) & 0xFF
    for name in _LAYOUT:
        reg, size = _LAYOUT[name]
        value = cal[name] & 0xFFFF
        regs[reg] = value & 0xFF
        if size == 2:
            regs[reg + 1] = value >> 8
    regs[0xE1] = (cal["h2"] >> 4) & 0xFF
    regs[0xE2] = ((cal["h2"] & 0x0F) << 4) | (cal["h1"] & 0x0F)
    regs[0xE3] = (cal["h1"] >> 4) & 0xFF
    regs[0x02] = 0x06 | ((cal["res_heat_range"] & 3) << 4)  # bits 3:0 reserved
    regs[0x04] = 0x09 | ((cal["range_sw_err"] & 0x0F) << 4)
    return regs


# ---- the datasheet's floating-point compensation (forward direction) -----------------------

def temperature(cal, adc):
    """(t_fine, degC)"""
    var1 = (adc / 16384.0 - cal["t1"] / 1024.0) * cal["t2"]
    x = adc / 131072.0 - cal["t1"] / 8192.0
    t_fine = var1 + x * x * cal["t3"] * 16.0
    return t_fine, t_fine / 5120.0


def pressure(cal, adc, t_fine):
    """Pa"""
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * cal["p6"] / 131072.0 + var1 * cal["p5"] * 2.0
    var2 = var2 / 4.0 + cal["p4"] * 65536.0
    var1 = (cal["p3"] * var1 * var1 / 16384.0 + cal["p2"] * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * cal["p1"]
    p = (1048576.0 - adc - var2 / 4096.0) * 6250.0 / var1
    var1 = cal["p9"] * p * p / 2147483648.0
    var2 = p * cal["p8"] / 32768.0
    var3 = (p / 256.0) ** 3 * cal["p10"] / 131072.0
    return p + (var1 + var2 + var3 + cal["p7"] * 128.0) / 16.0


def humidity(cal, adc, t_c):
    """%RH, not clamped"""
    var1 = adc - (cal["h1"] * 16.0 + cal["h3"] / 2.0 * t_c)
    var2 = var1 * (cal["h2"] / 262144.0 * (1.0 + cal["h4"] / 16384.0 * t_c
                                             + cal["h5"] / 1048576.0 * t_c * t_c))
    return var2 + (cal["h6"] / 16384.0 + cal["h7"] / 2097152.0 * t_c) * var2 * var2


def gas_resistance(cal, adc, gas_range):
    var1 = (1340.0 + 5.0 * cal["range_sw_err"]) * GAS_C1[gas_range]
    return var1 * GAS_C2[gas_range] / (adc - 512.0 + var1)


def heater_target_c(cal, res_heat, ambient_c):
    """The plate temperature a res_heat_x code asks for (the heater formula, inverted)."""
    var1 = cal["g1"] / 16.0 + 49.0
    var2 = cal["g2"] / 32768.0 * 0.0005 + 0.00235
    factor = 4.0 / (4.0 + cal["res_heat_range"]) / (1.0 + cal["res_heat_val"] * 0.002)
    var5 = (res_heat / 3.4 + 25.0) / factor
    return ((var5 - cal["g3"] / 1024.0 * ambient_c) / var1 - 1.0) / var2


def _solve(f, target, low, high, rising):
    """The integer in low..high where the monotonic f crosses target (bisection)."""
    while high - low > 1:
        mid = (low + high) // 2
        if (f(mid) < target) == rising:
            low = mid
        else:
            high = mid
    return low if abs(f(low) - target) <= abs(f(high) - target) else high


LOG_MAX = 64

class Device:
    NOISE = {"t": 0.5, "rh": 3.0, "hpa": 1.0, "gas": 0.1}

    def __init__(self, world, address=0x77):
        self.world = world
        self.address = address
        self.name = "bme680"
        self.cal = CALIBRATION
        self.regs = bytearray(256)
        self.last_good = None  # data bytes 0x1F..0x2B of the last good frame ("stuck")
        self.reads = 0  # counts corrupted transfers ("crc")
        self.log = []  # the last LOG_MAX; ("w", bytes) / ("r", register, n) transactions, for tests
        self.power_on()

    def power_on(self):
        regs = self.regs
        for reg, value in calibration_registers(self.cal).items():
            regs[reg] = value
        regs[0xD0] = CHIP_ID
        self.reset()

    def reset(self):
        regs = self.regs
        for reg in range(0x1D, 0x76):
            regs[reg] = 0
        regs[0x1F] = regs[0x22] = regs[0x25] = 0x80  # "no conversion" values
        self.pointer = 0
        self.pending = None  # (done_s, settings) of a running measurement

    def _update(self):
        if self.pending is not None and self.world.now_s() >= self.pending[0]:
            settings = self.pending[1]
            self.pending = None
            self._finish(settings)

    def _remember(self, entry):
        self.log.append(entry)
        if len(self.log) > LOG_MAX:  # a node runs for days: keep the log bounded
            del self.log[: LOG_MAX // 2]

    def i2c_write(self, data):
        self._update()
        self._remember(("w", bytes(data)))
        if not data:
            return
        self.pointer = data[0]
        for i in range(0, len(data) - 1, 2):  # (register, value) pairs
            reg, value = data[i], data[i + 1]
            if reg == 0xE0:
                if value == 0xB6:
                    self.reset()
            elif _WRITABLE[0] <= reg <= _WRITABLE[1] and self.pending is None:
                self.regs[reg] = value
                if reg == 0x74 and value & 3 == 1:
                    self._start()
        if len(data) > 1 and len(data) % 2:
            self.pointer = data[-1]

    def i2c_read(self, n):
        self._update()
        start = self.pointer
        self._remember(("r", start, n))
        out = bytearray(n)
        for i in range(n):
            out[i] = self.regs[(start + i) & 0xFF]
        self.pointer = (start + n) & 0xFF
        first, last = max(start, 0x1F), min(start + n, 0x2C)
        if first < last and self.world.fault(self.name) == "crc":
            k = self.reads
            self.reads += 1
            out[first - start + (k * 7) % (last - first)] ^= 1 << (k % 8)
        return bytes(out)

    # ---- a forced measurement ------------------------------------------------------------

    def _start(self):
        regs = self.regs
        os_t, os_p, os_h = _OS[regs[0x74] >> 5], _OS[(regs[0x74] >> 2) & 7], _OS[regs[0x72] & 7]
        run_gas = bool(regs[0x71] & 0x10) and (regs[0x71] & 0x0F) <= 9
        point = regs[0x71] & 0x0F
        wait_code = regs[0x64 + point] if run_gas else 0
        wait_ms = (wait_code & 0x3F) * (1, 4, 16, 64)[wait_code >> 6]
        duration_us = (os_t + os_p + os_h) * 1963 + 1908
        if run_gas:
            duration_us += 2385 + wait_ms * 1000
        settings = (os_t, os_p, os_h, run_gas, point, wait_ms)
        self.pending = (self.world.now_s() + duration_us / 1e6, settings)
        regs[0x1D] = 0x20 | (0x40 if run_gas else 0)

    def _finish(self, settings):
        regs = self.regs
        os_t, os_p, os_h, run_gas, point, wait_ms = settings
        regs[0x74] &= 0xFC  # back to sleep
        fault = self.world.fault(self.name)
        if fault == "stuck" and self.last_good is not None:
            data = self.last_good
        else:
            data = self._frame(os_t, os_p, os_h, run_gas, point, wait_ms, fault == "noise")
            self.last_good = data
        regs[0x1F:0x2C] = data
        regs[0x1D] = 0x80 | point

    def _frame(self, os_t, os_p, os_h, run_gas, point, wait_ms, noisy):
        cal, world, noise = self.cal, self.world, self.NOISE
        t_c = world.value("air_temperature_c")
        rh = world.value("air_humidity_pct")
        hpa = world.value("pressure_hpa")
        # Measurement noise of a real part (so a steady world does not look like a stuck chip).
        if getattr(world, "measurement_noise", False):
            t_c += random.uniform(-0.02, 0.02)
            hpa += random.uniform(-0.02, 0.02)
        if noisy:
            t_c += random.uniform(-noise["t"], noise["t"])
            rh += random.uniform(-noise["rh"], noise["rh"])
            hpa += random.uniform(-noise["hpa"], noise["hpa"])
        data = bytearray(13)  # 0x1F..0x2B
        t_adc, p_adc, h_adc = 0x80000, 0x80000, 0x8000
        if os_t:
            t_adc = _solve(lambda a: temperature(cal, a)[1], t_c, 0, 0xFFFFF, True)
            t_fine, t_comp = temperature(cal, t_adc)
            if os_p:
                p_adc = _solve(lambda a: pressure(cal, a, t_fine), hpa * 100.0, 0, 0xFFFFF,
                               False)
            if os_h:
                target = min(100.0, max(0.0, rh))
                h_adc = _solve(lambda a: humidity(cal, a, t_comp), target, 0, 0xFFFF, True)
        data[0:3] = bytes((p_adc >> 12, (p_adc >> 4) & 0xFF, (p_adc & 0x0F) << 4))
        data[3:6] = bytes((t_adc >> 12, (t_adc >> 4) & 0xFF, (t_adc & 0x0F) << 4))
        data[6:8] = bytes((h_adc >> 8, h_adc & 0xFF))
        if run_gas:
            plate_c = heater_target_c(cal, self.regs[0x5A + point], t_c)
            ohm = 200000.0 / (1.0 + world.value("voc_ppb") / 50.0) ** 0.6
            ohm *= math.exp((320.0 - plate_c) / 80.0)
            stable = self.regs[0x70] & 0x08 == 0 and wait_ms >= 5 + 0.08 * (plate_c - t_c)
            if not stable:
                ohm *= 3.0  # the plate never got hot
            if noisy:
                ohm *= 1.0 + random.uniform(-noise["gas"], noise["gas"])
            gas_range, adc = self._gas_adc(ohm)
            data[11] = adc >> 2
            data[12] = ((adc & 3) << 6) | 0x20 | (0x10 if stable else 0) | gas_range
        return bytes(data)

    def _gas_adc(self, ohm):
        """The auto-selected range and 10-bit ADC value that read back as `ohm`."""
        cal = self.cal
        best = None
        for gas_range in range(16):
            var1 = (1340.0 + 5.0 * cal["range_sw_err"]) * GAS_C1[gas_range]
            adc = round(var1 * GAS_C2[gas_range] / ohm + 512.0 - var1)
            if 0 <= adc <= 1023 and (best is None or abs(adc - 512) < abs(best[1] - 512)):
                best = (gas_range, adc)
        if best is None:
            return (0, 0) if ohm > GAS_C2[0] else (15, 1023)
        return best
