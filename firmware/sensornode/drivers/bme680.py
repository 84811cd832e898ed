# Bosch BME680: air temperature, humidity, pressure and heated-plate gas resistance over I2C.
#
# Datasheet facts this driver relies on (BME680 datasheet, registers and compensation):
# - I2C address 0x76 (SDO to GND) or 0x77 (SDO to VDDIO); chip id 0x61 at 0xD0; soft reset by
#   writing 0xB6 to 0xE0, then ~2 ms start-up. Register writes are (register, value) pairs.
# - Calibration: 0x89..0xA1 and 0xE1..0xF0, plus res_heat_val (0x00, s8), res_heat_range
#   (0x02 bits 5:4) and range_switching_error (0x04 bits 7:4, signed).
# - ctrl_hum 0x72 osrs_h<2:0> (takes effect with the next ctrl_meas write); ctrl_meas 0x74
#   osrs_t<7:5> osrs_p<4:2> mode<1:0> (01 = forced); config 0x75 filter<4:2>; oversampling codes
#   1..5 = x1, x2, x4, x8, x16. ctrl_gas_0 0x70 heat_off<3>; ctrl_gas_1 0x71 run_gas<4>
#   nb_conv<3:0>; heater set points res_heat_0..9 at 0x5A.., gas_wait_0..9 at 0x64..
#   (bits 5:0 in 1 ms steps, bits 7:6 multiply by 1, 4, 16, 64).
# - meas_status_0 0x1D: new_data_0<7> gas_measuring<6> measuring<5> gas_meas_index<3:0>.
#   Data: press 0x1F..0x21 and temp 0x22..0x24 (20 bits, xlsb in bits 7:4), hum 0x25..0x26,
#   gas_r 0x2A..0x2B (10 bits: msb<7:0>, lsb<7:6>), gas_valid_r 0x2B<5>, heat_stab_r 0x2B<4>,
#   gas_range_r 0x2B<3:0>.
# - The datasheet's integer compensation (t_fine, pressure, humidity, gas with its two range
#   lookup tables); the floating-point heater-resistance formula for res_heat_x. Python
#   integers do not overflow, so a term the C version computes in int32 is exact here.
#
# Choices: gas_resistance is reported only when gas_valid_r AND heat_stab_r are set; otherwise
# read_measurement() still returns temperature, humidity and pressure, leaves gas_resistance
# out and sets `gas_error` to a NotReady saying why (None when the gas reading is good or the
# heater is disabled). The chip has no CRC, so a finished measurement's data block (which
# holds still in sleep mode) is read twice and the two must agree (else CRCError), and values
# well outside the chip's operating range (-40..85 degC, 300..1100 hPa; we allow 5 degC and
# 50 hPa beyond it) raise SensorError.
import asyncio

from sensornode.compat import const, sleep_ms
from sensornode.drivers.errors import CRCError, NotReady, SensorError

try:
    from typing import Any, Dict, Optional, Tuple
except ImportError:
    pass

ADDRESSES = (0x76, 0x77)
DEFAULT_ADDRESS = 0x77
CHIP_ID = 0x61
OVERSAMPLING = (1, 2, 4, 8, 16)  # factor; its register code is index + 1
MAX_HEATER_C = 400

_REG_RES_HEAT_VAL = const(0x00)
_REG_RES_HEAT_RANGE = const(0x02)
_REG_RANGE_SW_ERR = const(0x04)
_REG_STATUS = const(0x1D)
_REG_RES_HEAT_0 = const(0x5A)
_REG_GAS_WAIT_0 = const(0x64)
_REG_CTRL_GAS_0 = const(0x70)
_REG_CTRL_GAS_1 = const(0x71)
_REG_CTRL_HUM = const(0x72)
_REG_CTRL_MEAS = const(0x74)
_REG_CONFIG = const(0x75)
_REG_CAL1 = const(0x89)
_REG_CHIP_ID = const(0xD0)
_REG_RESET = const(0xE0)
_REG_CAL2 = const(0xE1)
_CAL1_LEN = const(25)
_CAL2_LEN = const(16)
_DATA_LEN = const(15)  # 0x1D..0x2B
_RESET_CMD = const(0xB6)
_STARTUP_MS = const(2)
_MODE_FORCED = const(0x01)
_RUN_GAS = const(0x10)
_HEAT_OFF = const(0x08)
_NEW_DATA = const(0x80)
_MEASURING = const(0x60)  # gas_measuring | measuring
_GAS_VALID = const(0x20)
_HEAT_STAB = const(0x10)
_SKIPPED = const(0x80000)  # a 20-bit data register's reset value: no conversion
# Measurement time: ~1.963 ms per T/P/H sample, ~4.3 ms switching and gas ADC, ~1 ms wake-up.
_SAMPLE_US = const(1963)
_OVERHEAD_US = const(4293)

