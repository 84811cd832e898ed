"""The emulated board's watchdog bites like the hardware: not fed in time, the board resets
with reset cause WDT_RESET - in-process on the next hardware access, and under the launcher
also when the CPU is stuck where no emulated hardware runs, or the firmware crashed. The world
condition hang_after_s hangs the CPU on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import emu  # type: ignore[import-not-found]  # boards/emulated, on pytest's pythonpath
import machine  # type: ignore[import-not-found]
import pytest

from edge_gateway.emulator import EmulatedNode
from testkit.emulated import FakeClock, emulated_board, fresh_emulation  # noqa: F401 (fixture)
from testkit.procs import wait_for

pytestmark = pytest.mark.usefixtures("fresh_emulation")


def test_a_starved_watchdog_resets_the_board_on_its_next_hardware_access(tmp_path: Path) -> None:
    clock = FakeClock()
    emulated_board("emulated", clock=clock, emu_dir=tmp_path)
    pin = machine.Pin(2, machine.Pin.OUT, value=0)
    wdt = machine.WDT(timeout=1000)
    for _ in range(5):  # fed in time: nothing happens however long it runs
        clock.advance(0.9)
        wdt.feed()
        pin.value(1)
    clock.advance(1.001)
    with pytest.raises(SystemExit):
        pin.value(0)
    assert json.loads((tmp_path / "reset.json").read_text()) == {"cause": emu.WDT_RESET,
                                                                 "sleep_ms": 0}
    # The next boot of this board knows why.
    emulated_board("emulated", clock=clock, emu_dir=tmp_path)
    assert machine.reset_cause() == machine.WDT_RESET
    assert "wdt" not in emu.get().state()  # a reset stops the watchdog


def test_a_late_feed_does_not_save_the_board() -> None:
    clock = FakeClock()
    emulated_board("emulated", clock=clock)
    wdt = machine.WDT(timeout=500)
    clock.advance(0.6)
    with pytest.raises(SystemExit):
        wdt.feed()


def test_a_hang_ends_in_a_watchdog_reset_and_never_without_one(tmp_path: Path) -> None:
    clock = FakeClock()
    emulated_board("emulated", {"hang_after_s": 2}, clock=clock)
    pin = machine.Pin(2, machine.Pin.OUT, value=0)
    clock.advance(2)
    with pytest.raises(RuntimeError, match="no watchdog running"):
        pin.value(1)
    emulated_board("emulated", {"hang_after_s": 2}, clock=clock, emu_dir=tmp_path)
    machine.WDT(timeout=5000)
    pin = machine.Pin(2, machine.Pin.OUT, value=0)
    clock.advance(2)
    with pytest.raises(SystemExit):
        pin.value(1)
    assert json.loads((tmp_path / "reset.json").read_text())["cause"] == emu.WDT_RESET


# ---- under the launcher: the real micropython -------------------------------------------------

SCRIPT = """
import machine, time
cause = machine.reset_cause()
print("boot", cause)
if cause == machine.WDT_RESET:
    print("bitten")
    time.sleep(60)  # stopped by the test
wdt = machine.WDT(timeout=500)
for _ in range(15):  # 1.5 s: three timeouts' worth, fed in time
    time.sleep_ms(100)
    wdt.feed()
print("feeding done")
FAULT
"""


def node_running(tmp_path: Path, fault: str) -> EmulatedNode:
    entry = tmp_path / "fw.py"
    entry.write_text(SCRIPT.replace("FAULT", fault))
    return EmulatedNode(tmp_path / "node", {"node": "wdt-1"}, entry=entry)


@pytest.mark.parametrize("fault", [
    "while True:\n    pass",  # stuck in pure Python: no emulated hardware runs to notice
    "raise RuntimeError('crash')",  # dropped to the REPL with the watchdog running
])
def test_the_launcher_resets_a_board_that_stops_feeding(tmp_path: Path, fault: str) -> None:
    with node_running(tmp_path, fault) as node:
        wait_for(lambda: "bitten" in node.log_text(), timeout=15,
                 what=lambda: f"the watchdog reset; log:\n{node.log_text()}")
        log = node.log_text()
        assert log.count("feeding done") == 1 and node.boots == 2, log
        assert "boot 3" in log  # WDT_RESET
        assert "=== emulator: watchdog reset: " in log
