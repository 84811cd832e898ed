"""The emulated board's world.json, built on the host: wiring from the board profile, the
chips on its buses, initial world conditions - all checked here, so a mistake fails before a
node starts, with a message naming the field and the fix. Format and every condition:
boards/emulated/README.md.

The checks themselves live in boards/emulated (world.py, devices/__init__.py), MicroPython
code loaded here by path, so the board and the host judge a world.json alike.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_gateway.boards import pin_facts_json

EMULATED_DIR = Path(__file__).resolve().parent.parent / "boards" / "emulated"

_loaded: dict[str, ModuleType] = {}


def _emulated_module(name: str, relative: str) -> ModuleType:
    """A module of boards/emulated (MicroPython code, not a package of ours), loaded by path;
    its own imports of sibling modules (world_air, world_drone) resolve in boards/emulated."""
    module = _loaded.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, EMULATED_DIR / relative)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(EMULATED_DIR))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(EMULATED_DIR))
        _loaded[name] = module
    return module


def world_module() -> ModuleType:
    """boards/emulated/world.py: conditions, their checks, the world model."""
    return _emulated_module("_nt_emulated_world", "world.py")


def devices_module() -> ModuleType:
    """boards/emulated/devices/__init__.py: the device list checks (normalize)."""
    return _emulated_module("_nt_emulated_devices", "devices/__init__.py")


def check_conditions(conditions: dict[str, object],
                     device_names: list[str] | None = None) -> None:
    """Raise ValueError naming the first unknown or out-of-range world condition; with
    `device_names`, also a fault aimed at a device the board does not have."""
    check: Callable[[str, object, list[str] | None], object] = world_module().check_condition
    for name, value in conditions.items():
        check(name, value, device_names)


# Board profile pin role -> world wiring role, when they differ.
_PROFILE_ROLES = {"soil_adc": "soil_probe", "mq135_adc": "mq135"}
# Profile field saying a role's wiring is active-low, and its default.
_ACTIVE_LOW_FIELDS = {"pump_relay": ("relay_active_low", False),
                      "status_led": ("status_led_active_low", False),
                      "tank_switch": ("tank_switch_active_low", True)}


def wiring_from_profile(profile: dict[str, object]) -> dict[str, dict[str, object]]:
    """What the board's pins are wired to, in the world model's terms."""
    pins = profile.get("pins")
    assert isinstance(pins, dict)
    roles: tuple[str, ...] = world_module().ROLES
    wiring: dict[str, dict[str, object]] = {}
    for pin_role, pin in pins.items():
        role = _PROFILE_ROLES.get(pin_role, pin_role)
        if role not in roles:
            continue  # a pin the world model has nothing behind
        entry: dict[str, object] = {"pin": pin}
        field = _ACTIVE_LOW_FIELDS.get(role.rstrip("_0123456789"))
        if field is not None:
            entry["active_low"] = bool(profile.get(field[0], field[1]))
        wiring[role] = entry
    return wiring


def _devices(profile: dict[str, object], world: dict[str, object],
             wiring: dict[str, dict[str, object]]) -> tuple[list[Any], list[Any], list[str]]:
    """The chips on the buses: world["i2c_devices"] / world["onewire"] when given, else the
    profile's i2c_devices and, on a board with a onewire pin, one DS18B20 probe."""
    i2c = world.pop("i2c_devices", None)
    if i2c is None:
        i2c = profile.get("i2c_devices", [])
    onewire = world.pop("onewire", None)
    if onewire is None:
        onewire = [{"model": "ds18b20", "name": "ds18b20_1", "probe": 1}] \
            if "onewire" in wiring else []
    result: tuple[list[Any], list[Any], list[str]] = devices_module().normalize(i2c, onewire)
    return result


def world_config(profile: dict[str, object], world: dict[str, object] | None = None,
                 seed: str = "emulated") -> dict[str, object]:
    """The world.json content: chip facts, wiring (profile's, overridden by world["wiring"]),
    the chips on the buses (world["i2c_devices"], world["onewire"], else the profile's),
    initial conditions (the rest of `world`, checked), and a unique id derived from `seed`.
    Format: boards/emulated/README.md."""
    conditions = dict(world or {})
    wiring = wiring_from_profile(profile)
    override = conditions.pop("wiring", None)
    if override is not None:
        if not isinstance(override, dict):
            raise ValueError("world wiring: must be an object of role: pin or {pin, active_low}")
        wiring.update(override)
    i2c, onewire, names = _devices(profile, conditions, wiring)
    check_conditions(conditions, names)
    chip = pin_facts_json(profile)
    id_len = chip["unique_id_len"]
    assert isinstance(id_len, int)
    return {
        "board": profile.get("board"),
        "node": seed,
        "unique_id": hashlib.sha256(seed.encode()).hexdigest()[: 2 * id_len],
        "chip": chip,
        "wiring": wiring,
        "i2c_devices": i2c,
        "onewire": onewire,
        "conditions": conditions,
    }


__all__ = [
    "EMULATED_DIR", "check_conditions", "devices_module", "wiring_from_profile", "world_config",
    "world_module",
]
