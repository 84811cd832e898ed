"""The shared protocol vectors, run by the firmware's protocol module under real MicroPython."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hil_tests.target import micropython_binary

REPO = Path(__file__).resolve().parent.parent


def test_vectors_pass_under_micropython() -> None:
    env = dict(os.environ, MICROPYPATH=f"{REPO}/firmware:{REPO}/tests/vectors:.frozen")
    result = subprocess.run(
        [
            micropython_binary(),
            str(REPO / "tests/vectors/check_vectors.py"),
            str(REPO / "tests/vectors/protocol.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    # MicroPython prints uncaught tracebacks to stdout, so show both streams on failure.
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    last = output.strip().splitlines()[-1]
    count = int(last.split()[1])
    assert count >= 20 and last.endswith("FAILED 0"), output
