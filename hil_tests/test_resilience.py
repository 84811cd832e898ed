"""Outages of every kind, end to end: emulated nodes running the firmware under the real
micropython interpreter, a real mosquitto, the real gateway. Whatever fails, every reading a
node produced is stored exactly once with the time it was taken; the only readings that may
be missing are those being written at a power cut, and the gateway reports exactly those.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from sensornode.outbox_segment import HEADER, parse_header

from edge_gateway.emulator import EmulatedNode
from edge_gateway.gaps import LOST, GapTracker, list_gaps
from edge_gateway.store import Store
from hil_tests.conftest import SITE, GatewayProcess
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for
from testkit.proxy import FaultProxy

QUIET = {"evaporation_pct_per_s": 0.0, "adc_noise_raw": 20}
# The scenario's outage lengths: these sleeps ARE the outage, not waits for a result.
BROKER_OUTAGE_S = 30
GATEWAY_OUTAGE_S = 8


def node_config(name: str, broker: Mosquitto) -> dict[str, Any]:
    return {
        "site": SITE,
        "node": name,
        "report_interval_s": 1,
        "broker": {"host": broker.host, "port": broker.port, "keepalive_s": 5},
    }


def start_nodes(tmp_path: Path, broker: Mosquitto, count: int) -> list[EmulatedNode]:
    nodes = []
    for index in range(1, count + 1):
        node = EmulatedNode(tmp_path / f"n{index}", node_config(f"n{index}", broker), world=QUIET)
        node.start()
        nodes.append(node)
    return nodes


def stored(db: Path, node: str) -> dict[int, float]:
    """seq -> node timestamp of every telemetry entry and event the gateway stored."""
    with Store(db) as store:
        out = {r.seq: r.ts for r in store.readings(node=node)}
        out.update({e.seq: e.ts for e in store.events(node=node)})
    return out


def missing(db: Path, node: str) -> list[tuple[int, int]]:
    """Runs of seqs below the newest stored one that the gateway never stored."""
    seqs = stored(db, node)
    runs: list[tuple[int, int]] = []
    if not seqs:
        return runs
    for seq in range(min(seqs), max(seqs)):
        if seq in seqs:
            continue
        if runs and runs[-1][1] == seq - 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def reported_lost(db: Path, node: str) -> list[tuple[int, int]]:
    """The gaps the gateway reports as lost, judged on its store once everything has settled
    (the daemon waits 30 s for late redeliveries first; the logic is the same GapTracker)."""
    with Store(db) as store:
        tracker = GapTracker(store, settle_s=0)
        tracker.load()
        tracker.check()
        return [(g.first_seq, g.last_seq) for g in list_gaps(store, node) if g.cause == LOST]


def caught_up(db: Path, node: str, since: float) -> bool:
    with Store(db) as store:
        return any(r.received_at > since and r.ts > since for r in store.readings(node=node))


def node_name(node: EmulatedNode) -> str:
    return str(node.world_config["node"])


def wait_reporting(db: Path, node: EmulatedNode, count: int = 5) -> None:
    name = node_name(node)
    wait_for(
        lambda: len(stored(db, name)) >= count,
        timeout=30,
        what=lambda: f"{name} reporting\n{node.log_tail()}",
    )


def wait_caught_up(db: Path, node: EmulatedNode, since: float, after: str) -> None:
    """Until the gateway has a reading taken and received after `since` (2 s past the end of
    a fault), i.e. the node's backlog is through."""
    name = node_name(node)
    wait_for(
        lambda: caught_up(db, name, since + 2),
        timeout=60,
        what=lambda: f"{name} {after}\n{node.log_tail()}",
    )


