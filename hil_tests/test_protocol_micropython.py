"""The shared protocol vectors, run by the firmware's protocol module under real MicroPython."""

from __future__ import annotations

from pathlib import Path

from hil_tests.target import run_micropython

REPO = Path(__file__).resolve().parent.parent


def test_vectors_pass_under_micropython() -> None:
    output = run_micropython(
        REPO / "tests/vectors/check_vectors.py",
        str(REPO / "tests/vectors/protocol.json"),
        path=[REPO / "firmware", REPO / "tests/vectors"],
        timeout=30,
    )
    last = output.strip().splitlines()[-1]
    count = int(last.split()[1])
    assert count >= 20 and last.endswith("FAILED 0"), output
