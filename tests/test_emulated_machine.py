"""The emulated machine and network modules under CPython: they model the circuit and fail like
the hardware. Time is a fake clock; no sleeps."""

from __future__ import annotations

import errno

import emu
import machine
import network
import pytest

from testkit.emulated import FakeClock, emulated_board, fresh_emulation  # noqa: F401

pytestmark = pytest.mark.usefixtures("fresh_emulation")


@pytest.fixture
def clock() -> FakeClock:
    clock = FakeClock()
    emulated_board("emulated", {"adc_noise_raw": 0, "soil_moisture": 50}, clock)
    return clock


# ---- Pin ------------------------------------------------------------------------------------


def levels(pin: machine.Pin) -> list[tuple[str, int | None]]:
    return [(e["mode"], e["level"]) for e in pin.history]


def test_output_pin_value_on_off_and_history(clock: FakeClock) -> None:
    pin = machine.Pin(26, machine.Pin.OUT, value=1)
    clock.advance(0.01)
    pin.off()
    pin.off()  # no change, no entry
    clock.advance(0.01)
    pin.on()
    pin(0)
    assert pin.value() == 0
    assert levels(pin) == [("in", None), ("out", 1), ("out", 0), ("out", 1), ("out", 0)]
    assert [e["t_ms"] for e in pin.history] == [0, 0, 10, 20, 20]


def test_output_without_value_drives_the_reset_level_zero(clock: FakeClock) -> None:
    # The classic boot glitch of an active-low relay: mode first, value after.
    pin = machine.Pin(26, machine.Pin.OUT)
    pin.value(1)
    assert levels(pin) == [("in", None), ("out", 0), ("out", 1)]


def test_value_before_output_mode_does_not_glitch(clock: FakeClock) -> None:
    pin = machine.Pin(26)
    pin.value(1)  # sets the output register only
    pin.init(machine.Pin.OUT)
    assert levels(pin) == [("in", None), ("out", 1)]


def test_pins_with_the_same_id_share_one_pad(clock: FakeClock) -> None:
    machine.Pin(26, machine.Pin.OUT, value=1)
    assert machine.Pin(26).value() == 1
    assert len(machine.Pin(26).history) == 2


def test_inputs_read_pulls_and_float_without_one(clock: FakeClock) -> None:
    assert machine.Pin(4, machine.Pin.IN, machine.Pin.PULL_UP).value() == 1
    assert machine.Pin(5, machine.Pin.IN, machine.Pin.PULL_DOWN).value() == 0
    floating = {machine.Pin(13, machine.Pin.IN).value() for _ in range(64)}
    assert floating == {0, 1}


def test_open_drain_drives_low_and_releases_high(clock: FakeClock) -> None:
    pin = machine.Pin(25, machine.Pin.OPEN_DRAIN, machine.Pin.PULL_UP, value=0)
    assert pin.value() == 0
    pin.value(1)
    assert pin.value() == 1
    assert levels(pin)[-2:] == [("od", 0), ("od", None)]


@pytest.mark.parametrize(
    ("pin", "message"),
    [(6, "invalid pin: GPIO 6 is wired to the SPI flash"),
     (40, "invalid pin: GPIO 40 does not exist on esp32"),
     (20, "invalid pin: GPIO 20 does not exist on esp32"),
     ("LED", "invalid pin: 'LED' is not a pin name on esp32"),
     (None, "invalid pin: None")],
)
def test_invalid_pins_raise_valueerror_naming_them(clock: FakeClock, pin: object,
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        machine.Pin(pin)


def test_input_only_pins_refuse_output(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="pin GPIO 34 can only be input"):
        machine.Pin(34, machine.Pin.OUT)
    machine.Pin(34, machine.Pin.IN)  # fine as an input


def test_irq_stores_the_handler(clock: FakeClock) -> None:
    def handler(pin: machine.Pin) -> None:
        pass

    irq = machine.Pin(4, machine.Pin.IN).irq(handler, machine.Pin.IRQ_FALLING)
    assert irq.trigger() == machine.Pin.IRQ_FALLING
    assert emu.get().pads[4].irq_handler is handler


# ---- ADC ------------------------------------------------------------------------------------


def test_adc_reads_the_probe_at_full_range_with_11db(clock: FakeClock) -> None:
    adc = machine.ADC(machine.Pin(34))
    adc.atten(machine.ADC.ATTN_11DB)
    assert adc.read_u16() == 37000  # 50 % between 50000 (dry) and 24000 (saturated)
    assert adc.read() == 37000 >> 4
    assert machine.ADC(34, atten=machine.ADC.ATTN_11DB).read_u16() == 37000


def test_adc_without_attenuation_clips_like_an_esp32(clock: FakeClock) -> None:
    assert machine.ADC(machine.Pin(34)).read_u16() == 65535


def test_adc_on_an_unconnected_pin_reads_floating_noise(clock: FakeClock) -> None:
    adc = machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB)
    readings = {adc.read_u16() for _ in range(32)}
    assert len(readings) > 16