def test_broker_outage_loses_and_duplicates_nothing(
    mosquitto: Mosquitto, gateway: Path, tmp_path: Path
) -> None:
    nodes = start_nodes(tmp_path, mosquitto, 3)
    try:
        for node in nodes:
            wait_reporting(gateway, node)
        outage_start = time.time()
        mosquitto.stop()
        time.sleep(BROKER_OUTAGE_S)
        mosquitto.start()
        outage_end = time.time()
        for node in nodes:
            name = node_name(node)
            wait_caught_up(gateway, node, outage_end, "to deliver its backlog")
            during = [
                ts
                for ts in stored(gateway, name).values()
                if outage_start + 1 < ts < outage_end - 1
            ]
            # One report a second per component: the outage's readings arrived with the time
            # they were taken, not the time they were delivered.
            assert len({round(ts) for ts in during}) >= BROKER_OUTAGE_S - 5, name
            assert missing(gateway, name) == [], name
    finally:
        for node in nodes:
            node.stop()
    with Store(gateway) as store:
        assert store.dead_letters() == []


def test_gateway_restart_mid_stream_loses_nothing(
    mosquitto: Mosquitto, gateway_process: GatewayProcess, tmp_path: Path
) -> None:
    db = gateway_process.db
    nodes = start_nodes(tmp_path, mosquitto, 2)
    try:
        for node in nodes:
            wait_reporting(db, node)
        gateway_process.stop()
        time.sleep(GATEWAY_OUTAGE_S)
        gateway_process.start()
        back = time.time()
        for node in nodes:
            wait_caught_up(db, node, back, "after the gateway restart")
            assert missing(db, node_name(node)) == [], node_name(node)
    finally:
        for node in nodes:
            node.stop()


def test_power_cuts_lose_at_most_the_record_being_written_and_the_gateway_says_which(
    mosquitto: Mosquitto, gateway: Path, tmp_path: Path
) -> None:
    cuts = int(os.environ.get("NT_POWER_CUTS", "10"))  # `make soak` runs 200
    rng = random.Random(20261122)
    (node,) = start_nodes(tmp_path, mosquitto, 1)
    name = "n1"
    try:
        wait_reporting(gateway, node, count=3)
        for _ in range(cuts):
            time.sleep(rng.uniform(0.3, 2.5))  # a cut at a random moment of the report cycle
            node.kill()
            node.start()
        back = time.time()
        wait_caught_up(gateway, node, back, f"after {cuts} power cuts")
    finally:
        node.stop()
    with Store(gateway) as store:
        assert store.dead_letters() == [], "a corrupt record was sent"
        # Each boot knew where the one before stopped: its seqs continue right after.
        boots = store.query("SELECT seq_next, seq_last FROM boots WHERE node = ?", (name,))
    assert len(boots) >= 2 and all(last is not None for first, last in boots if first), boots
    # A SIGKILL ends the process between two writes, so no record is ever cut in half here
    # (test_a_record_cut_by_a_power_cut_... tears one): the gateway has every seq, and the
    # gaps it reports are exactly the seqs it does not have.
    assert missing(gateway, name) == reported_lost(gateway, name)
    assert len(missing(gateway, name)) <= cuts


def newest_segment(node: EmulatedNode) -> Path | None:
    segments = sorted((node.flash_dir / "outbox").glob("*.seg"), key=lambda p: int(p.stem))
    return segments[-1] if segments else None


