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
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True)
class ChipFacts:
    name: str
    gpios: frozenset[int]
    input_only: frozenset[int] = frozenset()
    adc1: frozenset[int] = frozenset()
    # ADC pins that cannot be read while Wi-Fi is on (ESP32 ADC2).
    adc_wifi_blocked: frozenset[int] = frozenset()
    # Pins that exist but must not be used, with the reason.
    reserved: dict[int, str] = field(default_factory=dict)
    # Pins that work but have a trap, with the reason (a warning, not an error).
    caution: dict[int, str] = field(default_factory=dict)
    # Pins addressed by name rather than number, with what they can do ("output").
    named_pins: dict[str, str] = field(default_factory=dict)
    adc_atten: bool = False
    unique_id_len: int = 8
    freq_hz: int = 125_000_000

    @property
    def adc_pins(self) -> frozenset[int]:
        return self.adc1 | self.adc_wifi_blocked

    def usable(self) -> list[int]:
        return sorted(self.gpios - set(self.reserved))


def _span(low: int, high: int) -> frozenset[int]:
    return frozenset(range(low, high + 1))


_ESP32_STRAPPING = "a strapping pin (its level at reset selects the boot mode)"
CHIPS: dict[str, ChipFacts] = {
    "esp32": ChipFacts(
        name="esp32",
        gpios=_span(0, 39) - {20, 24, 28, 29, 30, 31},
        input_only=_span(34, 39),
        adc1=_span(32, 39),
        adc_wifi_blocked=frozenset({0, 2, 4, 12, 13, 14, 15, 25, 26, 27}),
        reserved={n: "wired to the SPI flash" for n in range(6, 12)},
        caution={
            0: _ESP32_STRAPPING, 2: _ESP32_STRAPPING, 5: _ESP32_STRAPPING,
            12: _ESP32_STRAPPING + "; pulled high it sets the flash voltage to 1.8 V",
            15: _ESP32_STRAPPING,
            1: "UART0 TX, the REPL console", 3: "UART0 RX, the REPL console",
        },
        adc_atten=True,
        unique_id_len=6,
        freq_hz=240_000_000,
    ),
    "rp2040": ChipFacts(
        name="rp2040",
        gpios=_span(0, 29),
        adc1=_span(26, 29),
        unique_id_len=8,
        freq_hz=125_000_000,
    ),
}

# Board-level facts on top of the chip's: pins the board itself uses.
_CYW43 = "used by the Pico W's wireless chip (CYW43)"
BOARD_RESERVED: dict[str, dict[int, str]] = {
    "pico_w": {23: _CYW43 + " as WL_ON", 24: _CYW43 + " as SPI data", 25: _CYW43 + " as SPI CS",
               29: _CYW43 + " as SPI clock"},
}
BOARD_NAMED_PINS: dict[str, dict[str, str]] = {
    # The Pico W's LED hangs off the wireless chip, reachable only as Pin("LED").
    "pico_w": {"LED": "output"},
}

# What each pin role needs from its pin. Extend as drivers arrive. An "indicator" is an output
# that may harmlessly blink at boot, so strapping pins are fine for it; an "output" (a relay)
# must not, so it is warned about them.
PIN_ROLES: dict[str, str] = {"soil_adc": "adc", "pump_relay": "output", "status_led": "indicator"}
REQUIRED_ROLES = ("soil_adc", "pump_relay")
_BOOL_FIELDS = ("relay_active_low", "status_led_active_low")
KNOWN_FIELDS = ("board", "chip", "description", "pins", "adc_samples", *_BOOL_FIELDS)
ADC_SAMPLES_MAX = 64
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def chip_facts(profile: dict[str, object]) -> ChipFacts:
    """The chip facts with the profile's board-level reservations merged in."""
    chip = CHIPS[str(profile.get("chip"))]
    board = str(profile.get("board"))
    reserved = {**chip.reserved, **BOARD_RESERVED.get(board, {})}
    named = {**chip.named_pins, **BOARD_NAMED_PINS.get(board, {})}
    return ChipFacts(chip.name, chip.gpios, chip.input_only, chip.adc1 - set(reserved),
                     chip.adc_wifi_blocked, reserved, chip.caution, named, chip.adc_atten,
                     chip.unique_id_len, chip.freq_hz)


def pin_facts_json(profile: dict[str, object]) -> dict[str, object]:
    """Chip facts as JSON for the emulated machine (world.json "chip")."""
    facts = chip_facts(profile)
    return {
        "name": facts.name,
        "gpios": facts.usable(),
        "input_only": sorted(facts.input_only),
        "adc": sorted(facts.adc_pins - set(facts.reserved)),
        "adc_wifi_blocked": sorted(facts.adc_wifi_blocked),
        "reserved": {str(pin): why for pin, why in sorted(facts.reserved.items())},
        "named_pins": dict(facts.named_pins),
        "adc_atten": facts.adc_atten,
        "unique_id_len": facts.unique_id_len,
        "freq_hz": facts.freq_hz,
    }


