"""Boot safety and deep sleep of a node, on fakes under CPython: the boot event and reset cause,
a boot loop putting the real safety layer into safe mode (refusing, saying why) until a
command clears it, the watchdog fed only while the control loop ticks, and a deep-sleep wake:
measure, report, everything off, sleep; the wake-up says how long it slept."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sensornode import boot, deepsleep
from sensornode.bootguard import BootGuard
from sensornode.safety import Safety, parse_limits

NOON = 1794312000.0
LIMITS = parse_limits({"failsafe_s": 30, "pumps": {"pump": {"max_on_s": 600, "min_off_s": 0}},
                       "diffusers": {}})

Event = tuple[str, str, str, str]


class FakeClock:
    def __init__(self, now: float | None = NOON) -> None:
        self.wall = now

    def now(self) -> float | None:
        return self.wall


class FakeWdt:
    def __init__(self, timeout: int) -> None:
        self.timeout = timeout
        self.feeds = 0

    def feed(self) -> None:
        self.feeds += 1


class FakeBoard:
    def __init__(self, cause: str = "power_on") -> None:
        self.cause = cause
        self.wdt: FakeWdt | None = None
        self.slept: list[tuple[int, dict[str, int]]] = []  # (ms, safety outputs at that moment)
        self.node: FakeNode | None = None

    def reset_cause(self) -> str:
        return self.cause

    def watchdog(self, timeout_ms: int) -> FakeWdt:
        self.wdt = FakeWdt(timeout_ms)
        return self.wdt

    def deepsleep(self, ms: int) -> None:
        assert self.node is not None
        self.slept.append((ms, self.node.safety.outputs()))


class FakeComponent:
    def __init__(self, name: str) -> None:
        self.name = name
        self.updates = 0
        self.state = "setup"


class FakeNode:
    """What BootSafety and DeepSleep use of app.Node, with the real safety layer."""

    def __init__(self, root: Path, board: FakeBoard, clock: FakeClock | None = None) -> None:
        self.events: list[Event] = []
        self.clock = clock or FakeClock()
        self.hardware: dict[str, float] = {}
        self.safety = Safety(LIMITS, str(root / "safety.json"), on_event=self.event,
                             apply=self.hardware.__setitem__, wall=self.clock.now)
        self.safety.comms(True)
        self.on_clear_safe_mode: Any = None
        self.sensors = type("Sensors", (), {})()
        self.sensors.components = [FakeComponent("soil"), FakeComponent("outputs")]
        self.link = type("Link", (), {"is_up": True})()
        self.outbox = type("Outbox", (), {"pending": 0})()
        board.node = self

    def event(self, kind: str, name: str, state: str, detail: str) -> None:
        self.events.append((kind, name, state, detail))

    def named(self, kind: str, name: str) -> list[Event]:
        return [e for e in self.events if e[:2] == (kind, name)]


def boot_node(root: Path, cause: str, clock: FakeClock | None = None,
              **guard: Any) -> tuple[FakeNode, boot.BootSafety]:
    board = FakeBoard(cause)
    node = FakeNode(root, board, clock)
    safety = boot.BootSafety(node, board, str(root) + "/",
                             guard=BootGuard(str(root / "boots.json"), **guard) if guard else None)
    return node, safety


# ---- boot event and safe mode ----------------------------------------------------------------


def test_each_boot_reports_its_reset_cause(tmp_path: Path) -> None:
    node, safety = boot_node(tmp_path, "power_on")
    assert node.named("boot", "reset") == [("boot", "reset", "power_on", "1 unexplained in a row")]
    assert not safety.safe_mode and node.safety.disabled == ""
    assert node.on_clear_safe_mode == safety.clear_safe_mode
    node, _ = boot_node(tmp_path, "deepsleep")
    assert node.named("boot", "reset") == [("boot", "reset", "deepsleep", "deepsleep")]


def test_a_boot_loop_comes_up_in_safe_mode_refusing_and_saying_why(tmp_path: Path) -> None:
    for cause in ("power_on", "watchdog"):
        node, safety = boot_node(tmp_path, cause)
        assert not safety.safe_mode, cause
    node, safety = boot_node(tmp_path, "watchdog")
    assert safety.safe_mode
    reason = "safe mode: 3 unexplained resets in a row (last: watchdog) without 120 s healthy"
    assert node.named("boot", "reset") == [
        ("boot", "reset", "watchdog", "3 unexplained in a row; " + reason)]
    assert node.named("actuator", "safety") == [("actuator", "safety", "disabled", reason)]
    ok, why = node.safety.request("pump", 1, "cmd c1", 30)
    assert (ok, why) == (False, "refused: " + reason)
    assert node.hardware == {"pump": 0}
    # It stays in safe mode across further boots, also healthy-looking ones, until cleared.
    node, safety = boot_node(tmp_path, "deepsleep")
    assert safety.safe_mode and node.safety.disabled == reason


def test_clearing_safe_mode_lets_actuators_run_and_starts_a_new_count(tmp_path: Path) -> None:
    for cause in ("power_on", "watchdog", "watchdog"):
        node, safety = boot_node(tmp_path, cause)
    assert safety.safe_mode
    ok, detail = node.on_clear_safe_mode({"id": "c7", "action": "clear_safe_mode"})
    assert ok and detail.startswith("safe mode cleared (was: 3 unexplained resets"), detail
    assert node.named("actuator", "safety")[-1][:3] == ("actuator", "safety", "enabled")
    assert node.named("actuator", "safety")[-1][3].startswith("cmd c7 (was safe mode: ")
    ok, detail = node.safety.request("pump", 1, "cmd c8", 30)
    assert ok, detail
    assert node.hardware["pump"] == 1
    assert node.on_clear_safe_mode({"id": "c9"}) == (True, "not in safe mode")
    # Saved: the next boots start counting afresh.
    for cause in ("watchdog", "watchdog"):
        node, safety = boot_node(tmp_path, cause)
        assert not safety.safe_mode, cause
    node, safety = boot_node(tmp_path, "watchdog")
    assert safety.safe_mode


def test_a_boot_that_became_healthy_breaks_the_loop(tmp_path: Path) -> None:
    for cause in ("power_on", "watchdog"):
        _, safety = boot_node(tmp_path, cause, healthy_after_s=0.001)
    safety.loop_tick()  # uptime is past 1 ms: this boot is healthy now
    assert safety.guard.healthy
    for cause in ("watchdog", "watchdog"):
        _, safety = boot_node(tmp_path, cause)
        assert not safety.safe_mode, cause


def test_an_unknown_clock_still_counts_a_loop(tmp_path: Path) -> None:
    for cause in ("power_on", "hard", "watchdog"):
        _, safety = boot_node(tmp_path, cause, clock=FakeClock(None))
    assert safety.safe_mode


# ---- the watchdog feeder -----------------------------------------------------------------------


def test_the_watchdog_is_fed_only_while_the_control_loop_ticks(tmp_path: Path) -> None:
    node, safety = boot_node(tmp_path, "power_on")
    board = safety._board
    assert safety.feed_once(0) is False  # not started before task()

    async def first_step() -> None:
        task = asyncio.ensure_future(safety.task())
        await asyncio.sleep(0)
        task.cancel()

    asyncio.run(first_step())
    wdt = board.wdt
    assert wdt is not None and wdt.timeout == boot.WDT_TIMEOUT_MS
    stall_ms = boot.LOOP_STALL_S * 1000
    start = 10_000
    safety.loop_tick(start)
    # A broker outage: the control loop keeps ticking, so feeding goes on for as long as it lasts.
    fed = wdt.feeds
    for t in range(start, start + 60_000, 1000):
        safety.loop_tick(t)
        assert safety.feed_once(t)
    assert wdt.feeds == fed + 60
    # The loop stops: fed until it has been silent stall_s, then never again.
    last = start + 59_000
    assert safety.feed_once(last + stall_ms)
    assert not safety.feed_once(last + stall_ms + 1)
    assert not safety.feed_once(last + stall_ms + 2000)
    assert node.named("fault", "watchdog") == [
        ("fault", "watchdog", "starving",
         f"control loop silent for over {boot.LOOP_STALL_S} s; the watchdog resets the node")]


def test_stop_feeding_lets_the_watchdog_reset_the_node(tmp_path: Path) -> None:
    node, safety = boot_node(tmp_path, "power_on")
    safety.wdt = FakeWdt(8000)
    safety.loop_tick(0)
    safety.dog.stop_feeding("outbox unusable")
    assert not safety.feed_once(100)
    assert node.named("fault", "watchdog")[0][3] == "outbox unusable; the watchdog resets the node"


# ---- deep sleep ----------------------------------------------------------------------------------


def sleeper(tmp_path: Path, cause: str = "power_on", clock: FakeClock | None = None,
            sleep_s: int = 60) -> tuple[FakeNode, FakeBoard, deepsleep.DeepSleep]:
    board = FakeBoard(cause)
    node = FakeNode(tmp_path, board, clock)
    return node, board, deepsleep.DeepSleep(node, board, str(tmp_path) + "/", sleep_s, cause)


def measured(node: FakeNode) -> None:
    for comp in node.sensors.components:
        comp.updates, comp.state = 1, "ok"


def test_a_wake_measures_reports_switches_off_and_sleeps(tmp_path: Path) -> None:
    clock = FakeClock()
    node, board, sleep = sleeper(tmp_path, clock=clock)
    assert node.named("boot", "sleep") == []  # a power-on is no wake-up
    assert node.safety.request("pump", 1, "cmd c1", 300)[0]
    node.outbox.pending = 3

    async def wake() -> None:
        task = asyncio.ensure_future(sleep.task())
        await asyncio.sleep(0.3)
        assert board.slept == []  # the sensors have not all been read yet
        measured(node)
        await asyncio.sleep(0.3)
        assert board.slept == []  # the readings are still on their way
        node.outbox.pending = 0
        await asyncio.wait_for(task, 2)

    asyncio.run(wake())
    assert board.slept == [(60_000, {"pump": 0})]  # off before the sleep, never across it
    assert node.hardware["pump"] == 0
    (off,) = [e for e in node.events if e[:3] == ("actuator", "pump", "off")]
    assert off[3] == "local deep sleep: off"
    (start,) = node.named("boot", "sleep")
    assert start[2] == "start" and start[3].startswith("cycle 1: 60 s; awake ")

    # The next boot is the wake-up: it says how long it really slept.
    clock.wall = NOON + 61.5
    node, board, sleep = sleeper(tmp_path, "deepsleep", clock)
    assert node.named("boot", "sleep") == [
        ("boot", "sleep", "woke", "cycle 1: slept 61.5 s of 60 s")]
    assert sleep.slept_s == pytest.approx(61.5)


def test_a_wake_without_the_link_keeps_the_readings_and_sleeps_anyway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deepsleep, "CONNECT_MAX_MS", 300)
    node, board, sleep = sleeper(tmp_path, clock=FakeClock(None))
    measured(node)
    node.link.is_up = False
    node.outbox.pending = 5  # stay on flash for a later wake
    asyncio.run(asyncio.wait_for(sleep.task(), 2))
    assert board.slept == [(60_000, {"pump": 0})]
    node, board, sleep = sleeper(tmp_path, "deepsleep", FakeClock(None))
    assert node.named("boot", "sleep") == [
        ("boot", "sleep", "woke", "cycle 1: slept ~60 s (clock unknown)")]


def test_never_sleeps_with_an_actuator_it_cannot_switch_off(tmp_path: Path) -> None:
    node, board, sleep = sleeper(tmp_path)
    measured(node)
    node.safety.outputs = lambda: {"pump": 1}  # type: ignore[method-assign]

    async def wake() -> None:
        task = asyncio.ensure_future(sleep.task())
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(wake())
    assert board.slept == []
    assert node.named("fault", "sleep") == [
        ("fault", "sleep", "refused", "an actuator is still on: {'pump': 1}")]


def test_deep_sleep_needs_whole_seconds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"power.deep_sleep_s: must be a whole number"):
        sleeper(tmp_path, sleep_s=0)
