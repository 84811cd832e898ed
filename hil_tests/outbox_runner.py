"""Running outbox scripts under the real MicroPython interpreter, for the hil outbox tests:
COMMON (the prelude every script starts with: imports, check(), sample records), the firmware
from source or from the firmware's mpy-cross build, and run_script()."""

from __future__ import annotations

from pathlib import Path

from hil_tests.target import compiled_firmware, run_micropython

REPO = Path(__file__).resolve().parent.parent

COMMON = r"""
import binascii
import gc
import os
import sys

from sensornode.outbox import Outbox
from sensornode.outbox_segment import HEADER, crc32_sw

FAILS = []


def check(name, ok, got=None):
    if not ok:
        FAILS.append(name)
        print("FAIL", name, got)


def body(seq, n=20):
    return bytes([(seq * 7 + i) % 256 for i in range(n)])


def rm_tree(d):
    for name in os.listdir(d):
        os.remove(d + "/" + name)
    os.rmdir(d)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


ALL = (100000, 10000000)
"""


def firmware_path(build: str, tmp_path: Path) -> Path:
    if build == "source":
        return REPO / "firmware"
    return compiled_firmware()


def run_script(
    script: str,
    cwd: Path,
    firmware: Path,
    *args: str,
    heap: str | None = None,
    timeout: float = 120,
) -> str:
    (cwd / "script.py").write_text(script)
    return run_micropython(
        cwd / "script.py", *args, path=[firmware], cwd=cwd, heap=heap, timeout=timeout
    )
