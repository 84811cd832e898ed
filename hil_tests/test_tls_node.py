"""A node reaching its broker over TLS, verifying the broker against the CA on its flash."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_gateway.emulator import EmulatedNode
from edge_gateway.store import Store
from hil_tests.conftest import SITE
from testkit.mosquitto import Mosquitto, free_port
from testkit.procs import wait_for
from testkit.tls import Certificates, make_certificates


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "pki")


@pytest.fixture
def mosquitto(tmp_path: Path, certificates: Certificates) -> Iterator[Mosquitto]:
    """The test broker with a TLS listener beside its plain one (the gateway uses plain)."""
    broker = Mosquitto(
        tmp_path / "broker", extra_config=certificates.mosquitto_listener(free_port())
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def tls_port(broker: Mosquitto) -> int:
    for line in (broker.workdir / "mosquitto.conf").read_text().splitlines():
        if line.startswith("listener ") and int(line.split()[1]) != broker.port:
            return int(line.split()[1])
    raise AssertionError("no TLS listener in the broker's config")


def tls_node(tmp_path: Path, broker: Mosquitto, name: str, ca: Path) -> EmulatedNode:
    config = {
        "site": SITE,
        "node": name,
        "report_interval_s": 1,
        "broker": {"host": "127.0.0.1", "port": tls_port(broker), "ca_file": "ca.pem"},
    }
    node = EmulatedNode(tmp_path / name, config)
    shutil.copy(ca, node.flash_dir / "ca.pem")
    node.start()
    return node


def has_readings(db: Path, node: str) -> bool:
    with Store(db) as store:
        return any(r.node == node for r in store.latest_readings())


def test_node_reports_over_tls_and_refuses_a_broker_its_ca_did_not_sign(
    mosquitto: Mosquitto, gateway: Path, tmp_path: Path, certificates: Certificates
) -> None:
    good = tls_node(tmp_path, mosquitto, "tls-1", certificates.ca)
    wrong = tls_node(tmp_path, mosquitto, "tls-2", certificates.other_ca)
    try:
        wait_for(
            lambda: has_readings(gateway, "tls-1"),
            timeout=30,
            what="readings from the TLS node",
        )
        wait_for(
            lambda: "link down" in wrong.log_text(),
            timeout=30,
            what="the node with the wrong CA to refuse the broker",
        )
        assert "verif" in wrong.log_text() or "signed" in wrong.log_text(), wrong.log_text()
    finally:
        good.stop()
        wrong.stop()
    assert not has_readings(gateway, "tls-2")
