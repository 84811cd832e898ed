"""Boot safety (firmware/sensornode/bootguard.py): reset causes recorded in a real file across
"reboots" (a new BootGuard on the same path), a boot loop leading to safe mode that survives
reboots until cleared, the causes that do not count, and the watchdog feeding policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sensornode.bootguard import BootGuard, LoopWatchdog

T0 = 1_800_000_000.0  # a set wall clock


def reboot(path: Path, cause: str, at: float,
           **kwargs: float) -> tuple[BootGuard, dict[str, object]]:
    guard = BootGuard(str(path), **kwargs)  # type: ignore[arg-type]
    return guard, guard.boot(cause, at)


def test_three_quick_unexplained_resets_enter_safe_mode_until_cleared(tmp_path: Path) -> None:
    path = tmp_path / "boots.json"
    guard, event = reboot(path, "power_on", 0)  # no clock yet
    assert event == {"reset_cause": "power_on", "boot": 1, "unexplained": 1, "explained": "",
                     "safe_mode": False, "safe_reason": ""}
    guard, event = reboot(path, "watchdog", 0)
    assert event["unexplained"] == 2 and not guard.safe_mode
    guard, event = reboot(path, "hard", 0)
    assert guard.safe_mode and event["safe_mode"] is True
    assert event["safe_reason"] == ("3 unexplained resets in a row (last: hard) without 120 s "
                                    "healthy")
    # Still in safe mode after a calm, healthy boot: only clear() ends it.
    guard, event = reboot(path, "power_on", T0)
    assert guard.mark_healthy(500)
    assert event["safe_mode"] is True
    guard.clear()
    guard, event = reboot(path, "watchdog", T0 + 600)
    assert not guard.safe_mode and event["unexplained"] == 1


def test_a_healthy_boot_breaks_the_streak(tmp_path: Path) -> None:
    path = tmp_path / "boots.json"
    for cause in ("watchdog", "watchdog"):
        reboot(path, cause, 0)
    guard, _ = reboot(path, "watchdog", 0, max_unexplained=4)
    assert not guard.mark_healthy(119.9)
    assert guard.mark_healthy(120)
    assert json.loads(path.read_text())["boots"][-1]["healthy"] is True
    guard, event = reboot(path, "watchdog", 0)
    assert event["unexplained"] == 1 and not guard.safe_mode


@pytest.mark.parametrize(("cause", "at", "setup", "explained"), [
    ("deepsleep", 0, None, "deepsleep"),
    ("hard", 0, "update", "deliberate: update"),
    ("power_on", T0 + 3610, None, "power_on after 3600 s"),
])
def test_explained_boots_do_not_count(tmp_path: Path, cause: str, at: float,
                                      setup: str | None, explained: str) -> None:
    path = tmp_path / "boots.json"
    reboot(path, "watchdog", T0)
    guard, _ = reboot(path, "watchdog", T0 + 10)
    if setup:
        guard.before_deliberate_reset(setup)
    guard, event = reboot(path, cause, at)
    assert event["explained"] == explained
    assert event["unexplained"] == 0 and not guard.safe_mode
    # A deliberate reset explains one boot only.
    guard, event = reboot(path, "hard", at + 5)
    assert event["unexplained"] == 1


def test_resets_further_apart_than_the_window_are_not_a_loop(tmp_path: Path) -> None:
    path = tmp_path / "boots.json"
    for i in range(5):
        guard, event = reboot(path, "watchdog", T0 + i * 700, window_s=600)
        assert event["unexplained"] == 1 and not guard.safe_mode
    for i in range(3):
        guard, event = reboot(path, "watchdog", T0 + 5000 + i * 100, window_s=600)
    assert guard.safe_mode


def test_a_damaged_file_starts_afresh_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "boots.json"
    path.write_text('{"boots": [')
    _, event = reboot(path, "watchdog", 0)
    assert event["error"] == "boot log unreadable" and event["unexplained"] == 1
    assert json.loads(path.read_text())["boots"][0]["cause"] == "watchdog"
    assert not (tmp_path / "boots.json.tmp").exists()


def test_the_file_keeps_only_the_last_boots(tmp_path: Path) -> None:
    path = tmp_path / "boots.json"
    for i in range(40):
        guard, _ = reboot(path, "deepsleep", T0 + i * 1000)
    assert len(json.loads(path.read_text())["boots"]) == 16
    assert not guard.safe_mode


def test_bad_settings_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"bootguard\.max_unexplained"):
        BootGuard(str(tmp_path / "b"), max_unexplained=1)
    with pytest.raises(ValueError, match=r"bootguard\.window_s"):
        BootGuard(str(tmp_path / "b"), window_s=0)
    with pytest.raises(ValueError, match=r"watchdog\.stall_s"):
        LoopWatchdog(stall_s=-1)


def test_the_watchdog_is_fed_while_the_loop_ticks_whatever_the_broker_does() -> None:
    dog = LoopWatchdog(stall_s=30, now_ms=0)
    fed = []
    broker_up = False  # a broker outage the whole time: the loop keeps ticking
    for second in range(120):
        now = second * 1000
        if second < 60 or broker_up:
            dog.tick(now)  # the main loop ran an iteration (it reconnects, buffers, reads)
        fed.append(dog.should_feed(now))
    assert all(fed[:90]) and not any(fed[91:])  # loop stopped at 59 s: fed until 89 s
    dog.tick(130000)
    assert dog.should_feed(131000)
    dog.stop_feeding("flash unusable")
    assert not dog.should_feed(131000)


def test_the_watchdog_handles_ticks_wrapping() -> None:
    period = 1 << 30
    dog = LoopWatchdog(stall_s=5, now_ms=period - 1000)
    assert dog.should_feed(3000)  # 4 s later, after the wrap
    assert not dog.should_feed(5000)
