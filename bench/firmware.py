"""Garden-node firmware figures: .mpy size of what it loads, heap and allocation per cycle
while reporting, while offline and while draining the flash outbox after an outage.

The firmware is compiled with edge_gateway.firmware_build (as `make firmware-check` does)
into a scratch directory. The node then runs on the emulated board under the real micropython
unix port (-X heapsize=HEAPSIZE) with that directory - not firmware/ - on MICROPYPATH, so
every firmware module is loaded from .mpy. bench/mp_garden.py (compiled too) runs
firmware/main.py's code path with measuring hooks; see its header for what it measures and
when. It prints "NT_BENCH_PHASE outage" / "restore" when it wants the broker stopped /
started again: run_garden follows the node's log and does that to the broker it was given
(private to the run).

Baselines from the same run: the live heap of the interpreter + harness + emulated board
before any firmware module is imported, and the bytes allocated inside the emulated
hardware's Python code (C on an MCU); the garden figures are net of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import BenchError
from edge_gateway import firmware_build
from edge_gateway.emulator import EMULATED_DIR, EmulatedNode
from testkit.mosquitto import Mosquitto

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
HARNESS_SOURCE = Path(__file__).resolve().parent / "mp_garden.py"
HARNESS_MODULE = "nt_bench_garden"
RESULT_TAG = "NT_BENCH_RESULT"
PHASE_TAG = "NT_BENCH_PHASE"
# The harness's own bounds (bench/mp_garden.py), for the host's overall one.
LINK_DOWN_TIMEOUT_S = 10
RECONNECT_TIMEOUT_S = 45
DRAIN_TIMEOUT_S = 30
COMPILE_TIMEOUT_S = 120.0
# One fixed heap for every garden figure, the emulated nodes' default (EmulatedNode). The GC
# stays off while measuring, but the harness collects every few ms (and whenever free heap
# runs low), so a window's garbage never has to fit in the heap at once.
HEAPSIZE = "512K"


def source_fingerprint(*roots: Path) -> str:
    """sha256 (12 hex) over the .py and .json files under roots: tells whether two runs
    measured the same code (other people edit the tree while benchmarks run)."""
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".json")):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _run(cmd: list[str], what: str) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S,
                                check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what}: timed out after {COMPILE_TIMEOUT_S:g} s") from exc
    if result.returncode != 0:
        raise BenchError(f"{what} failed ({result.returncode}): {result.stderr}{result.stdout}")
    return result.stdout


def compile_firmware(out_dir: Path) -> str:
    """firmware/**/*.py -> out_dir/**/*.mpy, as `make firmware-check` builds it; a summary."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    try:
        built = firmware_build.compile_tree(firmware_build.FIRMWARE_DIR, out_dir)
    except firmware_build.BuildError as exc:
        raise BenchError(str(exc)) from exc
    return f"mpy-cross: {len(built)} files, {sum(p.stat().st_size for p in built)} bytes"


def compile_harness(out_dir: Path) -> None:
    target = out_dir / f"{HARNESS_MODULE}.mpy"
    _run([firmware_build.mpy_cross(), "-o", str(target), "-s", f"{HARNESS_MODULE}.py",
          str(HARNESS_SOURCE)], "mpy-cross bench/mp_garden.py")


def module_mpy(mpy_dir: Path, module: str) -> Path:
    """The .mpy file a loaded module came from (a package is its __init__)."""
    parts = module.split(".")
    package_init = mpy_dir.joinpath(*parts, "__init__.mpy")
    return package_init if package_init.exists() else mpy_dir.joinpath(*parts[:-1],
                                                                       parts[-1] + ".mpy")


@dataclass(frozen=True)
class MpySize:
    total_bytes: int
    files: dict[str, int]  # path relative to the .mpy tree -> bytes
    basis: str


def mpy_size(mpy_dir: Path, modules: list[str] | None) -> MpySize:
    """Bytes of the .mpy files behind `modules` (all firmware .mpy files when None)."""
    if modules is None:
        paths = [p for p in mpy_dir.rglob("*.mpy") if not p.name.startswith(HARNESS_MODULE)]
        basis = "every compiled firmware file (the heap run did not report what loaded)"
    else:
        paths = [module_mpy(mpy_dir, m) for m in modules]
        basis = "the firmware modules a garden node had loaded after its report cycles"
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise BenchError(f"loaded modules without a compiled file: {missing}")
    files = {str(p.relative_to(mpy_dir)): p.stat().st_size for p in sorted(paths)}
    return MpySize(sum(files.values()), files, basis)


