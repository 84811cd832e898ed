"""Watchdog, boot loop, safe mode and deep sleep end to end: the firmware under the real
micropython on the emulated board, a real mosquitto, the real gateway daemon storing what the
node reports, commands signed as the gateway signs them.

The boot loop is a firmware hang a few seconds after every boot (world condition
hang_after_s: the CPU stops, as when a driver never returns), which is what a watchdog is
for: the emulated hardware watchdog resets the board each time, and the third unexplained
reset in a row, none of them healthy, brings the node up in safe mode.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

from edge_gateway.commands import send_command
from edge_gateway.emulator import EmulatedNode
from edge_gateway.gaps import LOST, GapTracker, list_gaps
from edge_gateway.signing import KeyRing, Signer
from edge_gateway.store import Store
from hil_tests.conftest import SITE
from testkit.mosquitto import Mosquitto
from testkit.procs import wait_for

NODE = "bed-1"
QUIET = {"evaporation_pct_per_s": 0.0, "adc_noise_raw": 20, "soil_moisture": 40.0}
HANG_AFTER_S = 4
# The scenario's outage: this sleep IS the outage, not a wait for a result.
BROKER_OUTAGE_S = 15
DEEP_SLEEP_S = 3


def node_config(broker: Mosquitto, keys: KeyRing, **extra: Any) -> dict[str, Any]:
    return {
        "site": SITE,
        "node": NODE,
        "broker": {"host": broker.host, "port": broker.port, "keepalive_s": 5},
        "report_interval_s": 1,
        "irrigation": {"max_run_s": 60},
        "cmd_key": keys.key(NODE).hex(),
        **extra,
    }


def command(broker: Mosquitto, db: Path, keys: KeyRing, action: str,
            params: dict[str, Any], timeout_s: float = 10) -> dict[str, Any]:
    with Store(db) as store:
        return send_command(broker.host, broker.port, SITE, NODE, action, params, timeout_s,
                            signer=Signer(store, keys), requested_by="alice")


def events(db: Path, kind: str, name: str) -> list[tuple[str, str]]:
    with Store(db) as store:
        return [(e.state, e.detail) for e in store.events(node=NODE)
                if (e.kind, e.name) == (kind, name)]


def boot_log(node: EmulatedNode) -> dict[str, Any]:
    try:
        data = json.loads((node.flash_dir / "boots.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def readings_since(db: Path, since: float) -> int:
    with Store(db) as store:
        return len([r for r in store.readings(node=NODE, quantity="soil_moisture")
                    if r.ts > since])


def test_a_node_in_a_boot_loop_comes_up_in_safe_mode_until_cleared(
    mosquitto: Mosquitto, gateway: Path, tmp_path: Path
) -> None:
    keys = KeyRing(tmp_path / "keys")
    keys.create(NODE)
    node = EmulatedNode(tmp_path / NODE, node_config(mosquitto, keys),
                        world={**QUIET, "hang_after_s": HANG_AFTER_S})
    node.start()
    try:
        # Power-on, hang, watchdog reset, hang, watchdog reset: the third boot is in safe mode.
        wait_for(lambda: boot_log(node).get("safe_mode") is True, timeout=60,
                 what=lambda: f"safe mode on flash; log:\n{node.log_tail()}")
        node.set_world(hang_after_s=0)  # whatever hung is gone; the node stays in safe mode
        state = node.wait_state(lambda s: s["control_rev"] >= 1 and s["boot"] == 3, timeout=10,
                                what="the fix applied on the third boot")
        assert state["reset_cause"] == "watchdog"
        assert node.boots == 3 and node.log_text().count("emulator: CPU hung") == 2

        # It says why: every boot with its reset cause, and the safety layer's safe mode.
        reason = "3 unexplained resets in a row (last: watchdog) without 120 s healthy"
        wait_for(lambda: len(events(gateway, "boot", "reset")) == 3, timeout=20,
                 what=lambda: f"three boot events, got {events(gateway, 'boot', 'reset')}")
        boots = events(gateway, "boot", "reset")
        assert [b[0] for b in boots] == ["power_on", "watchdog", "watchdog"], boots
        assert boots[2][1] == "3 unexplained in a row; safe mode: " + reason
        wait_for(lambda: ("disabled", "safe mode: " + reason)
                 in events(gateway, "actuator", "safety"), timeout=10, what="safety disabled")

        # Actuators refuse, with the reason; the node still reports.
        refused = command(mosquitto, gateway, keys, "irrigate", {"seconds": 5})
        assert (refused["ok"], refused["detail"]) == (False, "refused: safe mode: " + reason)
        assert node.state()["pump"] is False
        since = time.time()
        wait_for(lambda: readings_since(gateway, since) >= 3, timeout=15,
                 what="readings while in safe mode")

        # Cleared by the gateway: it waters again, and the flash no longer holds safe mode.
        cleared = command(mosquitto, gateway, keys, "clear_safe_mode", {})
        assert cleared["ok"] and cleared["detail"] == f"safe mode cleared (was: {reason})"
        assert boot_log(node)["safe_mode"] is False
        started = command(mosquitto, gateway, keys, "irrigate", {"seconds": 2})
        assert (started["ok"], started["result"]) == (True, "started"), started
        node.wait_state(lambda s: s["pump"] is True, timeout=5, what="pump on after clearing")
        node.wait_state(lambda s: s["pump"] is False, timeout=8, what="pump off after 2 s")
        assert node.boots == 3
    finally:
        node.kill()


def test_a_broker_outage_does_not_starve_the_watchdog(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    keys = KeyRing(tmp_path / "keys")
    keys.create(NODE)
    node = EmulatedNode(tmp_path / NODE, node_config(mosquitto, keys), world=QUIET)
    wdt_file = node.emu_dir / "wdt.json"

    def feeds() -> int:
        try:
            return int(json.loads(wdt_file.read_text())["feeds"])
        except (OSError, ValueError, KeyError):
            return -1

    node.start()
    try:
        wait_for(lambda: "online as" in node.log_text(), timeout=20,
                 what=lambda: f"node online; log:\n{node.log_tail()}")
        wait_for(lambda: feeds() >= 1, timeout=5, what="the watchdog fed")
        before = feeds()
        mosquitto.stop()
        time.sleep(BROKER_OUTAGE_S)
        during = feeds() - before
        mosquitto.start()
        wait_for(lambda: node.log_text().count("online as") >= 2, timeout=40,
                 what=lambda: f"node back online; log:\n{node.log_tail()}")
        state = node.state()
        # Fed about once a second all through the outage, and never reset.
        print(f"watchdog feeds during a {BROKER_OUTAGE_S} s broker outage: {during}")
        assert during >= BROKER_OUTAGE_S - 3, during
        assert node.boots == 1 and state["boot"] == 1 and state["reset_cause"] == "power_on"
        assert "watchdog" not in node.log_text()
    finally:
        node.stop()


def test_a_deep_sleep_garden_node_sleeps_between_cycles_and_never_with_the_pump_on(
    mosquitto: Mosquitto, gateway: Path, tmp_path: Path
) -> None:
    keys = KeyRing(tmp_path / "keys")
    keys.create(NODE)
    config = node_config(mosquitto, keys, power={"deep_sleep_s": DEEP_SLEEP_S})
    node = EmulatedNode(tmp_path / NODE, config, world=QUIET)
    node.start()
    try:
        node.wait_state(lambda s: s["boot"] >= 2, timeout=40,
                        what=lambda: f"the first wake-up; log:\n{node.log_tail()}")
        # A long irrigate: queued by the broker while the node sleeps, run when it wakes, and
        # cut when it goes back to sleep.
        started = command(mosquitto, gateway, keys, "irrigate", {"seconds": 60},
                          timeout_s=DEEP_SLEEP_S + 20)
        assert (started["ok"], started["result"]) == (True, "started"), started
        wait_for(lambda: node.boots >= 5, timeout=60,
                 what=lambda: f"four wake-ups; log:\n{node.log_tail()}")
        node.wait_state(lambda s: s["boot"] >= 5, timeout=20, what="boot 5 running")
        wait_for(lambda: len(events(gateway, "boot", "sleep")) >= 6, timeout=30,
                 what=lambda: f"sleep events; got {events(gateway, 'boot', 'sleep')}")
    finally:
        node.kill()

    # The pump ran, and was off at the end of every boot: never on across a sleep.
    relay = node.wiring["pump_relay"]
    history = node.pin_history(relay)
    assert any(e["level"] == 0 and e["mode"] == "out" for e in history), "the pump never ran"
    for boot in range(1, 5):
        last = [e for e in history if e["boot"] == boot][-1]
        assert last["mode"] != "out" or last["level"] == 1, (boot, last)  # active-low: 1 = off
    pump = events(gateway, "actuator", "pump")
    assert ("off", "local deep sleep: off") in pump, pump

    # Wake-ups and time slept reported; every reading reached the gateway with its time.
    sleeps = events(gateway, "boot", "sleep")
    woke = [d for s, d in sleeps if s == "woke"]
    assert len(woke) >= 3, sleeps
    for detail in woke:
        slept = float(detail.split("slept ")[1].split(" s")[0])
        assert DEEP_SLEEP_S <= slept < DEEP_SLEEP_S + 5, detail
    resets = [s for s, _ in events(gateway, "boot", "reset")]
    assert resets[0] == "power_on" and set(resets[1:]) == {"deepsleep"}, resets
    assert len(resets) >= len(woke) + 1, resets
    with Store(gateway) as store:
        tracker = GapTracker(store, settle_s=0)
        tracker.load()
        tracker.check()
        assert [g for g in list_gaps(store, NODE) if g.cause == LOST] == []
        times = sorted(r.ts for r in store.readings(node=NODE, quantity="soil_moisture"))
    # Taken in each wake, not when delivered: the readings cluster around the wake-ups, a
    # sleep apart.
    asleep = [b - a for a, b in itertools.pairwise(times) if b - a >= DEEP_SLEEP_S]
    print(f"soil readings {len(times)}, gaps of a sleep or more between them: "
          f"{[round(g, 1) for g in asleep]}")
    assert len(asleep) >= 3, times
