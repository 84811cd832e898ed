"""Fixtures shared by tests/ and hil_tests/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.mosquitto import Mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free loopback port, private to this test."""
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