def test_adc_on_a_pin_without_adc_raises(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="invalid pin for ADC: GPIO 5"):
        machine.ADC(machine.Pin(5))


def test_adc2_cannot_be_read_while_wifi_is_on(clock: FakeClock) -> None:
    adc = machine.ADC(machine.Pin(4), atten=machine.ADC.ATTN_11DB)
    adc.read_u16()
    network.WLAN(network.STA_IF).active(True)
    with pytest.raises(OSError) as info:
        adc.read_u16()
    assert info.value.errno == errno.ETIMEDOUT


def test_rp2040_adc_has_no_attenuation_and_led_is_a_named_pin() -> None:
    emulated_board("pico_w", {"adc_noise_raw": 0, "soil_moisture": 0}, FakeClock())
    assert machine.ADC(26).read_u16() == 50000
    led = machine.Pin("LED", machine.Pin.OUT)
    led.on()
    assert levels(led)[-1] == ("out", 1)
    with pytest.raises(ValueError, match="GPIO 25 is used by the Pico W's wireless chip"):
        machine.Pin(25)
    assert len(machine.unique_id()) == 8
    assert machine.freq() == 125_000_000


# ---- PWM, I2C and the rest ------------------------------------------------------------------


def test_pwm_records_duty_and_freq(clock: FakeClock) -> None:
    pwm = machine.PWM(machine.Pin(18), freq=1000, duty_u16=0)
    pwm.duty_u16(32768)
    pwm.freq(2000)
    assert (pwm.freq(), pwm.duty_u16()) == (2000, 32768)
    pwm.deinit()
    hist = [(e["mode"], e.get("duty_u16"), e.get("freq")) for e in machine.Pin(18).history]
    assert hist == [("in", None, None), ("pwm", 0, 1000), ("pwm", 32768, 1000),
                    ("pwm", 32768, 2000), ("in", None, None)]
    with pytest.raises(ValueError, match="can only be input"):
        machine.PWM(machine.Pin(36))


def test_i2c_without_devices_fails_with_enodev(clock: FakeClock) -> None:
    emulated_board("emulated", {"i2c_devices": []}, clock)
    i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21), freq=100_000)
    assert i2c.scan() == []
    for call in (lambda: i2c.readfrom(0x44, 6), lambda: i2c.writeto(0x44, b"\xfd"),
                 lambda: i2c.readfrom_mem(0x76, 0xD0, 1)):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.ENODEV
    with pytest.raises(ValueError, match="GPIO 6"):
        machine.I2C(0, scl=machine.Pin(6), sda=machine.Pin(21))


def test_i2c_talks_to_a_modelled_device(clock: FakeClock) -> None:
    class Echo:
        def __init__(self) -> None:
            self.written = b""

        def i2c_write(self, buf: bytes) -> None:
            self.written += buf

        def i2c_read(self, n: int) -> bytes:
            return bytes(range(n))

    emulated_board("emulated", {"i2c_devices": []}, clock)
    device = Echo()
    emu.get().i2c_devices[0x44] = device
    i2c = machine.I2C(0, scl=22, sda=21)
    assert i2c.scan() == [0x44]
    assert i2c.writeto(0x44, b"\xfd") == 1
    buf = bytearray(3)
    i2c.readfrom_mem_into(0x44, 0x10, buf)
    assert (device.written, bytes(buf)) == (b"\xfd\x10", b"\x00\x01\x02")


def sht4x_measure(i2c: machine.I2C, clock: FakeClock, address: int = 0x44) -> bytes:
    i2c.writeto(address, b"\xfd")  # SHT4x: measure, high precision (8.3 ms)
    clock.advance(0.01)
    return i2c.readfrom(address, 6)


def test_i2c_devices_from_world_json_answer_on_their_bus(clock: FakeClock) -> None:
    sim = emulated_board("emulated", {"air_temperature_c": 25.0, "i2c_devices": [
        {"model": "sht4x", "address": 0x44, "name": "inside"},
        {"model": "sht4x", "address": 0x45, "name": "outside", "bus": 1}],
        "wiring": {"i2c1_scl": 18, "i2c1_sda": 19}}, clock)
    bus0 = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
    bus1 = machine.I2C(1, scl=18, sda=19)
    assert (bus0.scan(), bus1.scan()) == ([0x44], [0x45])
    frame = sht4x_measure(bus0, clock)
    # The model adds the chip's 0.04 degC repeatability.
    celsius = -45 + 175 * int.from_bytes(frame[:2], "big") / 65535
    assert celsius == pytest.approx(25.0, abs=0.05)
    assert sim.buses.device("inside").name == "inside"  # the name its faults are keyed by
    # The chips sit on wires: peripheral 1 on bus 0's pins reaches bus 0's chips...
    assert machine.I2C(1, scl=22, sda=21).scan() == [0x44]
    assert machine.SoftI2C(machine.Pin(18), machine.Pin(19)).scan() == [0x45]
    # ...and on other pins, or with SDA and SCL swapped, nothing answers.
    for wrong in (machine.I2C(0, scl=16, sda=17), machine.I2C(0, scl=21, sda=22)):
        assert wrong.scan() == []
        with pytest.raises(OSError) as info:
            wrong.readfrom(0x44, 6)
        assert info.value.errno == errno.ENODEV
    with pytest.raises(ValueError, match=r"I2C\(2\) doesn't exist"):
        machine.I2C(2)