class MpyNode(EmulatedNode):
    """An EmulatedNode whose MICROPYPATH has the compiled tree instead of firmware/."""

    def __init__(self, workdir: Path, node_config: dict[str, object], mpy_dir: Path,
                 entry: Path, heapsize: str) -> None:
        super().__init__(workdir, node_config, entry=entry, heapsize=heapsize)
        self.mpy_dir = mpy_dir

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["MICROPYPATH"] = f"{EMULATED_DIR}:{self.mpy_dir}:.frozen"
        return env



TICKS_PERIOD = 1 << 30  # MicroPython's ticks_ms / ticks_us wrap at 2**30 on every port


def ticks_diff(end: int, start: int) -> int:
    half = TICKS_PERIOD // 2
    return ((end - start + half) % TICKS_PERIOD) - half


@dataclass(frozen=True)
class Snapshot:
    """The harness's counters at one moment (bench/mp_garden.py, SNAP_FIELDS)."""

    name: str
    t_ms: int
    t_us: int
    alloc: int  # bytes allocated since the meter started (GC off, banked)
    hw: int  # ... of them inside the emulated hardware's calls (wrapper overhead included)
    hw_calls: int
    sent: int  # node.sender.sent: records PUBACKed and retired from the outbox
    appended: int  # node.outbox.appended
    pending: int  # node.outbox.pending
    publishes: int  # PUBLISH packets the MQTT client sent (acked ones, for QoS 1)
    connects: int  # node.link.connects
    live: int  # live heap after gc.collect(), whole process
    live_max: int  # the highest live heap sampled since the previous snapshot
    samples: int
    collect_us: int  # time the harness spent in gc.collect() since the meter started

    @property
    def fw(self) -> int:
        """Bytes the firmware allocated (the emulated hardware's share taken out)."""
        return self.alloc - self.hw


@dataclass(frozen=True)
class Span:
    """What happened between two snapshots."""

    first: Snapshot
    last: Snapshot
    live_max: int  # highest live heap sampled in (first, last], and at first

    @property
    def ms(self) -> int:
        return ticks_diff(self.last.t_ms, self.first.t_ms)

    @property
    def seconds(self) -> float:
        return ticks_diff(self.last.t_us, self.first.t_us) / 1e6

    def delta(self, field: str) -> int:
        return int(getattr(self.last, field)) - int(getattr(self.first, field))


@dataclass(frozen=True)
class GardenResult:
    raw: dict[str, Any]  # what bench/mp_garden.py reported, and the host's phase log
    heapsize: str  # micropython -X heapsize
    interval_s: float
    baseline_bytes: int  # live heap: interpreter + harness + emulated board
    app_started_bytes: int  # ... + main's imports and the node built
    window_start_bytes: int
    report: Span  # `cycles` whole report intervals online
    report_cycle_fw: list[int]  # firmware bytes allocated in each of them
    outage: Span  # whole intervals offline, the outbox filling
    offline: Span  # link down -> link up again
    drain: Span  # link up -> outbox empty (timed: no collection in between)
    drain_window: Span  # link up -> whole intervals later (the drain and the cycles around it)
    peak_drain: Span  # the second drain: link up -> outbox empty, live heap at every turn
    peak_offline: Span  # the second outage: link down -> link up again

    @property
    def cycles(self) -> int:
        return len(self.report_cycle_fw)

    def cycles_in(self, span: Span) -> int:
        return round(span.ms / (self.interval_s * 1000))


def _parse_result(log: str) -> dict[str, Any] | None:
    for line in reversed(log.splitlines()):
        if line.startswith(RESULT_TAG + " "):
            parsed = json.loads(line[len(RESULT_TAG) + 1:])
            return parsed if isinstance(parsed, dict) else None
    return None


def _snapshots(raw: dict[str, Any]) -> list[Snapshot]:
    fields = [str(f) for f in raw["snapshot_fields"]]
    if fields != [f.name for f in dataclasses.fields(Snapshot)]:
        raise BenchError(f"harness snapshot fields {fields} do not match bench/firmware.py")
    return [Snapshot(*values) for values in raw["snapshots"]]


def _span(snaps: list[Snapshot], first: int, last: int) -> Span:
    return Span(snaps[first], snaps[last],
                max([snaps[first].live] + [s.live_max for s in snaps[first + 1:last + 1]]))


