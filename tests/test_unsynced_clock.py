"""A node that boots without knowing the time (a cold-booted MCU: no gateway time yet, an RTC
counting from 2000) keeps its readings and sends them with the time they were taken once the
gateway's time arrives; records of an earlier boot that never learnt the time are given up
and reported as dropped, by seq."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sensornode import app, config, protocol
from sensornode.board import Board
from sensornode.sequence import Sequence
from sensornode.timesync import Clock

from edge_gateway.boards import load_profile
from testkit.emulated import emulated_board, fresh_emulation  # noqa: F401  (fixture)
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for
from tests.test_app import NODE, SITE, Observer, run_with_node, until

COLD_RTC = 946_684_800.0  # 2000-01-01: what an ESP32's RTC says after a cold boot


@pytest.fixture
def watcher(mosquitto: Mosquitto) -> Iterator[Observer]:
    observer = Observer(mosquitto)
    wait_for(observer.client.is_connected, timeout=5, what="observer connected")
    yield observer
    observer.close()


def cold_node(broker: Mosquitto, tmp_path: Path) -> app.Node:
    emulated_board("emulated", {"soil_moisture": 30.0, "adc_noise_raw": 0})
    cfg: dict[str, Any] = {
        "site": SITE,
        "node": NODE,
        "role": "garden",
        "report_interval_s": 1,
        "wifi": {"ssid": "", "password": ""},
        "broker": {"host": broker.host, "port": broker.port, "keepalive_s": 5},
        "soil": {"dry_raw": 50000, "wet_raw": 24000},
    }
    root = f"{tmp_path}/"
    # The node's own Sequence and Clock, as on a board, but with an RTC that was never set.
    seq = Sequence(root + app.SEQ_FILE, boot_tail=_boot_tail(root))
    clock = Clock(boot=seq.boot, path=root + app.CLOCK_FILE, rtc=lambda: COLD_RTC)
    return app.Node(config.validate(cfg), Board(load_profile("emulated")), seq, root=root,
                    clock=clock)


def _boot_tail(root: str) -> Any:
    from sensornode.outbox import Outbox

    return Outbox(root + app.OUTBOX_DIR).boot_tail()


def send_time(observer: Observer, ts: float) -> None:
    info = observer.client.publish(protocol.site_topic(SITE, protocol.TIME),
                                   protocol.encode_time(ts, 60), 0)
    info.wait_for_publish(timeout=5)


@pytest.mark.usefixtures("fresh_emulation")
def test_readings_wait_for_the_time_and_keep_the_moment_they_were_taken(
    mosquitto: Mosquitto, watcher: Observer, tmp_path: Path
) -> None:
    observer = watcher
    node = cold_node(mosquitto, tmp_path)
    synced_at: list[float] = []

    async def scenario() -> None:
        await until(lambda: observer.of(protocol.STATUS), 10, "the birth")
        started = time.time()
        await until(lambda: node.outbox.pending >= 3 and time.time() - started > 2.5, 10,
                    "readings piling up unstamped for a while")
        assert observer.telemetry() == []  # no time to send them with yet
        synced_at.append(time.time())
        send_time(observer, synced_at[0])
        await until(lambda: len(observer.telemetry()) >= 3, 10, "the readings, now stamped")

    run_with_node(node, scenario)
    entries = sorted(observer.telemetry(), key=lambda e: e["seq"])
    stamps = [e["ts"] for e in entries]
    assert stamps == sorted(stamps)
    # Taken before the time was known, stamped with when they were taken (the first ones
    # seconds before the sync), not when they were sent.
    assert stamps[0] < synced_at[0] - 2, (stamps, synced_at)
    assert all(synced_at[0] - 15 < ts < synced_at[0] + 5 for ts in stamps), (stamps, synced_at)


@pytest.mark.usefixtures("fresh_emulation")
def test_records_of_a_boot_that_never_learnt_the_time_are_reported_dropped(
    mosquitto: Mosquitto, watcher: Observer, tmp_path: Path
) -> None:
    observer = watcher
    first = cold_node(mosquitto, tmp_path)
    unstamped: list[int] = []

    async def first_boot() -> None:
        await until(lambda: first.outbox.pending >= 2, 10, "unstamped readings")
        unstamped.extend(range(first.seq.first, first.seq.next))

    run_with_node(first, first_boot)  # the power goes before any time message came
    second = cold_node(mosquitto, tmp_path)
    assert second.seq.first == unstamped[-1] + 1

    async def second_boot() -> None:
        await until(lambda: observer.of(protocol.STATUS), 10, "the birth")
        send_time(observer, time.time())
        await until(lambda: len(observer.events("outbox")) >= len(unstamped), 10,
                    "a drop report per record of the first boot")
        await until(lambda: observer.telemetry(), 10, "the second boot's readings")

    run_with_node(second, second_boot)
    drops = observer.events("outbox")
    assert {e["state"] for e in drops} == {"dropped"}
    assert sorted(int(e["detail"].split("seq ")[1].split()[0]) for e in drops) == unstamped
    sent = {e["seq"] for e in observer.telemetry()}
    assert sent and not sent & set(unstamped)
    assert all(e["ts"] > COLD_RTC + 1e8 for e in observer.telemetry())
