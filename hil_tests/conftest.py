"""Fixtures for the end-to-end tests: the real gateway daemon in its own process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.mosquitto import Mosquitto
from testkit.procs import stop_process, wait_for

SITE = "hil"


def neoterra(*args: str) -> list[str]:
    """The `neoterra` command as a user runs it."""
    return [sys.executable, "-m", "edge_gateway", *args]


@pytest.fixture
def gateway(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Path]:
    """`neoterra gateway run` against the test's broker; yields the path of its store."""
    db = tmp_path / "gateway.db"
    log = (tmp_path / "gateway.log").open("w")
    proc = subprocess.Popen(
        neoterra("gateway", "run", "--broker", f"{mosquitto.host}:{mosquitto.port}",
                 "--site", SITE, "--db", str(db)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(db.exists, timeout=15, what="the gateway to create its store", proc=None)
        yield db
    finally:
        stop_process(proc)
        log.close()
