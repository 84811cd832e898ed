"""Board profiles: the shipped ones are valid; each kind of mistake names the field and the fix."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from edge_gateway.boards import (
    BoardProfileError,
    BoardProfileWarning,
    load_profile,
    pin_facts_json,
    profile_warnings,
    shipped_profiles,
    shipped_roles,
    validate_profile,
)

ESP32: dict[str, Any] = {
    "board": "my_esp32", "chip": "esp32",
    "pins": {"soil_adc": 34, "pump_relay": 26, "status_led": 2},
    "relay_active_low": True, "status_led_active_low": False, "adc_samples": 8,
}
ESP32_I2C: dict[str, Any] = {**ESP32, "pins": {**ESP32["pins"], "i2c_sda": 21, "i2c_scl": 22}}
DRONE: dict[str, Any] = {
    "board": "my_drone", "chip": "esp32", "role": "drone",
    "pins": {"status_led": 2, "diffuser_1": 25, "diffuser_2": 26, "mq135_adc": 35},
}
S3: dict[str, Any] = {
    "board": "my_s3", "chip": "esp32s3", "pins": {"soil_adc": 1, "pump_relay": 4},
}
PICO_W: dict[str, Any] = {
    "board": "pico_w", "chip": "rp2040",
    "pins": {"soil_adc": 26, "pump_relay": 15, "status_led": "LED"},
}


def with_changes(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    profile = copy.deepcopy(base)
    for key, value in changes.items():
        if key.startswith("pin_"):
            profile["pins"][key[4:]] = value
        else:
            profile[key] = value
    return profile


def test_shipped_profiles_are_valid_for_both_roles() -> None:
    assert shipped_profiles() == ["emulated", "esp32_devkitc", "esp32_s3_devkitc", "pico_w"]
    for name in shipped_profiles():
        assert shipped_roles(name) == ["garden", "drone"]
        for role in shipped_roles(name):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                profile = load_profile(name, role)
            assert profile["board"] == name and profile["role"] == role
            assert validate_profile(profile) == []
            assert profile_warnings(profile) == []


def test_examples_are_valid() -> None:
    assert validate_profile(ESP32) == []
    assert validate_profile(PICO_W) == []


@pytest.mark.parametrize(
    ("base", "changes", "expected"),
    [
        (ESP32, {"pin_soil_adc": 4},
         "pins.soil_adc: GPIO 4 is on ADC2, which cannot be read while Wi-Fi is on; "
         "use one of GPIO 32-39 (ADC1)"),
        (ESP32, {"pin_soil_adc": 5}, "pins.soil_adc: GPIO 5 has no ADC on esp32; "
                                     "use one of GPIO 32-39"),
        (ESP32, {"pin_pump_relay": 35},
         "pins.pump_relay: GPIO 35 is input-only on esp32 (GPIO 34-39); use an output-capable "
         "GPIO (0-5, 12-19, 21-23, 25-27, 32-33)"),
        (ESP32, {"pin_status_led": 36}, "pins.status_led: GPIO 36 is input-only"),
        (ESP32, {"pin_pump_relay": 7},
         "pins.pump_relay: GPIO 7 is wired to the SPI flash; use another GPIO (free: 0-5, "
         "12-19, 21-23, 25-27, 32-39)"),
        (ESP32, {"pin_pump_relay": 24}, "pins.pump_relay: GPIO 24 does not exist on esp32; "
                                        "use one of GPIO 0-5, 12-19"),
        (ESP32, {"pin_pump_relay": 40}, "pins.pump_relay: GPIO 40 does not exist on esp32"),
        (ESP32, {"pin_status_led": 26},
         "pins.status_led: GPIO 26 is already used by pins.pump_relay; give each role its own pin"),
        (ESP32, {"pin_status_led": "LED"},
         "pins.status_led: 'LED' is not a pin name on esp32 (named pins: none on this board); "
         "use a GPIO number"),
        (ESP32, {"pin_pump_relay": "26"}, "pins.pump_relay: '26' is not a pin name"),
        (ESP32, {"pin_pump_relay": 2.5}, "pins.pump_relay: must be a GPIO number or a pin name"),
        (ESP32, {"pin_fan": 27}, "pins.fan: unknown pin role; known roles are arm_switch, "),
        (ESP32, {"chip": "esp8266"}, "chip: 'esp8266' is not a known chip; use one of esp32, "
                                     "esp32s3, rp2040"),
        (ESP32, {"role": "tractor"}, "role: must be one of garden, drone, got 'tractor'"),
        (ESP32, {"pin_onewire": 36}, "pins.onewire: GPIO 36 is input-only on esp32"),
        (ESP32, {"pin_diffuser_1": 39}, "pins.diffuser_1: GPIO 39 is input-only on esp32"),
        (ESP32, {"pin_mq135_adc": 13}, "pins.mq135_adc: GPIO 13 is on ADC2, which cannot be "
                                       "read while Wi-Fi is on"),
        (ESP32, {"i2c_devices": [{"model": "sht4x", "address": 68}]},
         "i2c_devices: the board has I2C chips but no bus; add pins.i2c_sda and pins.i2c_scl"),
        (ESP32_I2C, {"i2c_devices": [{"model": "sht31", "address": 68}]},
         "i2c_devices[0].model: 'sht31' has no driver; use one of bme680, sgp40, sht4x"),
        (ESP32_I2C, {"i2c_devices": [{"model": "bme680", "address": 0x44}]},
         "i2c_devices[0].address: bme680 answers only at 0x76 (118), 0x77 (119), got 68"),
        (ESP32_I2C, {"i2c_devices": [{"model": "sht4x", "address": 0x44},
                                     {"model": "sht4x", "address": 0x44}]},
         "i2c_devices[1].address: 0x44 is already used by i2c_devices[0] (sht4x) on the same "
         "bus; strap one of them to another address"),
        (ESP32_I2C, {"i2c_devices": {"sht4x": 68}}, "i2c_devices: must be a list like"),
        (ESP32_I2C, {"pin_i2c_scl": 21}, "pins.i2c_sda: GPIO 21 is already used by "
                                         "pins.i2c_scl"),
        (DRONE, {"pins": {"status_led": 2}}, "pins.diffuser_1: missing; every drone node needs "
                                              "a diffuser_1 pin"),
        (S3, {"pin_soil_adc": 12}, "pins.soil_adc: GPIO 12 is on ADC2, which cannot be read "
                                   "while Wi-Fi is on; use one of GPIO 1-10 (ADC1)"),
        (S3, {"pin_pump_relay": 27}, "pins.pump_relay: GPIO 27 is wired to the SPI flash / "
                                     "PSRAM on ESP32-S3 modules"),
        (ESP32, {"board": "My Board"}, "board: must be a name of a-z, 0-9, '_' or '-'"),
        (ESP32, {"relay_active_lo": True}, "relay_active_lo: unknown field; known fields are "),
        (ESP32, {"relay_active_low": "yes"}, "relay_active_low: must be true or false, got 'yes'"),
        (ESP32, {"adc_samples": 0}, "adc_samples: must be an integer in 1..64, got 0"),
        (ESP32, {"pins": [34, 26]}, "pins: missing or not an object; give e.g."),
        (PICO_W, {"pin_pump_relay": 25},
         "pins.pump_relay: GPIO 25 is used by the Pico W's wireless chip (CYW43) as SPI CS; "
         "use another GPIO (free: 0-22, 26-28)"),
        (PICO_W, {"pin_soil_adc": 29}, "pins.soil_adc: GPIO 29 is used by the Pico W's wireless"),
        (PICO_W, {"pin_soil_adc": 22}, "pins.soil_adc: GPIO 22 has no ADC on rp2040; use one of "
                                       "GPIO 26-28"),
        (PICO_W, {"pin_soil_adc": "LED"}, "pins.soil_adc: 'LED' cannot be read as an ADC; "
                                          "use one of GPIO 26-28"),
        (PICO_W, {"pin_status_led": 15}, "pins.status_led: GPIO 15 is already used by "
                                         "pins.pump_relay"),
    ],
)
def test_each_mistake_names_field_and_fix(base: dict[str, Any], changes: dict[str, Any],
                                          expected: str) -> None:
    errors = validate_profile(with_changes(base, **changes))
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected)


def test_missing_required_roles_and_all_errors_are_reported() -> None:
    profile = with_changes(ESP32, chip="esp32", adc_samples=99)
    del profile["pins"]["soil_adc"]
    profile["pins"]["pump_relay"] = 34
    errors = validate_profile(profile)
    assert errors == [
        "adc_samples: must be an integer in 1..64, got 99",
        "pins.soil_adc: missing; every garden node needs a soil_adc pin",
        errors[2],
    ]
    assert errors[2].startswith("pins.pump_relay: GPIO 34 is input-only")
    assert validate_profile([]) == ["profile: must be a JSON object, got list"]  # type: ignore[arg-type]


def test_a_relay_on_a_strapping_pin_is_a_warning_not_an_error() -> None:
    profile = with_changes(ESP32, pin_pump_relay=15)
    assert validate_profile(profile) == []
    assert profile_warnings(profile) == [
        "pins.pump_relay: GPIO 15 is a strapping pin (its level at reset selects the boot mode); "
        "prefer another pin if you can"]
    # An LED on a strapping pin only blinks at boot: no warning.
    assert profile_warnings(ESP32) == []


def test_load_profile_raises_with_field_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(with_changes(ESP32, pin_soil_adc=4, pin_pump_relay=34)))
    with pytest.raises(BoardProfileError) as info:
        load_profile(path)
    assert len(info.value.errors) == 2
    message = str(info.value)
    assert str(path) in message
    assert "pins.soil_adc: GPIO 4 is on ADC2" in message
    assert "pins.pump_relay: GPIO 34 is input-only" in message


def test_load_profile_warns_about_traps(tmp_path: Path) -> None:
    path = tmp_path / "strap.json"
    path.write_text(json.dumps(with_changes(ESP32, pin_pump_relay=12)))
    with pytest.warns(BoardProfileWarning, match="pins.pump_relay: GPIO 12 is a strapping pin"):
        load_profile(path)


def test_load_profile_errors_for_files_and_names(tmp_path: Path) -> None:
    with pytest.raises(BoardProfileError, match="board profile 'esp8266' not found; shipped "
                                                "profiles: emulated, esp32_devkitc, "
                                                "esp32_s3_devkitc, pico_w"):
        load_profile("esp8266")
    with pytest.raises(BoardProfileError, match="does not exist"):
        load_profile(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"board": "x",')
    with pytest.raises(BoardProfileError, match="not valid JSON"):
        load_profile(broken)


def test_board_name_must_match_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    from edge_gateway import boards

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "garden.json").write_text(json.dumps(ESP32))
    monkeypatch.setattr(boards, "BOARDS_DIR", tmp_path)
    with pytest.raises(BoardProfileError, match="board: 'my_esp32' does not match its directory "
                                                "'mine'; make them equal"):
        load_profile("mine")


def test_pin_facts_for_the_emulator() -> None:
    facts = pin_facts_json(PICO_W)
    assert facts["adc"] == [26, 27, 28]
    assert facts["named_pins"] == {"LED": "output"}
    assert 25 not in facts["gpios"]  # type: ignore[operator]
    assert "25" in facts["reserved"]  # type: ignore[operator]
    esp = pin_facts_json(ESP32)
    assert esp["adc_wifi_blocked"] == [0, 2, 4, 12, 13, 14, 15, 25, 26, 27]
    assert esp["input_only"] == [34, 35, 36, 37, 38, 39]
    assert json.loads(json.dumps(esp)) == esp


def test_examples_for_every_role_and_chip_are_valid() -> None:
    assert validate_profile(ESP32_I2C) == []
    assert validate_profile(DRONE) == []
    assert validate_profile(S3) == []


def test_a_float_switch_on_a_pin_without_pull_up_is_a_warning() -> None:
    profile = with_changes(ESP32, pin_tank_switch_1=36)
    assert validate_profile(profile) == []
    assert profile_warnings(profile) == [
        "pins.tank_switch_1: GPIO 36 has no internal pull-up on esp32; fit an external pull-up "
        "resistor (e.g. 10 kOhm to 3.3 V)"]


def test_role_file_and_board_lookups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_gateway import boards

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "garden.json").write_text(json.dumps({**ESP32, "board": "mine"}))
    (tmp_path / "mine" / "drone.json").write_text(json.dumps({**DRONE, "board": "mine",
                                                              "role": "garden"}))
    monkeypatch.setattr(boards, "BOARDS_DIR", tmp_path)
    assert load_profile("mine")["board"] == "mine"
    with pytest.raises(BoardProfileError, match=r"role: 'garden' does not match its file name "
                                                r"drone\.json"):
        load_profile("mine", "drone")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "garden.json").write_text(json.dumps({**ESP32, "board": "other"}))
    with pytest.raises(BoardProfileError, match="board 'other' has no 'drone' profile; it has: "
                                                "garden"):
        load_profile("other", "drone")