def records_in(segment: Path) -> list[tuple[int, int]]:
    """(offset, seq) of each record of an outbox segment file."""
    data = segment.read_bytes()
    out, offset = [], 0
    for _ in range(len(data) // HEADER):
        fields = parse_header(data[offset:offset + HEADER], 0xFFFF)
        if fields is None or offset >= len(data):
            break
        out.append((offset, fields[2]))
        offset += HEADER + fields[1]
    return out


def test_a_record_cut_by_a_power_cut_is_the_only_one_missing_and_the_gateway_names_it(
    mosquitto: Mosquitto, gateway: Path, tmp_path: Path
) -> None:
    (node,) = start_nodes(tmp_path, mosquitto, 1)
    name = "n1"
    try:
        wait_reporting(gateway, node, count=3)
        mosquitto.stop()  # nothing leaves the outbox now
        wait_for(
            lambda: (seg := newest_segment(node)) is not None and len(records_in(seg)) >= 4,
            timeout=30,
            what=lambda: f"records piling up in the outbox\n{node.log_tail()}",
        )
        node.kill()
        segment = newest_segment(node)
        assert segment is not None
        offset, cut_seq = records_in(segment)[-1]
        # The power went halfway through writing that record: on a FAT or POSIX flash the
        # header and part of the payload are there (LittleFS would keep none of it).
        data = segment.read_bytes()
        segment.write_bytes(data[: offset + HEADER + (len(data) - offset - HEADER) // 2])
        mosquitto.start()
        node.start()
        back = time.time()
        wait_caught_up(gateway, node, back, "after the cut record")
    finally:
        node.stop()
    with Store(gateway) as store:
        assert store.dead_letters() == [], "the cut record was sent"
        boots = store.query("SELECT seq_next, seq_last FROM boots WHERE node = ?", (name,))
    assert (cut_seq + 1, cut_seq) in boots
    assert missing(gateway, name) == [(cut_seq, cut_seq)]
    assert reported_lost(gateway, name) == [(cut_seq, cut_seq)]


def proxied_node(tmp_path: Path, proxy: FaultProxy, keepalive_s: int) -> EmulatedNode:
    config = {
        "site": SITE,
        "node": "p1",
        "report_interval_s": 1,
        "broker": {"host": proxy.host, "port": proxy.port, "keepalive_s": keepalive_s},
    }
    node = EmulatedNode(tmp_path / "p1", config, world=QUIET)
    node.start()
    return node


def test_half_open_link_is_detected_within_one_and_a_half_keepalives_and_nothing_is_lost(
    mosquitto: Mosquitto, gateway: Path, tmp_path: Path
) -> None:
    keepalive_s = 5
    with FaultProxy(mosquitto.port) as proxy:
        node = proxied_node(tmp_path, proxy, keepalive_s)
        try:
            wait_reporting(gateway, node)
            downs_before = node.log_text().count("link down")
            proxy.blackhole()  # no FIN, no RST: the node must notice on its own
            cut_at = time.monotonic()
            wait_for(
                lambda: node.log_text().count("link down") > downs_before,
                timeout=keepalive_s * 1.5 + 5,
                what="the node to notice the dead link",
            )
            noticed_s = time.monotonic() - cut_at
            assert noticed_s <= keepalive_s * 1.5 + 1.0, noticed_s  # + polling of the log
            proxy.pass_through()
            back = time.time()
            wait_caught_up(gateway, node, back, "back through the proxy")
        finally:
            node.stop()
    assert missing(gateway, "p1") == []


def test_lost_pubacks_are_resent_with_dup_and_stored_once(
    mosquitto: Mosquitto, gateway: Path, tmp_path: Path
) -> None:
    with FaultProxy(mosquitto.port) as proxy:
        node = proxied_node(tmp_path, proxy, keepalive_s=10)
        try:
            wait_reporting(gateway, node)
            proxy.drop_puback(count=3)
            proxy.wait_for(
                lambda: any(p.dup and p.topic.endswith("/telemetry") for p in proxy.publishes()),
                timeout=40,
                what="a telemetry PUBLISH resent with DUP",
            )
            back = time.time()
            wait_caught_up(gateway, node, back, "after the lost PUBACKs")
        finally:
            node.stop()
        resent = [p for p in proxy.publishes() if p.dup]
        originals = {(p.topic, p.payload) for p in proxy.publishes() if not p.dup}
        # What was resent had gone out before, unchanged (same topic and payload start).
        assert resent and all((p.topic, p.payload) in originals for p in resent)
    assert missing(gateway, "p1") == []
    with Store(gateway) as store:
        # The broker delivered the resent messages again; the gateway kept one copy.
        seqs = [r.seq for r in store.readings(node="p1")]
        quantities = [(r.seq, r.quantity) for r in store.readings(node="p1")]
        assert len(quantities) == len(set(quantities)) and seqs
