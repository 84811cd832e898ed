"""The safety layer under the real MicroPython interpreter (from source and from the .mpy files
we ship): the example scenarios of tests/test_safety.py run as one script under micropython and
under CPython, and must give the same trace (every answer, event, output and water count), which
is also checked against the expected values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hil_tests.target import compiled_firmware, run_micropython
from tests.test_safety import CONFIG, NOON

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json
import os
import sys

from sensornode.safety import Safety, SafetyConfigError, parse_limits

with open(sys.argv[1]) as f:
    CONFIG = json.loads(f.read())
NOON = CONFIG.pop("noon")
DAY = 86400
LIMITS = parse_limits(CONFIG)
TRACE = []


def pairs(d):
    return [[k, d[k]] for k in sorted(d)]


class Rig:
    def __init__(self, name, wall=NOON):
        self.path = name + ".json"
        self.mono = 0
        self.wall = wall
        self.boot()
        self.ready()

    def boot(self, mono=0):
        self.mono = mono
        self.s = Safety(LIMITS, self.path, on_event=self.event, apply=self.apply,
                        mono=lambda: self.mono, wall=lambda: self.wall)
        TRACE.append(["boot", pairs(self.s.outputs())])

    def ready(self):
        self.s.comms(True)
        for name in ("water", "tank_switch_1", "armed"):
            self.s.set_input(name, True)

    def event(self, kind, name, state, detail):
        TRACE.append(["event", kind, name, state, detail])

    def apply(self, name, value):
        TRACE.append(["apply", name, value])

    def ask(self, *args, **kwargs):
        ok, reason = self.s.request(*args, **kwargs)
        TRACE.append(["answer", ok, reason])

    def advance(self, ms):
        self.mono += ms
        if self.wall is not None:
            self.wall += ms // 1000
        TRACE.append(["tick", pairs(self.s.tick())])

    def note(self):
        TRACE.append(["state", pairs(self.s.outputs()), pairs(self.s.water_used_ml()),
                      self.s.estop_by, self.s.next_due_ms()])


# max_on, min_off, duty cap, interlocks
r = Rig("limits")
r.ask("diffuser_1", 100, "show sunset", 1000)
r.advance(150000)
r.ask("diffuser_1", 60, "cmd b", 200)
r.advance(149000)
r.note()
r.advance(1000)
r.ask("diffuser_1", 60, "cmd c", 10)
r.advance(10000)
r.s.set_input("tank_switch_1", False)
r.ask("diffuser_1", 30, "cmd d", 60)
r.s.set_input("tank_switch_1", True)
r.ask("diffuser_1", 30, "cmd d", 60)
r.s.set_input("armed", False)
r.ask("pump", 1, "boot", 10)
r.ask("pump", 0.5, "cmd e", 10)
r.ask("pump_9", 1, "cmd e", 10)
r.ask("pump", 1, "cmd f", 10, r.wall - 5)
r.note()

# failsafe and e-stop, across a reboot
r = Rig("failsafe")
r.ask("diffuser_1", 50, "cmd a", 200)
r.ask("pump", 1, "local bed-1", 200)
r.s.comms(False)
r.note()
r.advance(29900)
r.advance(100)
r.ask("diffuser_1", 50, "rule aroma", 60)
r.note()
r.s.estop("cmd e1")
r.ask("pump", 1, "local bed-1", 10)
r.boot(mono=7)
r.ready()
r.note()
TRACE.append(["reset", r.s.reset_estop("cmd r1")])
r.ask("diffuser_1", 10, "cmd d", 10)
r.advance(10000)
r.ask("diffuser_1", 10, "cmd d", 10)

# the daily budget, clock jumps, a reboot mid-run
r = Rig("budget")
r.ask("pump", 1, "cmd a", 200)
r.advance(100000)
r.ask("pump", 0, "cmd b", 0)
r.advance(60000)
r.ask("pump", 1, "cmd c", 600)
r.advance(199980)
r.note()
r.wall = NOON - DAY
r.advance(60000)
r.ask("pump", 1, "cmd d", 10)
r.wall = NOON + 2 * DAY
r.advance(1000)
r.ask("pump", 1, "cmd d", 120)
r.advance(30000)
r.wall += 10
r.boot(mono=5)
r.ready()
r.ask("pump", 1, "cmd e", 10)
r.advance(60000)
r.ask("pump", 1, "cmd e", 300)
r.note()

# a damaged state file; a state file that is never rewritten while nothing changes
with open("damaged.json", "w") as f:
    f.write('{"v": 1, "day": ')
r = Rig("damaged")
r.note()
saves = r.s.saves
for _ in range(200):
    r.mono += 500
    r.s.tick()
TRACE.append(["saves", r.s.saves - saves])

errors = []
for section in ({"failsafe_s": 2}, {"pumps": {"pump": {"max_on": 10}}}, "x"):
    try:
        parse_limits(section)
    except SafetyConfigError as exc:
        errors.append(str(exc))
TRACE.append(["limits", errors])
print("RESULT " + json.dumps(TRACE))
if sys.implementation.name == "micropython":
    import gc

    import micropython

    gc.collect()
    print("HEAP after %d alloc %d peak" % (gc.mem_alloc(), micropython.mem_peak()))
"""


