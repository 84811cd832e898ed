"""The garden node app with its safety layer wired in, under CPython: the emulated machine
in-process, our MQTT client against a real mosquitto, commanded (signed) by a paho client, the
site e-stop published retained as the gateway and `neoterra estop` publish it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sensornode import app, protocol

from testkit.emulated import fresh_emulation  # noqa: F401  (fixture)
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for
from tests.test_app import (
    CMD_KEY,
    NODE,
    SITE,
    Observer,
    make_node,
    pump_level,
    run_with_node,
    until,
)

ESTOP_TOPIC = protocol.site_topic(SITE, protocol.ESTOP)
QUICK_PUMP = {"pumps": {"pump": {"min_off_s": 0}}}


@pytest.fixture(name="observer")
def observer_fixture(mosquitto: Mosquitto) -> Iterator[Observer]:
    watcher = Observer(mosquitto)
    wait_for(lambda: watcher.client.is_connected(), timeout=5, what="observer connected")
    yield watcher
    watcher.close()


def publish_estop(observer: Observer, latched: bool, ts: float | None = None,
                  payload: bytes | None = None) -> float:
    """Publish the site e-stop retained; returns the time it was handed to the client."""
    if payload is None:
        payload = protocol.encode_estop(latched, "alice", time.time() if ts is None else ts)
    sent = time.monotonic()
    observer.client.publish(ESTOP_TOPIC, payload, 1, True).wait_for_publish(timeout=5)
    return sent


def clear_estop(observer: Observer) -> None:
    observer.client.publish(ESTOP_TOPIC, b"", 1, True).wait_for_publish(timeout=5)


def ack(observer: Observer, cmd_id: str) -> dict[str, Any] | None:
    return next((a for a in observer.acks() if a["id"] == cmd_id), None)


async def ack_of(observer: Observer, cmd_id: str) -> dict[str, Any]:
    await until(lambda: ack(observer, cmd_id), 5, f"the ack of {cmd_id}")
    found = ack(observer, cmd_id)
    assert found is not None
    return found


def send(observer: Observer, cmd_id: str, action: str, params: dict[str, Any],
         ts: float | None = None, expires: float = 0) -> None:
    observer.counter += 1
    unsigned = protocol.encode_command(cmd_id, action, params,
                                       time.time() if ts is None else ts, NODE,
                                       observer.counter, expires)
    sig = hmac.new(CMD_KEY, unsigned, hashlib.sha256).hexdigest()
    observer.send(protocol.sign_command(unsigned, sig))


def states(observer: Observer, name: str) -> list[str]:
    return [e["state"] for e in observer.events(name)]


@pytest.mark.usefixtures("fresh_emulation")
def test_a_run_asked_beyond_max_on_is_capped_and_stopped_there(
    mosquitto: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    node = make_node(mosquitto, tmp_path, irrigation={"max_run_s": 1})
    on_for: list[float] = []

    async def scenario() -> None:
        await until(lambda: observer.of(protocol.STATUS), 10, "node online")
        observer.command("c-long", 99)
        await until(pump_level, 5, "pump on")
        started = time.monotonic()
        await until(lambda: not pump_level(), 5, "pump off")
        on_for.append(time.monotonic() - started)
        await until(lambda: len(observer.events("pump")) == 2, 5, "pump on/stopped events")

    run_with_node(node, scenario)
    print(f"pump on for {on_for[0]:.3f} s with max_on_s=1 (control tick "
          f"{app.CONTROL_TICK_MS} ms)")
    assert 0.8 <= on_for[0] <= 1 + 2 * app.CONTROL_TICK_MS / 1000
    (started_ack,) = observer.acks()
    assert (started_ack["ok"], started_ack["detail"]) == (
        True, "pump on for 1 s, capped by max_on_s=1")
    on, stopped = observer.events("pump")
    assert (on["state"], stopped["state"]) == ("on", "stopped")
    assert stopped["detail"] == "stopped: max_on_s=1 reached"


@pytest.mark.usefixtures("fresh_emulation")
def test_site_estop_stops_the_pump_at_once_and_refuses_until_the_site_resets_it(
    mosquitto: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    node = make_node(mosquitto, tmp_path, safety=QUICK_PUMP)
    latency: list[float] = []

    async def scenario() -> None:
        await until(lambda: observer.of(protocol.STATUS), 10, "node online")
        observer.command("c-run", 30)
        await until(pump_level, 5, "pump on")
        sent = publish_estop(observer, True)
        await until(lambda: not pump_level(), 2, "pump off after the e-stop")
        latency.append(time.monotonic() - sent)
        observer.command("c-during", 5)
        send(observer, "c-reset", "reset_estop", {})
        await ack_of(observer, "c-reset")
        assert not pump_level()
        publish_estop(observer, False)
        await until(lambda: "reset" in states(observer, "estop"), 5, "the node's reset")
        observer.command("c-after", 1)
        await until(pump_level, 5, "pump on after the reset")
        await until(lambda: not pump_level(), 5, "pump off")

    try:
        run_with_node(node, scenario)
    finally:
        clear_estop(observer)
    print(f"site e-stop to pump off: {latency[0] * 1000:.0f} ms "
          f"(control tick {app.CONTROL_TICK_MS} ms)")
    assert latency[0] <= app.CONTROL_TICK_MS / 1000
    during = ack(observer, "c-during")
    assert during is not None and during["ok"] is False
    assert during["detail"].startswith("refused: e-stop latched (site ts="), during
    reset = ack(observer, "c-reset")
    assert reset is not None and reset["ok"] is False
    assert "the site e-stop (nt/t/estop) is latched" in reset["detail"]
    after = ack(observer, "c-after")
    assert after is not None and after["ok"] is True
    assert states(observer, "estop") == ["latched", "reset"]
    assert states(observer, "pump")[:3] == ["on", "stopped", "refused"]


@pytest.mark.usefixtures("fresh_emulation")
def test_a_retained_estop_latches_at_boot_and_an_older_reset_does_not_clear_it(
    mosquitto: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    latched_at = time.time()
    publish_estop(observer, True, ts=latched_at)  # on the broker before the node boots
    node = make_node(mosquitto, tmp_path, safety=QUICK_PUMP)

    async def scenario() -> None:
        await until(lambda: "latched" in states(observer, "estop"), 10, "the e-stop latched")
        publish_estop(observer, False, ts=latched_at - 60)  # a reset from before the e-stop
        observer.command("c-1", 1)
        await ack_of(observer, "c-1")
        publish_estop(observer, False, ts=latched_at + 1)
        await until(lambda: "reset" in states(observer, "estop"), 5, "the node's reset")
        observer.command("c-2", 1)
        await ack_of(observer, "c-2")

    try:
        run_with_node(node, scenario)
    finally:
        clear_estop(observer)
    first, second = ack(observer, "c-1"), ack(observer, "c-2")
    assert first is not None and first["ok"] is False and "e-stop latched" in first["detail"]
    assert second is not None and second["ok"] is True, second
    assert states(observer, "estop") == ["latched", "reset"]


@pytest.mark.usefixtures("fresh_emulation")
def test_unreadable_site_estop_counts_as_latched_and_a_command_estop_needs_its_own_reset(
    mosquitto: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    node = make_node(mosquitto, tmp_path, safety=QUICK_PUMP)

    async def scenario() -> None:
        await until(lambda: observer.of(protocol.STATUS), 10, "node online")
        publish_estop(observer, True, payload=b'{"v":1,"latched":"maybe"}')
        await until(lambda: "latched" in states(observer, "estop"), 5, "latched by nonsense")
        publish_estop(observer, False)  # a proper site reset clears the site's latch
        await until(lambda: "reset" in states(observer, "estop"), 5, "reset")
        send(observer, "c-stop", "estop", {"reason": "hose burst"})
        await ack_of(observer, "c-stop")
        publish_estop(observer, False)  # the site's reset does not clear a command's e-stop
        observer.command("c-blocked", 1)
        await ack_of(observer, "c-blocked")
        send(observer, "c-reset", "reset_estop", {})
        await ack_of(observer, "c-reset")
        observer.command("c-ok", 1)
        await ack_of(observer, "c-ok")

    try:
        run_with_node(node, scenario)
    finally:
        clear_estop(observer)
    latched = [e["detail"] for e in observer.events("estop") if e["state"] == "latched"]
    assert latched == ["site unreadable e-stop message", "cmd c-stop: hose burst"]
    stop = ack(observer, "c-stop")
    assert stop is not None and (stop["ok"], stop["result"]) == (True, "done")
    blocked = ack(observer, "c-blocked")
    assert blocked is not None and blocked["ok"] is False
    assert blocked["detail"] == "refused: e-stop latched (cmd c-stop: hose burst); reset it first"
    reset = ack(observer, "c-reset")
    assert reset is not None and reset["detail"] == (
        "e-stop reset (latched by cmd c-stop: hose burst)")
    ok = ack(observer, "c-ok")
    assert ok is not None and ok["ok"] is True


@pytest.mark.usefixtures("fresh_emulation")
def test_expired_commands_are_refused_and_fresh_ones_run(
    mosquitto: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    node = make_node(mosquitto, tmp_path, safety=QUICK_PUMP)

    async def scenario() -> None:
        await until(lambda: observer.of(protocol.STATUS), 10, "node online")
        now = time.time()
        send(observer, "c-stale", "irrigate", {"seconds": 1}, ts=now - 100, expires=now - 50)
        send(observer, "c-stale-reset", "reset_estop", {}, ts=now - 100, expires=now - 50)
        send(observer, "c-fresh", "irrigate", {"seconds": 1}, expires=now + 30)
        send(observer, "c-setpoint", "setpoint",
             {"channel": 1, "target": 200, "quantity": "voc_index"})
        send(observer, "c-safe", "clear_safe_mode", {})
        for cmd_id in ("c-stale", "c-stale-reset", "c-fresh", "c-setpoint", "c-safe"):
            await ack_of(observer, cmd_id)
        await until(lambda: len(states(observer, "pump")) >= 2, 5, "the fresh run's end")

    run_with_node(node, scenario)
    for cmd_id in ("c-stale", "c-stale-reset"):
        stale = ack(observer, cmd_id)
        assert stale is not None and stale["ok"] is False
        assert stale["detail"].startswith("refused: stale, expired 5"), stale
    fresh = ack(observer, "c-fresh")
    assert fresh is not None and (fresh["ok"], fresh["result"]) == (True, "started")
    setpoint = ack(observer, "c-setpoint")
    assert setpoint is not None and setpoint["detail"] == (
        "setpoint is not something a garden node can do")
    safe = ack(observer, "c-safe")
    assert safe is not None and (safe["ok"], safe["detail"]) == (True, "not in safe mode")
    assert states(observer, "pump")[:2] == ["on", "off"]


@pytest.mark.usefixtures("fresh_emulation")
def test_dry_soil_while_the_broker_is_down_is_watered_by_profile_and_reported_after(
    mosquitto: Mosquitto, observer: Observer, tmp_path: Path
) -> None:
    import emu  # type: ignore[import-not-found]

    profile = {"name": "tomatoes", "moisture_low": 30, "moisture_high": 45, "soak_s": 2,
               "max_run_s": 1, "budget_l_per_day": 1, "flow_l_per_min": 6, "takeover_s": 2}
    node = make_node(mosquitto, tmp_path, safety=QUICK_PUMP, autonomy=profile)
    emu.get().set_world(soil_moisture=20.0, pump_flow_pct_per_s=0.0,
                        evaporation_pct_per_s=0.0)

    async def scenario() -> None:
        await until(lambda: len(observer.values("soil_moisture")) >= 2, 10, "node reporting")
        await asyncio.sleep(1.5)  # a control tick or seven: the gateway is in charge
        assert not any(e["state"] == "on" for e in observer.events("pump"))
        mosquitto.stop()
        await until(lambda: node.client is None, 15, "node notices the broker is gone")
        await until(pump_level, 5, "the node waters by itself")
        await until(lambda: not pump_level(), 5, "the local run ends")
        mosquitto.start()
        await asyncio.to_thread(wait_for, observer.client.is_connected, 15, "observer back")
        await until(lambda: observer.events("tomatoes"), 30, "the autonomy report")

    run_with_node(node, scenario)
    on = [e for e in observer.events("pump") if e["state"] == "on"]
    assert on and all(e["detail"].startswith("local tomatoes: pump on for 1 s") for e in on)
    report = observer.events("tomatoes")
    assert report[0]["kind"] == "autonomy" and report[0]["state"] == "ran"
    assert ", 1 s, 0.1 l, moisture 20.0 %" in report[0]["detail"], report[0]
    assert node.role.autonomy is not None and node.role.autonomy.report() == []
    saved = json.loads((tmp_path / "autonomy.json").read_text())
    assert saved["log"] == [] and saved["runs"], saved
