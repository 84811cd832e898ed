"""The gateway daemon run from its TOML config waters a bed by rule: the emulated garden node's
soil dries, the rule sees the moisture below its threshold long enough, signs an irrigate, the
node runs its pump, and the audit log says which rule asked and that the node obeyed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from edge_gateway import audit
from edge_gateway.emulator import EmulatedNode
from edge_gateway.signing import KeyRing
from edge_gateway.store import Store
from hil_tests.conftest import SITE, neoterra
from testkit.mosquitto import Mosquitto
from testkit.procs import stop_process, wait_for

NODE = "bed-1"


def gateway_config(path: Path, broker: Mosquitto, key_file: Path) -> Path:
    path.write_text(f"""
[site]
name = "{SITE}"
timezone = "Europe/Berlin"

[broker]
host = "{broker.host}"
port = {broker.port}

[storage]
path = "gateway.db"

[plants.veg]
moisture_low_pct = 30
moisture_high_pct = 45
soak_s = 600
max_run_s = 120
daily_budget_l = 20
flow_l_per_min = 2

[nodes.{NODE}]
role = "garden"
board = "emulated"
plant = "veg"
key_file = "{key_file}"
stale_after_s = 60

[rules]
water_budget_l_per_day = 20

[rules.dry_bed]
when = {{ node = "{NODE}", quantity = "soil_moisture", below = 30, for_s = 3 }}
action = {{ type = "irrigate", node = "{NODE}", seconds = 4 }}
cooldown_s = 3600
""")
    return path


def moisture(db: Path) -> float | None:
    with Store(db) as store:
        rows = store.query("SELECT value FROM readings WHERE node = ? AND quantity = ?"
                           " ORDER BY ts DESC LIMIT 1", (NODE, "soil_moisture"))
    return float(rows[0][0]) if rows else None


def pump_events(db: Path) -> list[str]:
    with Store(db) as store:
        return [e.state for e in store.events(node=NODE)
                if e.kind == "actuator" and e.name == "pump"]


def rule_audit(db: Path) -> list[audit.AuditEntry]:
    with Store(db) as store:
        return [e for e in audit.entries(store, node=NODE) if e.requested_by == "rule:dry_bed"]


def test_a_rule_waters_a_drying_bed_and_the_audit_log_says_so(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    keys = KeyRing(tmp_path / "keys")
    key_file = keys.create(NODE)
    config = gateway_config(tmp_path / "gateway.toml", mosquitto, key_file)
    db = tmp_path / "gateway.db"
    log_path = tmp_path / "gateway.log"
    node = EmulatedNode(tmp_path / NODE, {
        "site": SITE, "node": NODE, "report_interval_s": 1, "cmd_key": keys.key(NODE).hex(),
        "broker": {"host": mosquitto.host, "port": mosquitto.port, "keepalive_s": 5},
    }, world={"soil_moisture": 45.0, "evaporation_pct_per_s": 0.0, "adc_noise_raw": 20})
    with log_path.open("w") as log:
        gateway = subprocess.Popen(neoterra("gateway", "run", "--config", str(config)),
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        node.start()

        def log_tails() -> str:
            return f"gateway log:\n{log_path.read_text()[-3000:]}\nnode log:\n{node.log_tail()}"

        wait_for(lambda: (m := moisture(db)) is not None and m > 40, timeout=30,
                 what=lambda: f"the wet bed's moisture\n{log_tails()}")
        assert rule_audit(db) == [] and pump_events(db) == []  # wet: nothing to do
        node.set_world(evaporation_pct_per_s=2.0)
        wait_for(lambda: pump_events(db)[:2] == ["on", "off"], timeout=60,
                 what=lambda: f"the rule to run the pump once\n{log_tails()}")
        wait_for(lambda: [e.result for e in rule_audit(db)] == [audit.ACKED_OK], timeout=15,
                 what=lambda: f"the audit row of the rule's command\n{log_tails()}")
    finally:
        node.stop()
        stop_process(gateway)
    (entry,) = rule_audit(db)
    assert (entry.action, entry.params) == ("irrigate", {"seconds": 4})
    assert "pump on for 4 s" in entry.detail, entry
    assert pump_events(db).count("on") == 1  # the cooldown holds it to one run
