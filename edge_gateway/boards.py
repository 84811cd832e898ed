"""Board profiles: pin maps as data, validated on the host against chip facts.

A profile lives in boards/<name>/profile.json, for example::

    {"board": "esp32_devkitc", "chip": "esp32",
     "pins": {"soil_adc": 34, "pump_relay": 26, "status_led": 2},
     "relay_active_low": true, "status_led_active_low": false, "adc_samples": 8}

`validate_profile` returns every mistake as "field: what is wrong; how to fix it";
`load_profile` raises `BoardProfileError` carrying them. The chip facts below are also handed
to the emulated board (see `pin_facts_json`), so the emulator refuses the same pins a real
chip would.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from edge_gateway.chips import CHIPS, ChipFacts, chip_facts, pin_facts_json, ranges

BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"


class BoardProfileError(ValueError):
    """A board profile that cannot work; `errors` lists each problem with field and fix."""

    def __init__(self, errors: list[str], source: str = "") -> None:
        self.errors = list(errors)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(self.errors) if len(self.errors) == 1
                         else prefix + "\n  " + "\n  ".join(self.errors))


class BoardProfileWarning(UserWarning):
    """A profile that works but has a pin choice with a known trap (e.g. a strapping pin)."""


# What each pin role needs from its pin. An "indicator" is an output that may harmlessly blink
# at boot, so strapping pins are fine for it; an "output" or "pwm" (a relay, a diffuser) must
# not, so it is warned about them. A "bus" pin (I2C, 1-Wire) is driven both ways.
PIN_ROLES: dict[str, str] = {
    "soil_adc": "adc",
    "mq135_adc": "adc",
    "pump_relay": "output",
    "status_led": "indicator",
    **{f"diffuser_{n}": "pwm" for n in range(1, 5)},
    **{f"tank_switch_{n}": "input" for n in range(1, 3)},
    "arm_switch": "input",  # drone payload arm switch to GND (pulled up: open = disarmed)
    "i2c_sda": "bus",
    "i2c_scl": "bus",
    "onewire": "bus",
}
NODE_ROLES = ("garden", "drone")
# Pins a node of each role cannot work without.
REQUIRED_PINS: dict[str, tuple[str, ...]] = {
    "garden": ("soil_adc", "pump_relay"),
    "drone": ("diffuser_1",),
}
# I2C chips the firmware has drivers for, with the addresses each can be strapped to.
I2C_MODELS: dict[str, tuple[int, ...]] = {
    "sht4x": (0x44, 0x45, 0x46),
    "bme680": (0x76, 0x77),
    "sgp40": (0x59,),
}
_BOOL_FIELDS = ("relay_active_low", "status_led_active_low", "tank_switch_active_low")
KNOWN_FIELDS = ("board", "chip", "role", "description", "pins", "i2c_devices", "adc_samples",
                *_BOOL_FIELDS)
ADC_SAMPLES_MAX = 64
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def _check_pin(role: str, pin: object, facts: ChipFacts, wifi: bool) -> list[str]:
    where = f"pins.{role}"
    kind = PIN_ROLES[role]
    if isinstance(pin, str):
        if pin not in facts.named_pins:
            names = ", ".join(sorted(facts.named_pins)) or "none on this board"
            return [f"{where}: {pin!r} is not a pin name on {facts.name} (named pins: {names}); "
                    f"use a GPIO number"]
        if kind == "adc":
            return [f"{where}: {pin!r} cannot be read as an ADC; use one of GPIO "
                    f"{ranges(sorted(facts.adc1))}"]
        if kind != "indicator":
            return [f"{where}: {pin!r} can only drive an indicator; use a GPIO number"]
        return []
    if not isinstance(pin, int) or isinstance(pin, bool):
        return [f"{where}: must be a GPIO number or a pin name, got {pin!r}"]
    if pin not in facts.gpios:
        return [f"{where}: GPIO {pin} does not exist on {facts.name}; use one of GPIO "
                f"{ranges(facts.usable())}"]
    if pin in facts.reserved:
        return [f"{where}: GPIO {pin} is {facts.reserved[pin]}; use another GPIO "
                f"(free: {ranges(facts.usable())})"]
    if kind == "adc":
        if pin in facts.adc_wifi_blocked and wifi:
            return [f"{where}: GPIO {pin} is on ADC2, which cannot be read while Wi-Fi is on; "
                    f"use one of GPIO {ranges(sorted(facts.adc1))} (ADC1)"]
        if pin not in facts.adc_pins:
            return [f"{where}: GPIO {pin} has no ADC on {facts.name}; use one of GPIO "
                    f"{ranges(sorted(facts.adc1))}"]
    if kind in ("output", "indicator", "pwm", "bus") and pin in facts.input_only:
        outputs = sorted(set(facts.usable()) - facts.input_only)
        return [f"{where}: GPIO {pin} is input-only on {facts.name} "
                f"(GPIO {ranges(sorted(facts.input_only))}); use an output-capable GPIO "
                f"({ranges(outputs)})"]
    return []


def _check_i2c_devices(profile: dict[str, object], pins: dict[str, object]) -> list[str]:
    devices = profile.get("i2c_devices", [])
    if not isinstance(devices, list):
        return ['i2c_devices: must be a list like [{"model": "sht4x", "address": 68}]']
    errors: list[str] = []
    if devices and not {"i2c_sda", "i2c_scl"} <= set(pins):
        errors.append("i2c_devices: the board has I2C chips but no bus; add pins.i2c_sda and "
                      "pins.i2c_scl")
    seen: dict[int, str] = {}
    for index, device in enumerate(devices):
        where = f"i2c_devices[{index}]"
        if not isinstance(device, dict) or set(device) - {"model", "address"}:
            errors.append(f'{where}: must be {{"model": ..., "address": ...}}, got {device!r}')
            continue
        model, address = device.get("model"), device.get("address")
        if model not in I2C_MODELS:
            errors.append(f"{where}.model: {model!r} has no driver; use one of "
                          f"{', '.join(sorted(I2C_MODELS))}")
            continue
        allowed = I2C_MODELS[str(model)]
        if not isinstance(address, int) or isinstance(address, bool) or address not in allowed:
            shown = ", ".join(f"0x{a:02x} ({a})" for a in allowed)
            errors.append(f"{where}.address: {model} answers only at {shown}, got {address!r}")
            continue
        if address in seen:
            errors.append(f"{where}.address: 0x{address:02x} is already used by {seen[address]} "
                          f"on the same bus; strap one of them to another address")
        seen.setdefault(address, f"i2c_devices[{index}] ({model})")
    return errors


def validate_profile(profile: dict[str, object]) -> list[str]:
    """Every error in the profile, each as 'field: problem; fix'. Empty when it is valid."""
    if not isinstance(profile, dict):
        return [f"profile: must be a JSON object, got {type(profile).__name__}"]
    errors: list[str] = []
    for key in sorted(profile):
        if key not in KNOWN_FIELDS:
            errors.append(f"{key}: unknown field; known fields are {', '.join(KNOWN_FIELDS)}")
    board = profile.get("board")
    if not isinstance(board, str) or not board or not set(board) <= _NAME_CHARS:
        errors.append(f"board: must be a name of a-z, 0-9, '_' or '-', got {board!r}")
    chip = profile.get("chip")
    if chip not in CHIPS:
        errors.append(f"chip: {chip!r} is not a known chip; use one of {', '.join(sorted(CHIPS))}")
    role = profile.get("role", "garden")
    if role not in NODE_ROLES:
        errors.append(f"role: must be one of {', '.join(NODE_ROLES)}, got {role!r}")
    for key in _BOOL_FIELDS:
        if key in profile and not isinstance(profile[key], bool):
            errors.append(f"{key}: must be true or false, got {profile[key]!r}")
    samples = profile.get("adc_samples", 1)
    if not isinstance(samples, int) or isinstance(samples, bool) \
            or not 1 <= samples <= ADC_SAMPLES_MAX:
        errors.append(f"adc_samples: must be an integer in 1..{ADC_SAMPLES_MAX}, got {samples!r}")
    pins = profile.get("pins")
    if not isinstance(pins, dict):
        errors.append('pins: missing or not an object; give e.g. '
                      '{"soil_adc": 34, "pump_relay": 26}')
        return errors
    for needed in REQUIRED_PINS.get(str(role), ()):
        if needed not in pins:
            errors.append(f"pins.{needed}: missing; every {role} node needs a {needed} pin")
    errors.extend(_check_i2c_devices(profile, pins))
    if chip not in CHIPS:
        return errors
    facts = chip_facts(profile)
    used: dict[object, str] = {}
    for pin_role in sorted(pins):
        pin = pins[pin_role]
        if pin_role not in PIN_ROLES:
            errors.append(f"pins.{pin_role}: unknown pin role; known roles are "
                          f"{', '.join(sorted(PIN_ROLES))}")
            continue
        problems = _check_pin(pin_role, pin, facts, wifi=True)
        errors.extend(problems)
        if problems:
            continue
        if pin in used:
            label = f"GPIO {pin}" if isinstance(pin, int) else f"pin {pin!r}"
            errors.append(f"pins.{pin_role}: {label} is already used by pins.{used[pin]}; "
                          f"give each role its own pin")
        used.setdefault(pin, pin_role)
    return errors


def profile_warnings(profile: dict[str, object]) -> list[str]:
    """Pin choices that work but have a trap for their role."""
    pins = profile.get("pins")
    if profile.get("chip") not in CHIPS or not isinstance(pins, dict):
        return []
    facts = chip_facts(profile)
    found = []
    for role, pin in sorted(pins.items()):
        if not isinstance(pin, int):
            continue
        kind = PIN_ROLES.get(role)
        if pin in facts.caution and kind != "indicator":
            found.append(f"pins.{role}: GPIO {pin} is {facts.caution[pin]}; "
                         f"prefer another pin if you can")
        elif kind in ("input", "bus") and pin in facts.input_only:
            found.append(f"pins.{role}: GPIO {pin} has no internal pull-up on {facts.name}; "
                         f"fit an external pull-up resistor (e.g. 10 kOhm to 3.3 V)")
    return found


def shipped_profiles() -> list[str]:
    """Board names that have at least one role profile in boards/."""
    return sorted({p.parent.name for p in BOARDS_DIR.glob("*/*.json") if p.stem in NODE_ROLES})


def shipped_roles(board: str) -> list[str]:
    return [role for role in NODE_ROLES if (BOARDS_DIR / board / f"{role}.json").is_file()]


def load_profile(name_or_path: str | Path, role: str = "garden") -> dict[str, object]:
    """Load and validate a profile: by board name and node role (boards/<name>/<role>.json) or
    by file path.

    Raises BoardProfileError naming each bad field and its fix; warns (BoardProfileWarning)
    about pins that work but have a trap.
    """
    text = str(name_or_path)
    by_name = not isinstance(name_or_path, Path) and "/" not in text and not text.endswith(".json")
    path = BOARDS_DIR / text / f"{role}.json" if by_name else Path(name_or_path)
    if not path.is_file():
        if by_name and not (BOARDS_DIR / text).is_dir():
            raise BoardProfileError([f"board profile {text!r} not found; shipped profiles: "
                                     f"{', '.join(shipped_profiles())}"])
        if by_name:
            raise BoardProfileError([f"board {text!r} has no {role!r} profile; it has: "
                                     f"{', '.join(shipped_roles(text)) or 'none'}"])
        raise BoardProfileError([f"board profile file {text} does not exist"])
    try:
        profile = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BoardProfileError([f"not valid JSON ({exc}); fix the syntax"], str(path)) from exc
    if not isinstance(profile, dict):
        raise BoardProfileError(["profile: must be a JSON object"], str(path))
    errors = validate_profile(profile)
    if by_name and profile.get("board") != text:
        errors.append(f"board: {profile.get('board')!r} does not match its directory {text!r}; "
                      f"make them equal")
    if by_name and profile.get("role", "garden") != role:
        errors.append(f"role: {profile.get('role')!r} does not match its file name {role}.json; "
                      f"make them equal")
    if errors:
        raise BoardProfileError(errors, str(path))
    for warning in profile_warnings(profile):
        warnings.warn(f"{path}: {warning}", BoardProfileWarning, stacklevel=2)
    return profile


__all__ = [
    "BOARDS_DIR", "CHIPS", "I2C_MODELS", "NODE_ROLES", "PIN_ROLES", "BoardProfileError",
    "BoardProfileWarning", "ChipFacts", "chip_facts", "load_profile", "pin_facts_json",
    "profile_warnings", "shipped_profiles", "shipped_roles", "validate_profile",
]