def _ranges(pins: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    parts: list[str] = []
    start = prev = -2
    for pin in [*sorted(pins), -2]:
        if pin == prev + 1:
            prev = pin
            continue
        if start >= 0:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = pin
    return ", ".join(parts)


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
                    f"{_ranges(sorted(facts.adc1))}"]
        return []
    if not isinstance(pin, int) or isinstance(pin, bool):
        return [f"{where}: must be a GPIO number or a pin name, got {pin!r}"]
    if pin not in facts.gpios:
        return [f"{where}: GPIO {pin} does not exist on {facts.name}; use one of GPIO "
                f"{_ranges(facts.usable())}"]
    if pin in facts.reserved:
        return [f"{where}: GPIO {pin} is {facts.reserved[pin]}; use another GPIO "
                f"(free: {_ranges(facts.usable())})"]
    if kind == "adc":
        if pin in facts.adc_wifi_blocked and wifi:
            return [f"{where}: GPIO {pin} is on ADC2, which cannot be read while Wi-Fi is on; "
                    f"use one of GPIO {_ranges(sorted(facts.adc1))} (ADC1)"]
        if pin not in facts.adc_pins:
            return [f"{where}: GPIO {pin} has no ADC on {facts.name}; use one of GPIO "
                    f"{_ranges(sorted(facts.adc1))}"]
    if kind in ("output", "indicator") and pin in facts.input_only:
        outputs = sorted(set(facts.usable()) - facts.input_only)
        return [f"{where}: GPIO {pin} is input-only on {facts.name} "
                f"(GPIO {_ranges(sorted(facts.input_only))}); use an output-capable GPIO "
                f"({_ranges(outputs)})"]
    return []


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
    for role in REQUIRED_ROLES:
        if role not in pins:
            errors.append(f"pins.{role}: missing; every node needs a {role} pin")
    if chip not in CHIPS:
        return errors
    facts = chip_facts(profile)
    used: dict[object, str] = {}
    for role in sorted(pins):
        pin = pins[role]
        if role not in PIN_ROLES:
            errors.append(f"pins.{role}: unknown pin role; known roles are "
                          f"{', '.join(sorted(PIN_ROLES))}")
            continue
        problems = _check_pin(role, pin, facts, wifi=True)
        errors.extend(problems)
        if problems:
            continue
        if pin in used:
            label = f"GPIO {pin}" if isinstance(pin, int) else f"pin {pin!r}"
            errors.append(f"pins.{role}: {label} is already used by pins.{used[pin]}; "
                          f"give each role its own pin")
        used.setdefault(pin, role)
    return errors


def profile_warnings(profile: dict[str, object]) -> list[str]:
    """Pin choices that work but have a trap (strapping or console pins) for their role."""
    pins = profile.get("pins")
    if profile.get("chip") not in CHIPS or not isinstance(pins, dict):
        return []
    facts = chip_facts(profile)
    return [f"pins.{role}: GPIO {pin} is {facts.caution[pin]}; prefer another pin if you can"
            for role, pin in sorted(pins.items())
            if isinstance(pin, int) and pin in facts.caution
            and PIN_ROLES.get(role) != "indicator"]


def shipped_profiles() -> list[str]:
    return sorted(p.parent.name for p in BOARDS_DIR.glob("*/profile.json"))


def load_profile(name_or_path: str | Path) -> dict[str, object]:
    """Load and validate a profile by board name (boards/<name>/profile.json) or file path.

    Raises BoardProfileError naming each bad field and its fix; warns (BoardProfileWarning)
    about pins that work but have a trap.
    """
    text = str(name_or_path)
    by_name = not isinstance(name_or_path, Path) and "/" not in text and not text.endswith(".json")
    path = BOARDS_DIR / text / "profile.json" if by_name else Path(name_or_path)
    if not path.is_file():
        if by_name:
            raise BoardProfileError([f"board profile {text!r} not found; shipped profiles: "
                                     f"{', '.join(shipped_profiles())}"])
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
    if errors:
        raise BoardProfileError(errors, str(path))
    for warning in profile_warnings(profile):
        warnings.warn(f"{path}: {warning}", BoardProfileWarning, stacklevel=2)
    return profile


__all__ = [
    "BOARDS_DIR", "CHIPS", "PIN_ROLES", "BoardProfileError", "BoardProfileWarning", "ChipFacts",
    "chip_facts", "load_profile", "pin_facts_json", "profile_warnings", "shipped_profiles",
    "validate_profile",
]