def test_an_absent_i2c_chip_is_enodev_and_powers_up_fresh_when_back(clock: FakeClock) -> None:
    sim = emulated_board("emulated", {}, clock)  # the garden profile's SHT4x at 0x44
    i2c = machine.I2C(0, scl=22, sda=21)
    before = sim.buses.device("sht4x")
    sht4x_measure(i2c, clock)
    sim.set_world(faults={"sht4x": "absent"})
    assert i2c.scan() == []
    for call in (lambda: i2c.writeto(0x44, b"\xfd"), lambda: i2c.readfrom(0x44, 6)):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.ENODEV
    sim.set_world(faults={"sht4x": None})
    assert i2c.scan() == [0x44]
    after = sim.buses.device("sht4x")
    assert after is not before and after.log == [] and after.name == "sht4x"
    assert len(sht4x_measure(i2c, clock)) == 6


def test_world_driven_inputs_fire_pin_irqs_on_their_edges(clock: FakeClock) -> None:
    sim = emulated_board("emulated", {"tank_level_ml_1": 11.0, "tank_switch_threshold_ml_1": 10},
                         clock)
    pin = machine.Pin(27, machine.Pin.IN, machine.Pin.PULL_UP)
    assert pin.value() == 0  # float up: the contact pulls the active-low input to GND
    seen: list[tuple[int, int]] = []
    pin.irq(lambda p: seen.append((p.id, p.value())), machine.Pin.IRQ_RISING)
    machine.idle()
    assert seen == []
    sim.set_world(tank_level_ml_1=9.5)  # below the threshold: the contact opens
    machine.idle()
    machine.idle()
    assert seen == [(27, 1)]  # once, with the level after the edge
    sim.set_world(tank_level_ml_1=50)
    machine.idle()
    assert seen == [(27, 1)]  # a falling edge; the handler wants rising ones only
    assert pin.value() == 0


def test_unique_id_differs_per_node() -> None:
    emulated_board("emulated", seed="bed-1")
    first = machine.unique_id()
    emulated_board("emulated", seed="bed-2")
    assert len(first) == 6
    assert machine.unique_id() != first


def test_resets_leave_the_process_and_wdt_records_feeds(clock: FakeClock) -> None:
    assert machine.reset_cause() == machine.PWRON_RESET
    for call in (machine.reset, machine.soft_reset, lambda: machine.deepsleep(10)):
        with pytest.raises(SystemExit):
            call()
    wdt = machine.WDT(timeout=2000)
    clock.advance(1.5)
    wdt.feed()
    assert emu.get().state()["wdt"] == {"timeout_ms": 2000, "fed_ms": 1500}
    assert len(machine.RTC().datetime()) == 8
    assert machine.freq() == 240_000_000


# ---- network --------------------------------------------------------------------------------


def test_wlan_connects_after_the_connect_delay(clock: FakeClock) -> None:
    wlan = network.WLAN(network.STA_IF)
    assert wlan is not None and wlan.status() == network.STAT_IDLE
    with pytest.raises(OSError):
        wlan.connect("garden", "secret")  # not active yet, as on an ESP32
    wlan.active(True)
    wlan.connect("garden", "secret")
    assert wlan.status() == network.STAT_CONNECTING
    assert not wlan.isconnected()
    assert wlan.ifconfig()[0] == "0.0.0.0"
    clock.advance(0.2)
    assert wlan.isconnected()
    assert wlan.ifconfig()[0].startswith("10.42.")
    assert wlan.status("rssi") == -60
    assert network.WLAN(network.STA_IF).isconnected()  # same interface state
    wlan.disconnect()
    assert wlan.status() == network.STAT_IDLE


def test_wifi_availability_is_a_world_condition(clock: FakeClock) -> None:
    sim = emu.get()
    sim.set_world(wifi_ssid="garden", wifi_key="secret")
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    wlan.connect("garden", "wrong")
    clock.advance(0.3)
    assert wlan.status() == network.STAT_WRONG_PASSWORD
    wlan.connect("other", "secret")
    clock.advance(0.3)
    assert wlan.status() == network.STAT_NO_AP_FOUND
    wlan.connect("garden", "secret")
    clock.advance(0.3)
    assert wlan.isconnected()
    sim.set_world(wifi_available=False)  # the access point goes away
    assert not wlan.isconnected()
    clock.advance(5)
    assert wlan.status() == network.STAT_NO_AP_FOUND
    assert wlan.scan() == []
    sim.set_world(wifi_available=True)  # it comes back: the station reconnects by itself
    assert wlan.status() == network.STAT_CONNECTING
    clock.advance(0.2)
    assert wlan.isconnected()
    assert sim.state()["wifi"] == {"active": True, "ssid": "garden", "status": "got_ip",
                                   "connected": True}
