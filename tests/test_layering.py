"""Architecture rules that a grep can check: hardware is chosen at the edge."""

from __future__ import annotations

import re
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
HARDWARE_IMPORT = re.compile(r"^\s*(import|from) (machine|network|onewire)\b", re.MULTILINE)


def test_only_board_py_imports_machine_or_network() -> None:
    importers = sorted(
        str(path.relative_to(FIRMWARE.parent))
        for path in FIRMWARE.rglob("*.py")
        if HARDWARE_IMPORT.search(path.read_text())
    )
    assert importers == ["firmware/sensornode/board.py"]


def test_firmware_has_no_cpython_only_imports() -> None:
    cpython_only = re.compile(
        r"^\s*(import|from) (logging|dataclasses|functools|enum|pathlib|typing)\b", re.MULTILINE
    )
    offenders = []
    for path in FIRMWARE.rglob("*.py"):
        text = path.read_text()
        for match in cpython_only.finditer(text):
            # typing is allowed only inside a try: block (annotations are ignored on the board)
            before = text[: match.start()].rstrip().splitlines()[-1:]
            if match.group(2) == "typing" and before and before[0].strip() == "try:":
                continue
            offenders.append(f"{path.name}: {match.group(0).strip()}")
    assert offenders == []