# Gas-range lookup tables for the integer gas-resistance formula (BME680 datasheet).
GAS_RANGE_C1 = (2147483647, 2147483647, 2147483647, 2147483647, 2147483647, 2126008810,
                2147483647, 2130303777, 2147483647, 2147483647, 2143188679, 2136746228,
                2147483647, 2126008810, 2147483647, 2147483647)
GAS_RANGE_C2 = (4096000000, 2048000000, 1024000000, 512000000, 255744255, 127110228,
                64000000, 32258064, 16016016, 8000000, 4000000, 2000000, 1000000, 500000,
                250000, 125000)


def _u16(b: "Any", i: int) -> int:
    return b[i] | (b[i + 1] << 8)


def _s16(b: "Any", i: int) -> int:
    v = b[i] | (b[i + 1] << 8)
    return v - 65536 if v & 0x8000 else v


def _s8(v: int) -> int:
    return v - 256 if v & 0x80 else v


def _tdiv(a: int, b: int) -> int:
    """Integer division truncating toward zero, like C's `/` (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


class Calibration:
    """The factory calibration: par_* coefficients decoded from the chip's NVM registers."""

    def __init__(self, cal1: "Any", cal2: "Any", res_heat_val: int, res_heat_range: int,
                 range_sw_err: int) -> None:
        # cal1 = registers 0x89..0xA1, cal2 = 0xE1..0xF0 (offsets below are from their start).
        self.t1 = _u16(cal2, 8)
        self.t2 = _s16(cal1, 1)
        self.t3 = _s8(cal1[3])
        self.p1 = _u16(cal1, 5)
        self.p2 = _s16(cal1, 7)
        self.p3 = _s8(cal1[9])
        self.p4 = _s16(cal1, 11)
        self.p5 = _s16(cal1, 13)
        self.p7 = _s8(cal1[15])
        self.p6 = _s8(cal1[16])
        self.p8 = _s16(cal1, 19)
        self.p9 = _s16(cal1, 21)
        self.p10 = cal1[23]
        self.h1 = (cal2[2] << 4) | (cal2[1] & 0x0F)
        self.h2 = (cal2[0] << 4) | (cal2[1] >> 4)
        self.h3 = _s8(cal2[3])
        self.h4 = _s8(cal2[4])
        self.h5 = _s8(cal2[5])
        self.h6 = cal2[6]
        self.h7 = _s8(cal2[7])
        self.g2 = _s16(cal2, 10)
        self.g1 = _s8(cal2[12])
        self.g3 = _s8(cal2[13])
        self.res_heat_val = _s8(res_heat_val & 0xFF)
        self.res_heat_range = (res_heat_range & 0x30) >> 4
        self.range_sw_err = _s8(range_sw_err & 0xF0) // 16
        if self.t1 in (0, 0xFFFF) or self.t2 == 0 or self.p1 in (0, 0xFFFF):
            raise SensorError("bme680: calibration data is blank (t1=%d t2=%d p1=%d)"
                              % (self.t1, self.t2, self.p1))


def compensate_temperature(cal: Calibration, adc: int) -> "Tuple[int, int]":
    """(t_fine, temperature in 0.01 degC) from the 20-bit temperature ADC value."""
    var1 = (adc >> 3) - (cal.t1 << 1)
    var2 = (var1 * cal.t2) >> 11
    var3 = ((((var1 >> 1) * (var1 >> 1)) >> 12) * (cal.t3 << 4)) >> 14
    t_fine = var2 + var3
    return t_fine, (t_fine * 5 + 128) >> 8