def _garden_result(raw: dict[str, Any], heapsize: str, interval_s: float,
                   phase_log: list[tuple[str, float]]) -> GardenResult:
    snaps = _snapshots(raw)
    names = [s.name for s in snaps]

    def index(name: str, last: bool = False) -> int:
        if name not in names:
            raise BenchError(f"harness reported no '{name}' snapshot: {names}")
        return len(names) - 1 - names[::-1].index(name) if last else names.index(name)

    checkpoints = {str(name): int(live) for name, live in raw["checkpoints"]}
    report_first, report_last = index("report 0"), index("report", last=True)
    cycle_fw = [snaps[i + 1].fw - snaps[i].fw for i in range(report_first, report_last)]
    if not cycle_fw:
        raise BenchError(f"garden run measured no report cycle: {names}")
    link_up = index("link up")
    raw["phase_log"] = phase_log
    return GardenResult(
        raw=raw,
        heapsize=heapsize,
        interval_s=interval_s,
        baseline_bytes=checkpoints["emulated_board"],
        app_started_bytes=checkpoints["app started"],
        window_start_bytes=checkpoints["window start"],
        report=_span(snaps, report_first, report_last),
        report_cycle_fw=cycle_fw,
        outage=_span(snaps, index("outage 0"), index("outage", last=True)),
        offline=_span(snaps, index("link down"), link_up),
        drain=_span(snaps, link_up, index("drained")),
        drain_window=_span(snaps, link_up, index("drain window end")),
        peak_drain=_span(snaps, index("peak: link up"), index("peak: drained")),
        peak_offline=_span(snaps, index("peak: link down"), index("peak: link up")),
    )


class _LogFollower:
    """Complete lines the node printed since the last call."""

    def __init__(self, node: EmulatedNode) -> None:
        self.node = node
        self.seen = 0

    def new_lines(self) -> list[str]:
        text = self.node.log_text()
        complete = text[:text.rfind("\n") + 1]
        lines = complete[self.seen:].splitlines()
        self.seen = len(complete)
        return lines


def run_garden(workdir: Path, mpy_dir: Path, broker: Mosquitto, cycles: int,
               outage_cycles: int, warmup: int, timeout_s: float) -> GardenResult:
    """Run the garden node from .mpy under HEAPSIZE: `cycles` report intervals online, then
    `broker` is stopped for `outage_cycles` intervals and started again, and the node drains
    its outbox. `broker` is the caller's, private to this run (it is stopped and started)."""
    interval_s = 1  # the shortest report interval the config accepts
    entry_dir = workdir / "entry"
    entry_dir.mkdir(parents=True, exist_ok=True)
    entry = entry_dir / "bench_entry.py"
    # Tiny on purpose: the entry is compiled from source at start; everything else is .mpy.
    entry.write_text(f"import {HARNESS_MODULE}\n"
                     f"{HARNESS_MODULE}.run({cycles}, {warmup}, {int(timeout_s)}, {interval_s}, "
                     f"{outage_cycles})\n")
    node_config: dict[str, object] = {
        "site": "benchheap",
        "node": "garden-1",
        "role": "garden",
        "broker": {"host": broker.host, "port": broker.port},
        "report_interval_s": interval_s,
    }
    node = MpyNode(workdir / "node", node_config, mpy_dir, entry, HEAPSIZE)
    # Every wait in the harness is bounded; this bounds them all together.
    budget_s = (timeout_s + (warmup + cycles + outage_cycles + 4) * interval_s
                + LINK_DOWN_TIMEOUT_S + RECONNECT_TIMEOUT_S + DRAIN_TIMEOUT_S + 15)
    phase_log: list[tuple[str, float]] = []
    follower = _LogFollower(node)
    started = time.monotonic()
    node.start()
    finished = False
    try:
        deadline = started + budget_s
        # Until the harness prints its result: with the watchdog running, a firmware that
        # ends is reset by the emulated board (as on an MCU), so its exit is not the end.
        while not finished and node.powered and time.monotonic() < deadline:
            for line in follower.new_lines():
                if line.startswith(RESULT_TAG):
                    finished = True
                    break
                if not line.startswith(PHASE_TAG + " "):
                    continue
                phase = line[len(PHASE_TAG) + 1:].strip()
                phase_log.append((phase, round(time.monotonic() - started, 3)))
                if phase == "outage":
                    broker.stop()
                elif phase == "restore":
                    try:
                        broker.start()
                    except AssertionError as exc:  # testkit's wait_for: not accepting in time
                        raise BenchError(f"mosquitto did not come back: {exc}") from exc
                phase_log.append((f"broker {'stopped' if phase == 'outage' else 'started'}",
                                  round(time.monotonic() - started, 3)))
            time.sleep(0.02)
        timed_out = not finished and node.powered
    finally:
        node.stop()
    log = node.log_text()
    raw = _parse_result(log)
    if timed_out or raw is None or not raw.get("ok"):
        why = f"timed out after {budget_s:g} s" if timed_out else f"exit code {node.exit_code}"
        detail = f"{raw.get('error')} (phase {raw.get('phase')})" if raw else "no result line"
        raise BenchError(f"garden run failed ({why}: {detail}); node log:\n{node.log_tail(40)}")
    return _garden_result(raw, node.heapsize, interval_s, phase_log)
