"""`make bench`: every figure on its own line as `BENCH <name> <value> <unit>`, taken against a
baseline measured in the same run, and collected in build/bench.json.

    .venv/bin/python bench/run.py [--messages N] [--rounds R] [--cycles K]

No figure is asserted against a threshold: compare runs (build/bench.json), not absolutes.
Everything runs on loopback against a private mosquitto on a free port; every process started
here is stopped by PID, every wait is bounded, and the whole run has a hard time limit.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python bench/run.py` puts bench/, not the repo, first

from bench import firmware, ingest  # noqa: E402
from bench.report import BenchError, Figure, Report  # noqa: E402
from edge_gateway.emulator import find_micropython  # noqa: E402
from testkit.mosquitto import Mosquitto  # noqa: E402

OUTPUT = REPO / "build" / "bench.json"
HARD_LIMIT_S = 170
KIB = 1024.0
WORD_NOTE = ("the micropython unix port is 64-bit: object headers and pointers are twice an "
             "ESP32's/RP2040's, so heap and allocation figures overstate a 32-bit MCU")


class HardLimit(Exception):
    """The whole run took longer than HARD_LIMIT_S."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise HardLimit(f"bench run exceeded its {HARD_LIMIT_S} s limit")


def note(text: str) -> None:
    print(f"NOTE {text}", flush=True)


def environment() -> dict[str, object]:
    env: dict[str, object] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "firmware_sha": firmware.source_fingerprint(REPO / "firmware"),
        "gateway_sha": firmware.source_fingerprint(REPO / "edge_gateway"),
        "boards_sha": firmware.source_fingerprint(REPO / "boards"),
        "bench_sha": firmware.source_fingerprint(REPO / "bench"),
    }
    try:
        micropython = find_micropython()
        out = subprocess.run(
            [micropython, "-c", "import sys; i = sys.implementation; "
                          "print('.'.join(str(v) for v in i.version[:3]), i._build, i._mpy)"],
            capture_output=True, text=True, timeout=10, check=False)
        env["micropython"] = out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired, RuntimeError) as exc:
        env["micropython"] = f"unknown ({exc})"
    return env


def bench_ingest(report: Report, broker: Mosquitto, workdir: Path, n: int, rounds: int) -> None:
    result = ingest.run_ingest(broker.host, broker.port, workdir, n, rounds)
    report.details["ingest"] = result.as_json()
    report.add(Figure("ingest_readings_per_s", result.gateway_readings_per_s, "readings/s", 0,
                      f"gateway, {n} QoS1 messages x {ingest.QUANTITIES_PER_MESSAGE} readings "
                      f"from a broker backlog into SQLite; median of {rounds} rounds"))
    report.add(Figure("ingest_bare_msgs_per_s", result.bare_msgs_per_s, "msgs/s", 0,
                      "baseline: bare paho QoS1 subscriber draining the same backlog"))
    report.add(Figure("ingest_gateway_msgs_per_s", result.gateway_msgs_per_s, "msgs/s", 0,
                      "the gateway draining that backlog"))
    report.add(Figure("ingest_ratio", result.ratio, "ratio", 3,
                      "gateway msgs/s / bare paho msgs/s, per round, median"))
    ratios = [r.ratio for r in result.rounds]
    note(f"ingest: {rounds} rounds of {n} messages; ratio per round "
         f"{', '.join(f'{r:.3f}' for r in ratios)} (spread {max(ratios) - min(ratios):.3f})")


