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


class GatewayProcess:
    """`neoterra gateway run` against a broker, restartable on the same store."""

    def __init__(self, broker: Mosquitto, workdir: Path) -> None:
        self.broker = broker
        self.db = workdir / "gateway.db"
        self.log_path = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                neoterra(
                    "gateway",
                    "run",
                    "--broker",
                    f"{self.broker.host}:{self.broker.port}",
                    "--site",
                    SITE,
                    "--db",
                    str(self.db),
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self.db.exists, timeout=15, what="the gateway to create its store")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def gateway_process(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(mosquitto, tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def gateway(gateway_process: GatewayProcess) -> Path:
    """The running gateway's store."""
    return gateway_process.db
