"""The one place that builds Blinka's I2C bus: on a Raspberry Pi, for the local sensors.

Blinka imports fine elsewhere, but its busio.I2C needs /dev/i2c-1, and its OS-agnostic
stand-in answers random scans; so everything else takes an I2C object as a parameter, and
tests pass a fake bus of register models (testkit/fake_blinka_i2c.py) instead of calling this.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MODEL_FILE = Path("/proc/device-tree/model")


class NotOnAPiError(RuntimeError):
    """The local I2C sensors were configured on a machine that is not a Raspberry Pi."""


def board_model(model_file: Path = MODEL_FILE) -> str:
    """The device tree's board name ("" when there is none, e.g. on a PC)."""
    try:
        return model_file.read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    except OSError:
        return ""


def open_i2c(model_file: Path = MODEL_FILE) -> Any:
    """Blinka's busio.I2C on the Pi's header pins SCL (GPIO3) and SDA (GPIO2)."""
    model = board_model(model_file)
    if not model.startswith("Raspberry Pi"):
        raise NotOnAPiError(
            f"local_hardware.sensors need a Raspberry Pi's I2C bus, but this is "
            f"{model or 'not a Raspberry Pi'}; remove [[local_hardware.sensors]] here"
        )
    # Blinka 10 otherwise offers to pip-install missing packages interactively at import.
    os.environ.setdefault("BLINKA_SKIP_DEPENDENCY_CHECK", "1")
    import board
    import busio

    return busio.I2C(board.SCL, board.SDA)