def bench_firmware(report: Report, broker: Mosquitto, workdir: Path, cycles: int) -> None:
    mpy_dir = workdir / "mpy"
    compiled_sha = firmware.source_fingerprint(REPO / "firmware")
    if compiled_sha != report.env["firmware_sha"]:
        note(f"firmware/ changed during the run: {report.env['firmware_sha']} at start, "
             f"{compiled_sha} compiled for the firmware figures")
        report.env["firmware_sha_compiled"] = compiled_sha
    summary = firmware.compile_firmware(mpy_dir)
    firmware.compile_harness(mpy_dir)
    report.details["mpy_compile"] = summary
    modules: list[str] | None = None
    heap_error: BenchError | None = None
    try:
        heap = firmware.run_garden_heap(workdir / "heap", mpy_dir, broker.host, broker.port,
                                        cycles=cycles, warmup=2, timeout_s=30)
    except BenchError as exc:
        heap_error = exc
    else:
        modules = [str(m) for m in heap.raw["modules"]]
        report.details["garden_heap"] = heap.raw
        net_peak = heap.peak_total_bytes - heap.baseline_bytes
        report.add(Figure(
            "heap_peak_garden_kb", net_peak / KIB, "KiB", 1,
            "highest live heap (gc.collect(); gc.mem_alloc()) over the checkpoints (app "
            "started, window start and end) minus the same run's baseline of interpreter + "
            f"harness + emulated board; peak at '{heap.peak_at}'; 64-bit port"))
        report.add(Figure(
            "heap_peak_garden_total_kb", heap.peak_total_bytes / KIB, "KiB", 1,
            "the same peak for the whole process, emulated board included"))
        report.add(Figure(
            "heap_baseline_emulated_board_kb", heap.baseline_bytes / KIB, "KiB", 1,
            "baseline: live heap of interpreter + harness + emulated board, no firmware"))
        report.add(Figure(
            "heap_app_started_garden_kb", (heap.app_started_bytes - heap.baseline_bytes) / KIB,
            "KiB", 1,
            "live heap once main's imports are done (from .mpy) and the node is built, net of "
            "the baseline"))
        report.add(Figure(
            "alloc_per_cycle_garden_bytes", heap.alloc_per_cycle_bytes, "bytes", 0,
            f"bytes allocated per report cycle (gc.mem_alloc() growth with GC disabled over "
            f"{heap.cycles} report intervals of 1 s, online and idle-aligned), minus what the "
            "emulated hardware's Python code allocated (C on an MCU)"))
        report.add(Figure(
            "alloc_per_cycle_emulated_hw_bytes", heap.alloc_per_cycle_hw_bytes, "bytes", 0,
            "baseline: bytes allocated per cycle inside the emulated machine/network/onewire "
            "calls"))
        report.add(Figure(
            "heap_retained_per_cycle_garden_bytes", heap.retained_per_cycle_bytes, "bytes", 0,
            "live heap growth per cycle across the window (after gc.collect()), whole "
            "process: the emulated board's share cannot be told apart (its RAM pin history "
            "is emptied before each checkpoint); one-off growth shows here too"))
        if heap.cycles < cycles:
            note(f"garden heap: free heap ran low, measured {heap.cycles} of {cycles} cycles")
        batches = int(heap.raw["telemetry_batches_window"]) / heap.cycles
        note(f"garden heap: {heap.telemetry_entries_per_cycle:g} telemetry entries in "
             f"{batches:g} publishes per cycle (how readings share a publish depends on timing, "
             f"and each publish allocates: the main source of alloc_per_cycle's spread); "
             f"{len(heap.raw['modules'])} firmware modules loaded")
        note(f"garden heap: {WORD_NOTE}")
        note("garden heap: micropython.mem_peak() is not a high-water mark on this port (GC "
             "sweeps never subtract from it; it was "
             f"{int(heap.raw['mem_peak_raw_bytes']) / KIB:.0f} KiB with a {heap.heapsize} heap), "
             "so the peak is the live heap sampled at checkpoints; transient peaks inside a "
             "cycle are not seen")
    size = firmware.mpy_size(mpy_dir, modules)
    report.details["mpy_size"] = {"total_bytes": size.total_bytes, "files": size.files,
                                  "basis": size.basis}
    report.add(Figure(
        "mpy_size_garden_kb", size.total_bytes / KIB, "KiB", 1,
        f".mpy bytes of {size.basis} ({len(size.files)} files, main.mpy included although a "
        "device runs main.py as source)"))
    if heap_error is not None:
        raise heap_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10000, help="messages per ingest round")
    parser.add_argument("--rounds", type=int, default=7, help="ingest rounds (median taken)")
    parser.add_argument("--cycles", type=int, default=10, help="garden report cycles measured")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if not (1 <= args.messages <= 100000 and 1 <= args.rounds <= 20 and 1 <= args.cycles <= 20):
        parser.error("--messages 1..100000, --rounds 1..20, --cycles 1..20")

    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(HARD_LIMIT_S)
    started = time.monotonic()
    report = Report(env=environment())
    report.env.update(messages=args.messages, rounds=args.rounds, cycles=args.cycles)
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cpus:
        note(f"machine busy at start (load {load:.2f} on {cpus} CPUs): speed figures are "
             "noisier than usual, and the gateway suffers more from contention than the bare "
             "subscriber, so ingest_ratio can drop as well")
    workdir = Path(tempfile.mkdtemp(prefix="neoterra-bench-"))
    broker = Mosquitto(workdir / "mosquitto")
    try:
        broker.start()
        benches: tuple[tuple[str, Callable[[], None]], ...] = (
            ("ingest", lambda: bench_ingest(report, broker, workdir / "ingest", args.messages,
                                            args.rounds)),
            ("firmware", lambda: bench_firmware(report, broker, workdir / "firmware",
                                                args.cycles)),
        )
        for name, bench in benches:
            try:
                bench()
            except (BenchError, OSError, RuntimeError, ValueError, KeyError) as exc:
                report.errors[name] = f"{type(exc).__name__}: {exc}"
                print(f"bench {name} FAILED: {exc}", file=sys.stderr, flush=True)
                traceback.print_exc()
    except Exception as exc:  # the broker did not start, or the hard limit hit
        report.errors["run"] = f"{type(exc).__name__}: {exc}"
        print(f"bench: {exc}", file=sys.stderr, flush=True)
    finally:
        broker.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        shutil.rmtree(workdir, ignore_errors=True)
    report.env["elapsed_s"] = round(time.monotonic() - started, 1)
    report.env["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report.write(args.output)
    print(f"bench: {len(report.figures)} figures in {report.env['elapsed_s']} s "
          f"-> {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}"
          f" (firmware {report.env['firmware_sha']}, gateway {report.env['gateway_sha']})")
    if report.errors:
        print(f"bench: FAILED: {', '.join(sorted(report.errors))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
