"""The garden node app under CPython: the same firmware modules, the emulated machine in-process,
our MQTT client against a real mosquitto, observed and commanded by a paho client."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import emu  # type: ignore[import-not-found]  # boards/emulated, on pytest's pythonpath
import pytest
from sensornode import app, config, protocol, sender
from sensornode.board import Board
from sensornode.sequence import Sequence

from edge_gateway.boards import load_profile
from testkit.emulated import emulated_board, fresh_emulation  # noqa: F401  (fixture)
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for
from testkit.watch import Watcher

SITE = "t"
NODE = "bed-1"
TS = 1795300000.0
CMD_KEY = bytes(range(32))  # the node's cmd_key, as the gateway's key file holds it


class Observer(Watcher):
    """Everything under the site, with a persistent session (so what the node publishes while
    the broker restarts is still seen), plus a way to send commands."""

    def __init__(self, broker: Mosquitto) -> None:
        super().__init__(broker, f"nt/{SITE}/#", client_id="observer", clean_session=False)
        self.counter = 0

    def of(self, kind: str) -> list[bytes]:
        return self.payloads(protocol.node_topic(SITE, NODE, kind))

    def telemetry(self) -> list[dict[str, Any]]:
        return [
            entry for p in self.of(protocol.TELEMETRY) for entry in protocol.decode_telemetry(p)
        ]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        decoded = [protocol.decode_event(p) for p in self.of(protocol.EVENT)]
        return [e for e in decoded if name in (None, e["name"])]

    def values(self, quantity: str) -> list[float]:
        return [e["values"][quantity] for e in self.telemetry() if quantity in e["values"]]

    def acks(self) -> list[dict[str, Any]]:
        return [protocol.decode_ack(p) for p in self.of(protocol.ACK)]

    def command(self, cmd_id: str, seconds: int, retain: bool = False) -> None:
        self.send(self.signed(cmd_id, "irrigate", {"seconds": seconds}), retain)

    def signed(self, cmd_id: str, action: str, params: dict[str, Any]) -> bytes:
        """A command signed as the gateway signs it (edge_gateway.signing)."""
        self.counter += 1
        unsigned = protocol.encode_command(cmd_id, action, params, time.time(), NODE,
                                           self.counter)
        sig = hmac.new(CMD_KEY, unsigned, hashlib.sha256).hexdigest()
        return protocol.sign_command(unsigned, sig)

    def send(self, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(
            protocol.node_topic(SITE, NODE, protocol.CMD), payload, 1, retain
        )
        info.wait_for_publish(timeout=5)


@pytest.fixture
def observer(mosquitto: Mosquitto) -> Iterator[Observer]:
    watcher = Observer(mosquitto)
    wait_for(lambda: watcher.client.is_connected(), timeout=5, what="observer connected")
    yield watcher
    watcher.close()


def make_node(broker: Mosquitto, tmp_path: Path, **overrides: Any) -> app.Node:
    emulated_board("emulated", {"soil_moisture": 30.0, "adc_noise_raw": 0})
    cfg = {
        "site": SITE,
        "node": NODE,
        "role": "garden",
        "report_interval_s": 1,
        "wifi": {"ssid": "", "password": ""},
        "broker": {
            "host": broker.host,
            "port": broker.port,
            "username": "",
            "password": "",
            "keepalive_s": 5,
        },
        "soil": {"dry_raw": 50000, "wet_raw": 24000},
        "irrigation": {"max_run_s": 5},
        "cmd_key": CMD_KEY.hex(),
    }
    cfg.update(overrides)
    return app.Node(
        config.validate(cfg),
        Board(load_profile("emulated")),
        Sequence(str(tmp_path / "seq.json")),
        root=f"{tmp_path}/",
    )


def pump_level() -> bool:
    return bool(emu.get().state()["pump"])


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def run_with_node(node: app.Node, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        task = asyncio.create_task(node.run())
        try:
            await scenario()
        finally:
            task.cancel()
            for leftover in node._command_tasks:
                leftover.cancel()
            if node.link.client.is_connected:
                await node.link.client.disconnect()

    asyncio.run(main())


@pytest.mark.usefixtures("fresh_emulation")
def test_birth_then_telemetry_with_increasing_seq(
    mosquitto: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    node = make_node(mosquitto, tmp_path)

    async def scenario() -> None:
        await until(lambda: len(observer.values("soil_moisture")) >= 3, 10, "three readings")

    run_with_node(node, scenario)
    birth = protocol.decode_status(observer.of(protocol.STATUS)[0])
    assert birth["online"] and birth["role"] == "garden" and birth["board"] == "emulated"
    entries = observer.telemetry()
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] >= birth["seq_next"]
    # The emulated soil is at 30 % and the probe is calibrated like the world's probe.
    moisture = observer.values("soil_moisture")
    assert all(28.0 <= m <= 32.0 for m in moisture), moisture
    assert observer.values("pump") and set(observer.values("pump")) == {0}


@pytest.mark.usefixtures("fresh_emulation")
def test_irrigate_runs_the_pump_for_n_seconds_then_refuses_overlap_and_short_cycling(
    mosquitto: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    node = make_node(mosquitto, tmp_path)

    async def scenario() -> None:
        await until(lambda: observer.of(protocol.STATUS), 10, "node online")
        started = time.monotonic()
        observer.command("c-run", 1)
        await until(pump_level, 5, "pump on")
        observer.command("c-overlap", 1)
        observer.send(
            observer.signed("c-diffuse", "diffuse", {"channel": 1, "duty_pct": 50, "seconds": 5})
        )
        await until(lambda: len(observer.acks()) == 3, 5, "acks of overlap and diffuse")
        await until(lambda: not pump_level(), 5, "pump off")
        assert 0.9 <= time.monotonic() - started <= 3.0
        observer.command("c-again", 1)  # within the pump's min_off_s (60 s by default)
        await until(lambda: len(observer.acks()) == 4, 5, "ack of the short-cycling command")
        await until(lambda: len(observer.events("pump")) == 3, 5, "pump on/off/refused events")

    run_with_node(node, scenario)
    acks = {a["id"]: a for a in observer.acks()}
    assert acks["c-run"]["ok"] is True and acks["c-run"]["result"] == "started"
    assert acks["c-run"]["detail"] == "pump on for 1 s"
    overlap = acks["c-overlap"]
    assert overlap["ok"] is False and "pump already running" in overlap["detail"]
    assert acks["c-diffuse"]["ok"] is False
    assert acks["c-diffuse"]["detail"] == "diffuse is not something a garden node can do"
    again = acks["c-again"]
    assert (again["ok"], again["result"]) == (False, "refused")
    assert again["detail"].startswith("refused: min_off_s=60, off only 0 s ago"), again
    events = observer.events("pump")
    assert [(e["kind"], e["state"]) for e in events] == [
        ("actuator", "on"), ("actuator", "off"), ("actuator", "refused")]
    assert events[0]["detail"] == "cmd c-run: pump on for 1 s"
    assert events[1]["detail"] == "cmd c-run: done, 1 s as asked"
    assert events[2]["detail"].startswith("cmd c-again: refused: min_off_s=60")
    assert not pump_level()


@pytest.mark.usefixtures("fresh_emulation")
def test_retained_command_is_never_obeyed_and_malformed_one_is_reported(
    mosquitto: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    observer.command("stale", 3, retain=True)  # waiting on the broker before the node boots
    node = make_node(mosquitto, tmp_path)

    async def scenario() -> None:
        await until(lambda: len(observer.values("soil_moisture")) >= 2, 10, "node reporting")
        observer.send(b'{"v": 1, "id": "x1", "action": "flood", "params": {}, "ts": 1795300000}')
        await until(lambda: observer.events("cmd"), 5, "fault event for the bad command")

    try:
        run_with_node(node, scenario)
    finally:
        observer.send(b"", retain=True)  # clear the retained message
    assert set(observer.values("pump")) == {0}
    assert [a["id"] for a in observer.acks()] == []
    (fault,) = observer.events("cmd")
    assert (
        fault["kind"] == "fault" and fault["state"] == "refused" and "cmd.action" in fault["detail"]
    )


@pytest.mark.usefixtures("fresh_emulation")
def test_readings_taken_while_the_broker_is_down_arrive_after_it_returns(
    mosquitto: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    node = make_node(mosquitto, tmp_path)
    before: list[int] = []

    async def scenario() -> None:
        await until(lambda: len(observer.telemetry()) >= 2, 10, "node reporting")
        before.extend(e["seq"] for e in observer.telemetry())
        mosquitto.stop()
        await until(lambda: node.client is None, 15, "node notices the broker is gone")
        await until(lambda: node.outbox.pending >= 3, 10, "readings queued while offline")
        mosquitto.start()
        await asyncio.to_thread(wait_for, observer.client.is_connected, 15, "observer back")
        await until(
            lambda: not node.outbox.pending and node.client is not None, 40, "queue flushed"
        )

    run_with_node(node, scenario)
    assert node.outbox.dropped == 0
    # Telemetry and events share the node's seq: together they have no gap.
    seqs = sorted({e["seq"] for e in observer.telemetry() + observer.events()})
    assert seqs[-1] - max(before) >= 3, "no readings from the outage arrived"
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "a reading was lost"


def test_payload_sizes_stay_small() -> None:
    entry = {
        "seq": 123456,
        "ts": TS,
        "values": {"soil_moisture": 41.5, "soil_raw": 38211, "pump": 0},
    }
    assert len(protocol.encode_telemetry([entry])) <= 110
    # A full batch from the outbox, joined without re-encoding, is a valid telemetry payload.
    stored = protocol.encode_entry(123456, TS, entry["values"])
    batch = protocol.encode_telemetry_entries([stored] * sender.MAX_BATCH)
    assert json.loads(batch)["v"] == 1
    assert len(protocol.decode_telemetry(batch)) == sender.MAX_BATCH
