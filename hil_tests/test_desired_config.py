"""The gateway's desired config reaches the node: the daemon publishes it retained, the node
checks it, saves it, reboots on purpose to apply it (not counted as a crash), and its birth
reports the version, which the gateway's registry shows. A document the node cannot use is
refused with the reason and changes nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sensornode import protocol

from edge_gateway.config import load_config
from edge_gateway.config_desired import desired_node_configs
from edge_gateway.emulator import EmulatedNode
from edge_gateway.registry import fleet
from edge_gateway.signing import KeyRing
from edge_gateway.store import Store
from hil_tests.conftest import SITE, neoterra
from hil_tests.test_rules_daemon import NODE, gateway_config
from testkit.mosquitto import Mosquitto
from testkit.procs import stop_process, wait_for
from testkit.watch import Watcher


def applied_version(db: Path) -> str | None:
    if not db.exists():
        return None
    with Store(db) as store:
        nodes = {n.node: n for n in fleet(store, 0)}
    return nodes[NODE].config_version if NODE in nodes else None


def config_events(db: Path) -> list[tuple[str, str]]:
    with Store(db) as store:
        return [(e.state, e.detail) for e in store.events(node=NODE) if e.kind == "config"]


def test_the_node_applies_the_desired_config_and_reports_its_version(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    keys = KeyRing(tmp_path / "keys")
    config = gateway_config(tmp_path / "gateway.toml", mosquitto, keys.create(NODE))
    wanted = desired_node_configs(load_config(config))[NODE]
    db = tmp_path / "gateway.db"
    log_path = tmp_path / "gateway.log"
    node = EmulatedNode(tmp_path / NODE, {
        "site": SITE, "node": NODE, "report_interval_s": 1, "cmd_key": keys.key(NODE).hex(),
        "broker": {"host": mosquitto.host, "port": mosquitto.port, "keepalive_s": 5},
    }, world={"soil_moisture": 45.0, "evaporation_pct_per_s": 0.0})
    with log_path.open("w") as log:
        gateway = subprocess.Popen(neoterra("gateway", "run", "--config", str(config)),
                                   stdout=log, stderr=subprocess.STDOUT)
    intruder = Watcher(mosquitto, protocol.node_topic(SITE, NODE, protocol.CONFIG))
    try:
        node.start()
        wait_for(lambda: applied_version(db) == wanted.version, timeout=60,
                 what=lambda: f"the node to apply {wanted.version}\n{node.log_tail()}")
        saved = json.loads((node.flash_dir / "desired.json").read_text())
        assert saved["overrides"]["autonomy"]["moisture_low"] == 30  # the plant's band
        assert [state for state, _ in config_events(db)] == ["applied"]
        # A document for another role: refused, nothing applied, no reboot.
        bad = dict(wanted.document, role="drone", version="ffffffffffff")
        intruder.client.publish(protocol.node_topic(SITE, NODE, protocol.CONFIG),
                                json.dumps(bad), qos=1).wait_for_publish(timeout=5)
        wait_for(lambda: len(config_events(db)) >= 2, timeout=30,
                 what=lambda: f"the refusal\n{node.log_tail()}")
        state, detail = config_events(db)[1]
        assert state == "refused" and "config.role" in detail, detail
        assert applied_version(db) == wanted.version
    finally:
        intruder.close()
        node.stop()
        stop_process(gateway)
    boots = [line for line in node.log_text().splitlines() if "reset cause" in line]
    assert len(boots) == 2, boots  # the first boot and the one that applied the config
    assert "safe mode" not in node.log_text()