def run_cpython(script: Path, given: Path, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(script), str(given)],
        capture_output=True, text=True, cwd=cwd, timeout=60, check=False,
        env={"PYTHONPATH": str(REPO / "firmware")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def trace_of(output: str) -> list[Any]:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, output
    trace: list[Any] = json.loads(lines[0].removeprefix("RESULT "))
    return trace


def scenario(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    cwd = tmp_path / name
    cwd.mkdir()
    script = tmp_path / "scenario.py"
    script.write_text(SCRIPT)
    given = tmp_path / "config.json"
    given.write_text(json.dumps({**CONFIG, "noon": NOON}))
    return script, given, cwd


@pytest.fixture(scope="module")
def cpython_trace(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    script, given, cwd = scenario(tmp_path_factory.mktemp("safety"), "cpython")
    return trace_of(run_cpython(script, given, cwd))


def answers(trace: list[Any]) -> list[str]:
    return [entry[2] for entry in trace if entry[0] == "answer"]


def test_the_scenarios_give_what_the_examples_expect(cpython_trace: list[Any]) -> None:
    assert answers(cpython_trace) == [
        "diffuser_1 at 80 % for 300 s, duty capped by max_duty_pct=80, capped by max_on_s=300",
        "diffuser_1 at 60 % for 150 s, capped by max_on_s=300",
        "refused: min_off_s=10, off only 0 s ago",
        "refused: tank empty (tank_switch_1)",
        "diffuser_1 at 30 % for 60 s",
        "refused: boot never switches anything on",
        "refused: value 0.5; pump takes 0 or 1",
        "refused: no actuator 'pump_9'; this node has diffuser_1, pump",
        f"refused: stale, expired 5 s ago (expires_at={NOON + 305})",
        "diffuser_1 at 50 % for 200 s",
        "pump on for 200 s",
        "refused: failsafe_s=30, gateway unreachable for 30 s; only local requests run",
        "refused: e-stop latched (cmd e1); reset it first",
        "refused: min_off_s=10, off only 0 s ago",
        "diffuser_1 at 10 % for 10 s",
        "pump on for 200 s",
        "pump off",
        "pump on for 199 s, capped by daily_budget_l=10",
        "refused: daily_budget_l=10 used up (10000 ml today)",
        "pump on for 120 s",
        "refused: min_off_s=60, off only 0 s ago",
        "pump on for 180 s, capped by daily_budget_l=10",
    ]
    events = [entry[1:] for entry in cpython_trace if entry[0] == "event"]
    assert ["actuator", "diffuser_1", "stopped", "stopped: max_on_s=300 reached"] in events
    assert ["actuator", "diffuser_1", "stopped", "stopped: payload disarmed (armed)"] in events
    assert ["actuator", "diffuser_1", "stopped",
            "stopped: failsafe_s=30, gateway unreachable for 30 s"] in events
    assert ["actuator", "pump", "stopped", "stopped: e-stop (cmd e1)"] in events
    assert ["actuator", "pump", "stopped",
            "stopped: interrupted by a reboot, not resumed (120 s allowed)"] in events
    assert ["fault", "safety", "damaged"] in [e[:3] for e in events]
    boots = [entry[1] for entry in cpython_trace if entry[0] == "boot"]
    assert boots == [[["diffuser_1", 0], ["pump", 0]]] * 6  # 4 first boots, 2 reboots
    assert ["reset", [True, "e-stop reset (latched by cmd e1)"]] in cpython_trace
    assert ["saves", 0] in cpython_trace
    limits = cpython_trace[-1]
    assert limits[0] == "limits" and len(limits[1]) == 3
    assert "safety.failsafe_s: must be a whole number from 5 to 86400, got 2" in limits[1][0]


@pytest.mark.parametrize("build", ["source", "mpy"])
def test_micropython_agrees_with_cpython(
    build: str, tmp_path: Path, cpython_trace: list[Any]
) -> None:
    firmware = compiled_firmware() if build == "mpy" else REPO / "firmware"
    script, given, cwd = scenario(tmp_path, build)
    output = run_micropython(script, str(given), path=[firmware], cwd=cwd)
    print(output.splitlines()[-1])
    trace = trace_of(output)
    assert len(trace) == len(cpython_trace)
    for got, expected in zip(trace, cpython_trace, strict=True):
        assert got == expected