def compensate_pressure(cal: Calibration, adc: int, t_fine: int) -> int:
    """Pressure in Pa from the 20-bit pressure ADC value and t_fine."""
    var1 = (t_fine >> 1) - 64000
    var2 = ((((var1 >> 2) * (var1 >> 2)) >> 11) * cal.p6) >> 2
    var2 += (var1 * cal.p5) << 1
    var2 = (var2 >> 2) + (cal.p4 << 16)
    var1 = (((((var1 >> 2) * (var1 >> 2)) >> 13) * (cal.p3 << 5)) >> 3) + ((cal.p2 * var1) >> 1)
    var1 = ((32768 + (var1 >> 18)) * cal.p1) >> 15
    press = (1048576 - adc - (var2 >> 12)) * 3125
    if var1 <= 0 or press <= 0:
        raise SensorError("bme680: pressure ADC value %d is out of range" % adc)
    # (divide first when doubling first would need more than 31 bits, as the datasheet does)
    press = (press // var1) << 1 if press >= 1 << 30 else (press << 1) // var1
    var1 = (cal.p9 * (((press >> 3) * (press >> 3)) >> 13)) >> 12
    var2 = ((press >> 2) * cal.p8) >> 13
    var3 = ((press >> 8) * (press >> 8) * (press >> 8) * cal.p10) >> 17
    return press + ((var1 + var2 + var3 + (cal.p7 << 7)) >> 4)


def compensate_humidity(cal: Calibration, adc: int, temp_x100: int) -> int:
    """Relative humidity in 0.001 %RH (clamped to 0..100 %) from the 16-bit humidity ADC
    value and the compensated temperature in 0.01 degC."""
    ts = temp_x100
    var1 = adc - (cal.h1 << 4) - (_tdiv(ts * cal.h3, 100) >> 1)
    var2 = (cal.h2 * (_tdiv(ts * cal.h4, 100) + (_tdiv((ts * _tdiv(ts * cal.h5, 100)) >> 6, 100))
                      + (1 << 14))) >> 10
    var3 = var1 * var2
    var4 = ((cal.h6 << 7) + _tdiv(ts * cal.h7, 100)) >> 4
    var5 = ((var3 >> 14) * (var3 >> 14)) >> 10
    var6 = (var4 * var5) >> 1
    hum = (((var3 + var6) >> 10) * 1000) >> 12
    return min(100000, max(0, hum))


def gas_resistance(cal: Calibration, adc: int, gas_range: int) -> int:
    """Gas-sensor resistance in ohm from the 10-bit gas ADC value and its range (0..15)."""
    var1 = ((1340 + 5 * cal.range_sw_err) * GAS_RANGE_C1[gas_range]) >> 16
    var2 = (adc << 15) - 16777216 + var1
    var3 = (GAS_RANGE_C2[gas_range] * var1) >> 9
    return (var3 + (var2 >> 1)) // var2


def heater_resistance_code(cal: Calibration, target_c: float, ambient_c: float) -> int:
    """res_heat_x for a heater target temperature (capped at 400 degC) at an ambient one.
    The datasheet's floating-point formula: single precision is ample for an 8-bit code."""
    target = min(MAX_HEATER_C, max(0, target_c))
    var1 = cal.g1 / 16.0 + 49.0
    var2 = cal.g2 / 32768.0 * 0.0005 + 0.00235
    var5 = var1 * (1.0 + var2 * target) + cal.g3 / 1024.0 * ambient_c
    scale = 4.0 / (4.0 + cal.res_heat_range) / (1.0 + cal.res_heat_val * 0.002)
    return min(255, max(0, int(3.4 * (var5 * scale - 25.0))))


def gas_wait_code(ms: int) -> int:
    """gas_wait_x for a heating duration: 6-bit count and a x1/x4/x16/x64 multiplier (the
    duration is rounded down to what the code can express; 0xFF = 4032 ms, the longest)."""
    if ms >= 4032:
        return 0xFF
    factor = 0
    while ms > 0x3F:
        ms //= 4
        factor += 1
    return (factor << 6) | ms


def gas_wait_ms(code: int) -> int:
    return (code & 0x3F) * (1, 4, 16, 64)[code >> 6]


def measurement_ms(temperature_os: int, pressure_os: int, humidity_os: int,
                   heater_ms: int = 0) -> int:
    """Upper estimate of a forced measurement's duration, heater time included."""
    us = (temperature_os + pressure_os + humidity_os) * _SAMPLE_US + _OVERHEAD_US
    return (us + 999) // 1000 + 1 + heater_ms


def _os_code(field: str, factor: int) -> int:
    if factor not in OVERSAMPLING:
        raise ValueError("%s: oversampling must be one of 1, 2, 4, 8, 16, got %r"
                         % (field, factor))
    return OVERSAMPLING.index(factor) + 1


class BME680:
    def __init__(self, i2c: "Any", address: int = DEFAULT_ADDRESS, temperature_os: int = 8,
                 pressure_os: int = 4, humidity_os: int = 2, heater_c: "Optional[int]" = 320,
                 heater_ms: int = 150, ambient_c: float = 25.0) -> None:
        if address not in ADDRESSES:
            raise ValueError("address: 0x%02x is not a BME680 address; use 0x76 or 0x77"
                             % address)
        self._i2c = i2c
        self.address = address
        self._osrs = (_os_code("temperature_os", temperature_os),
                      _os_code("pressure_os", pressure_os),
                      _os_code("humidity_os", humidity_os))
        self._factors = (temperature_os, pressure_os, humidity_os)
        self.calibration = None  # type: Optional[Calibration]
        self.ambient_c = ambient_c  # for the heater set point; updated by each measurement
        self.gas_error = None  # type: Optional[NotReady]
        self._heat_code = -1
        self._started = False
        self._check_heater(heater_c, heater_ms)
        self.heater_c = heater_c
        self.heater_ms = heater_ms

    @staticmethod
    def _check_heater(heater_c: "Optional[int]", heater_ms: int) -> None:
        if heater_c is not None and not 200 <= heater_c <= MAX_HEATER_C:
            raise ValueError("heater_c: %r is outside 200..400 degC (None disables the gas "
                             "measurement)" % (heater_c,))
        if not 1 <= heater_ms <= 4032:
            raise ValueError("heater_ms: %r is outside 1..4032 ms" % (heater_ms,))

    def _write(self, reg: int, value: int) -> None:
        self._i2c.writeto_mem(self.address, reg, bytes((value,)))

    def _read(self, reg: int, n: int) -> "Any":
        return self._i2c.readfrom_mem(self.address, reg, n)

    def setup(self) -> None:
        """Check the chip id, soft-reset, read the calibration, configure oversampling and the
        heater. Blocks ~2 ms (start-up after reset). OSError from the bus (ENODEV: missing)."""
        chip_id = self._read(_REG_CHIP_ID, 1)[0]
        if chip_id != CHIP_ID:
            raise SensorError("bme680: chip id at 0x%02x is 0x%02x, expected 0x61 (another "
                              "chip on this address?)" % (self.address, chip_id))
        self._write(_REG_RESET, _RESET_CMD)
        sleep_ms(_STARTUP_MS)
        self.calibration = Calibration(
            self._read(_REG_CAL1, _CAL1_LEN), self._read(_REG_CAL2, _CAL2_LEN),
            self._read(_REG_RES_HEAT_VAL, 1)[0], self._read(_REG_RES_HEAT_RANGE, 1)[0],
            self._read(_REG_RANGE_SW_ERR, 1)[0])
        self._write(_REG_CTRL_HUM, self._osrs[2])
        self._write(_REG_CONFIG, 0)  # IIR filter off: forced readings are independent
        self._write(_REG_CTRL_MEAS, (self._osrs[0] << 5) | (self._osrs[1] << 2))
        self._heat_code = -1
        self._started = False
        self.set_heater(self.heater_c, self.heater_ms)

    def set_heater(self, heater_c: "Optional[int]", heater_ms: int = 150) -> None:
        """Heater set point 0: target degC (None: no gas measurement) held for heater_ms."""
        self._check_heater(heater_c, heater_ms)
        self.heater_c = heater_c
        self.heater_ms = heater_ms
        if self.calibration is None:
            return
        if heater_c is None:
            self._write(_REG_CTRL_GAS_1, 0)
            self._write(_REG_CTRL_GAS_0, _HEAT_OFF)
            return
        self._write(_REG_GAS_WAIT_0, gas_wait_code(heater_ms))
        self._write(_REG_CTRL_GAS_0, 0)
        self._write(_REG_CTRL_GAS_1, _RUN_GAS)  # nb_conv = 0: set point 0
        self._heat_code = -1

    def _cal(self) -> Calibration:
        cal = self.calibration
        if cal is None:
            raise NotReady("bme680: setup() has not run")
        return cal

    def start_measurement(self) -> int:
        """Trigger a forced measurement; returns the ms to wait before read_measurement()."""
        cal = self._cal()
        heater_ms = 0
        if self.heater_c is not None:
            code = heater_resistance_code(cal, self.heater_c, self.ambient_c)
            if code != self._heat_code:
                self._write(_REG_RES_HEAT_0, code)
                self._heat_code = code
            heater_ms = gas_wait_ms(gas_wait_code(self.heater_ms))
        self._write(_REG_CTRL_MEAS, (self._osrs[0] << 5) | (self._osrs[1] << 2) | _MODE_FORCED)
        self._started = True
        t_os, p_os, h_os = self._factors
        return measurement_ms(t_os, p_os, h_os, heater_ms)

    def read_measurement(self) -> "Dict[str, float]":
        """{"air_temperature": degC, "air_humidity": %RH, "pressure": hPa,
        "gas_resistance": ohm (only when valid and the heater was stable, see gas_error)}.

        NotReady while the measurement runs or when none was started; CRCError when two
        reads of the finished data disagree; SensorError for out-of-range values."""
        cal = self._cal()
        if not self._started:
            raise NotReady("bme680: no measurement started")
        data = self._read(_REG_STATUS, _DATA_LEN)
        if not data[0] & _NEW_DATA or data[0] & _MEASURING:
            raise NotReady("bme680: measurement still running (status 0x%02x)" % data[0])
        again = self._read(_REG_STATUS, _DATA_LEN)
        if bytes(again[1:]) != bytes(data[1:]):
            raise CRCError("bme680: data changed between two reads of a finished "
                           "measurement (corrupted transfer)")
        self._started = False
        press_adc = (data[2] << 12) | (data[3] << 4) | (data[4] >> 4)
        temp_adc = (data[5] << 12) | (data[6] << 4) | (data[7] >> 4)
        hum_adc = (data[8] << 8) | data[9]
        if temp_adc == _SKIPPED or press_adc == _SKIPPED:
            raise SensorError("bme680: no conversion in the data registers (chip reset?)")
        t_fine, temp_x100 = compensate_temperature(cal, temp_adc)
        pressure_pa = compensate_pressure(cal, press_adc, t_fine)
        if not -4500 <= temp_x100 <= 9000 or not 25000 <= pressure_pa <= 115000:
            raise SensorError("bme680: implausible reading %.2f degC %.2f hPa"
                              % (temp_x100 / 100, pressure_pa / 100))
        self.ambient_c = temp_x100 / 100
        result = {
            "air_temperature": temp_x100 / 100,
            "air_humidity": round(compensate_humidity(cal, hum_adc, temp_x100) / 1000, 2),
            "pressure": round(pressure_pa / 100, 2),
        }
        self.gas_error = None
        if self.heater_c is not None:
            flags = data[14]
            if not flags & _GAS_VALID:
                self.gas_error = NotReady("bme680: gas measurement not valid")
            elif not flags & _HEAT_STAB:
                self.gas_error = NotReady("bme680: heater did not reach %d degC in %d ms"
                                          % (self.heater_c, self.heater_ms))
            else:
                adc = (data[13] << 2) | (data[14] >> 6)
                result["gas_resistance"] = gas_resistance(cal, adc, flags & 0x0F)
        return result

    async def read(self) -> "Dict[str, float]":
        """Measure, waiting asynchronously for the conversion."""
        await asyncio.sleep(self.start_measurement() / 1000)
        return self.read_measurement()
