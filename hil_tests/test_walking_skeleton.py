"""End to end on the emulated board: the firmware under the real micropython interpreter, a real
mosquitto, the real gateway daemon, the real `neoterra` command.

boot -> status online -> telemetry rows in SQLite -> irrigate -> emulated pump on, then off
after N s -> ack recorded; kill the node -> its last will marks it offline.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from edge_gateway.emulator import EmulatedNode
from edge_gateway.signing import KeyRing
from edge_gateway.store import Store
from hil_tests.conftest import SITE, neoterra
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for

KEEPALIVE_S = 5


def run_irrigate(
    broker: Mosquitto, node: str, seconds: int, timeout: float, keys: KeyRing, db: Path
) -> subprocess.CompletedProcess[str]:
    """`neoterra irrigate` as a user runs it, in its own process."""
    return subprocess.run(
        neoterra(
            "irrigate",
            node,
            str(seconds),
            "--broker",
            f"{broker.host}:{broker.port}",
            "--site",
            SITE,
            "--timeout",
            str(timeout),
            "--keys",
            str(keys.directory),
            "--db",
            str(db),
        ),
        capture_output=True,
        text=True,
        timeout=timeout + 20,
        check=False,
    )


def node_config(name: str, broker: Mosquitto) -> dict[str, Any]:
    return {
        "site": SITE,
        "node": name,
        "broker": {"host": broker.host, "port": broker.port, "keepalive_s": KEEPALIVE_S},
        "report_interval_s": 1,
        "irrigation": {"max_run_s": 30},
    }


def node_online(db: Path, name: str) -> bool | None:
    with Store(db) as store:
        for info in store.nodes():
            if info.node == name:
                return info.online
    return None


def quantities_stored(db: Path, name: str) -> set[str]:
    with Store(db) as store:
        return {r.quantity for r in store.readings(node=name)}


def test_node_reports_obeys_irrigate_and_goes_offline_when_killed(
    mosquitto: Mosquitto, gateway: Path, tmp_path: Path
) -> None:
    db = gateway
    keys = KeyRing(tmp_path / "keys")
    keys.create("bed-1")
    config = {**node_config("bed-1", mosquitto), "cmd_key": keys.key("bed-1").hex()}
    node = EmulatedNode(tmp_path / "bed-1", config, world={"soil_moisture": 35.0})
    node.start()
    try:
        assert "micropython" in Path(node.interpreter).name
        wait_for(
            lambda: node_online(db, "bed-1") is True,
            timeout=20,
            what=lambda: f"bed-1 online; node log:\n{node.log_text()}",
        )
        wait_for(
            lambda: {"soil_moisture", "soil_raw", "pump"} <= quantities_stored(db, "bed-1"),
            timeout=15,
            what="telemetry rows in SQLite",
        )
        with Store(db) as store:
            moisture = [r.value for r in store.readings(node="bed-1", quantity="soil_moisture")]
            seqs = [r.seq for r in store.readings(node="bed-1", quantity="soil_moisture")]
        assert all(20.0 < m < 50.0 for m in moisture), moisture  # the world says ~35 %
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

        assert node.state()["pump"] is False
        irrigate = run_irrigate(mosquitto, "bed-1", seconds=3, timeout=10, keys=keys, db=db)
        assert irrigate.returncode == 0, irrigate.stdout + irrigate.stderr
        assert "started" in irrigate.stdout
        wait_for(lambda: node.state()["pump"] is True, timeout=5, what="emulated pump on")
        wait_for(lambda: node.state()["pump"] is False, timeout=8, what="pump off after 3 s")
        on_off = [e for e in node.pin_history() if e["pin"] == node.wiring["pump_relay"]]
        assert on_off, "pump pin history is empty"

        def ack_and_events() -> bool:
            with Store(db) as store:
                acks = [a for a in store.acks() if a.node == "bed-1"]
                states = [e.state for e in store.events(node="bed-1") if e.name == "pump"]
            return (
                bool(acks)
                and acks[0].ok
                and acks[0].result == "started"
                and states == ["on", "off"]
            )

        wait_for(ack_and_events, timeout=10, what="ack and pump on/off events stored")
    finally:
        node.kill()
    wait_for(
        lambda: node_online(db, "bed-1") is False,
        timeout=KEEPALIVE_S * 1.5 + 10,
        what="last will marks bed-1 offline",
    )


def test_irrigate_unknown_node_times_out_clearly(mosquitto: Mosquitto, gateway: Path,
                                                 tmp_path: Path) -> None:
    keys = KeyRing(tmp_path / "keys")
    keys.create("nobody")  # a key, but no such node online
    result = run_irrigate(mosquitto, "nobody", seconds=3, timeout=1, keys=keys, db=gateway)
    assert result.returncode == 1
    assert "nobody" in result.stdout + result.stderr
