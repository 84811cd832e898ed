"""In-process emulated board for CPython tests: the same boards/emulated machine/network/world
that runs under MicroPython, configured from a board profile, with an optional fake clock.

    board = emulated_board("emulated", {"soil_moisture": 30}, clock=FakeClock())
    import machine  # boards/emulated/machine.py (pytest's pythonpath)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import emu  # type: ignore[import-not-found]  # boards/emulated, on pytest's pythonpath
import pytest

from edge_gateway.boards import load_profile
from edge_gateway.emulator import world_config


class FakeClock:
    """A millisecond tick counter the test advances by hand."""

    def __init__(self, start_ms: int = 1000) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)


def emulated_board(
    profile: str | Path = "emulated",
    world: dict[str, object] | None = None,
    clock: FakeClock | None = None,
    emu_dir: Path | None = None,
    seed: str = "test-node",
) -> Any:
    """Reset the process's emulation: wiring and chip facts from `profile`, conditions from
    `world` (plus "wiring" overrides). With `emu_dir`, the control-channel files are used too."""
    config = world_config(load_profile(profile), world, seed)
    if emu_dir is not None:
        emu_dir.mkdir(parents=True, exist_ok=True)
    return emu.configure(config, str(emu_dir) if emu_dir is not None else None, clock)


@pytest.fixture
def fresh_emulation() -> Iterator[None]:
    """Leave the process's emulation as a fresh default one after the test, so pins and world
    a test set up never leak into another test that imports machine."""
    yield
    emu.configure()
