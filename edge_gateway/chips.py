"""Chip facts for board profiles: which GPIOs exist, which can do ADC, PWM or output, which
are reserved or traps. Shared by the profile validator and the emulated board (`pin_facts_json`),
so the emulator refuses the same pins a real chip would."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    "esp32s3": ChipFacts(
        name="esp32s3",
        gpios=_span(0, 21) | _span(26, 48),
        adc1=_span(1, 10),
        adc_wifi_blocked=_span(11, 20),
        reserved={n: "wired to the SPI flash / PSRAM on ESP32-S3 modules" for n in range(26, 33)},
        caution={
            0: _ESP32_STRAPPING, 3: _ESP32_STRAPPING, 45: _ESP32_STRAPPING,
            46: _ESP32_STRAPPING,
            19: "USB D- (the native USB port)", 20: "USB D+ (the native USB port)",
            **{n: "used by octal PSRAM on N8R8 / N16R8 modules" for n in range(33, 38)},
            43: "UART0 TX, the REPL console", 44: "UART0 RX, the REPL console",
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


def ranges(pins: list[int]) -> str:
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


