"""Every sensor of a garden node and a drone payload node, end to end: the firmware under the real
micropython interpreter on emulated boards whose chips are modelled at the register level,
a real mosquitto, the real gateway. Readings follow the world; an injected fault produces one
fault event, the other sensors keep reporting, and clearing it produces one recovery event.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from edge_gateway.commands import send_command
from edge_gateway.emulator import EmulatedNode
from edge_gateway.signing import KeyRing, Signer
from edge_gateway.store import Store
from hil_tests.conftest import SITE
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for

GARDEN_QUANTITIES = {
    "soil_moisture",
    "soil_raw",
    "pump",
    "soil_temperature",
    "air_temperature",
    "air_humidity",
    "tank_ok",
}
DRONE_QUANTITIES = {
    "air_temperature",
    "air_humidity",
    "pressure",
    "gas_resistance",
    "voc_raw",
    "voc_index",
    "mq135_ppm",
    "mq135_ratio",
    "tank_ok_1",
    "tank_ok_2",
    *(f"diffuser_duty_{n}" for n in range(1, 5)),
}
WORLD = {
    "air_temperature_c": 21.0,
    "air_humidity_pct": 45.0,
    "pressure_hpa": 1008.0,
    "soil_temperature_c": 16.0,
    "soil_temperature_lag_s": 10_000_000.0,
    "soil_moisture": 40.0,
    "evaporation_pct_per_s": 0.0,
    "mq135_warmup_s": 3,
}


def config(node: str, role: str, broker: Mosquitto, **extra: Any) -> dict[str, Any]:
    return {
        "site": SITE,
        "node": node,
        "role": role,
        "report_interval_s": 2,
        # A short stuck check so the test need not wait 30 identical readings.
        "sensors": {"sht4x": {"stuck_after": 4}},
        "broker": {"host": broker.host, "port": broker.port, "keepalive_s": 10},
        **extra,
    }


def latest(db: Path, node: str) -> dict[str, float]:
    with Store(db) as store:
        return {r.quantity: r.value for r in store.latest_readings() if r.node == node}


def readings_after(db: Path, node: str, quantity: str, since: float) -> list[float]:
    with Store(db) as store:
        return [
            r.value for r in store.readings(node=node, quantity=quantity) if r.received_at >= since
        ]


def fault_events(db: Path, node: str, name: str) -> list[str]:
    with Store(db) as store:
        return [e.state for e in store.events(node=node) if e.kind == "fault" and e.name == name]


@pytest.fixture
def nodes(mosquitto: Mosquitto, gateway: Path, tmp_path: Path) -> Any:
    garden = EmulatedNode(tmp_path / "bed-1", config("bed-1", "garden", mosquitto), world=WORLD)
    KeyRing(tmp_path / "keys").create("drone-1")
    drone = EmulatedNode(
        tmp_path / "drone-1",
        config(
            "drone-1",
            "drone",
            mosquitto,
            cmd_key=KeyRing(tmp_path / "keys").key("drone-1").hex(),
            mq135={"r0_ohm": 76600, "warmup_s": 3, "divider_ratio": 0.667},
            diffusers={
                "max_duty_pct": 80,
                "ramp_pct_per_s": 200,
                "freq_hz": 1000,
                "max_run_s": 120,
            },
        ),
        world={
            **WORLD,
            "tank_level_ml_1": 12.0,
            "tank_switch_threshold_ml_1": 10.0,
            "diffuser_flow_ml_per_s_1": 0.5,
            "diffuser_emission_ppb_per_s_1": 400.0,
        },
    )
    garden.start()
    drone.start()
    try:
        yield garden, drone
    finally:
        garden.stop()
        drone.stop()


def test_every_sensor_reports_plausible_values_that_follow_the_world(
    mosquitto: Mosquitto, gateway: Path, nodes: tuple[EmulatedNode, EmulatedNode], tmp_path: Path
) -> None:
    db = gateway
    garden, drone = nodes
    wait_for(
        lambda: set(latest(db, "bed-1")) >= GARDEN_QUANTITIES,
        timeout=40,
        what=lambda: (
            f"every garden quantity; have {sorted(latest(db, 'bed-1'))}\n{garden.log_tail()}"
        ),
    )
    # The VOC index needs 45 samples of learning before its first value.
    wait_for(
        lambda: set(latest(db, "drone-1")) >= DRONE_QUANTITIES,
        timeout=90,
        what=lambda: (
            f"every drone quantity; have {sorted(latest(db, 'drone-1'))}\n{drone.log_tail()}"
        ),
    )
    g, d = latest(db, "bed-1"), latest(db, "drone-1")
    assert abs(g["soil_moisture"] - 40.0) < 3, g
    assert abs(g["soil_temperature"] - 16.0) < 0.5, g
    assert abs(g["air_temperature"] - 21.0) < 0.5 and abs(g["air_humidity"] - 45.0) < 3, g
    assert g["tank_ok"] == 1 and g["pump"] == 0, g
    assert abs(d["air_temperature"] - 21.0) < 0.5 and abs(d["pressure"] - 1008.0) < 2, d
    assert 1_000 < d["gas_resistance"] < 2_000_000, d
    assert 1 <= d["voc_index"] <= 500 and 100 < d["mq135_ppm"] < 2_000, d
    assert d["tank_ok_1"] == 1 and d["diffuser_duty_1"] == 0, d
    assert {e.name for e in Store(db).events() if e.kind == "fault"} == set(), "no faults yet"

    # Dry the soil: the reported moisture falls.
    garden.set_world(evaporation_pct_per_s=1.5)
    wait_for(
        lambda: latest(db, "bed-1")["soil_moisture"] < 30,
        timeout=30,
        what="soil moisture to fall as the soil dries",
    )

    # Run a diffuser: the aroma rises (VOC index up, MQ-135 up), its tank drains past the float.
    before = latest(db, "drone-1")
    with Store(db) as store:
        ack = send_command(
            mosquitto.host,
            mosquitto.port,
            SITE,
            "drone-1",
            "diffuse",
            {"channel": 1, "duty_pct": 100, "seconds": 60},
            timeout_s=10,
            signer=Signer(store, KeyRing(tmp_path / "keys")),
            requested_by="test",
        )
    assert ack["ok"] and "capped" in ack["detail"], ack
    wait_for(
        lambda: latest(db, "drone-1")["diffuser_duty_1"] == 80,
        timeout=15,
        what="diffuser 1 at its 80 % cap",
    )
    wait_for(
        lambda: latest(db, "drone-1")["voc_index"] > before["voc_index"] + 50,
        timeout=45,
        what=f"the VOC index to rise from {before['voc_index']}",
    )
    assert latest(db, "drone-1")["mq135_ppm"] > before["mq135_ppm"]
    wait_for(
        lambda: latest(db, "drone-1")["tank_ok_1"] == 0,
        timeout=30,
        what="tank 1's float switch to drop as the diffuser drains it",
    )
    assert latest(db, "drone-1")["tank_ok_2"] == 1


@pytest.mark.parametrize(
    ("node_name", "device", "component", "fault"),
    [
        ("bed-1", "sht4x", "sht4x", "crc"),
        ("bed-1", "sht4x", "sht4x", "stuck"),
        ("bed-1", "ds18b20_1", "ds18b20", "crc"),
        ("drone-1", "bme680", "bme680", "absent"),
        ("drone-1", "sgp40", "sgp40", "crc"),
    ],
)
def test_a_fault_is_one_event_the_rest_keep_reporting_and_recovery_is_one_event(
    mosquitto: Mosquitto,
    gateway: Path,
    nodes: tuple[EmulatedNode, EmulatedNode],
    node_name: str,
    device: str,
    component: str,
    fault: str,
) -> None:
    db = gateway
    node = nodes[0] if node_name == "bed-1" else nodes[1]
    witness = "soil_moisture" if node_name == "bed-1" else "mq135_ratio"
    wait_for(
        lambda: {witness, "air_temperature"} <= set(latest(db, node_name)),
        timeout=40,
        what=lambda: f"{node_name} reporting\n{node.log_tail()}",
    )
    injected_at = time.time()
    node.wait_applied(node.set_world(faults={device: fault}), timeout=10)
    wait_for(
        lambda: fault_events(db, node_name, component) == ["warning"],
        timeout=30,
        what=lambda: (
            f"one fault event for {component}; events {fault_events(db, node_name, component)}"
        ),
    )
    # The other sensors keep reporting while this one is broken.
    wait_for(
        lambda: len(readings_after(db, node_name, witness, injected_at)) >= 3,
        timeout=30,
        what=f"{witness} readings while {device} is broken",
    )
    node.wait_applied(node.set_world(faults={device: None}), timeout=10)
    wait_for(
        lambda: fault_events(db, node_name, component)[-1:] == ["ok"],
        timeout=60,
        what=lambda: (
            f"a recovery event for {component}; events {fault_events(db, node_name, component)}"
        ),
    )
    assert fault_events(db, node_name, component) == ["warning", "ok"]
