"""`make bench`: every figure on its own line as `BENCH <name> <value> <unit>`, taken against a
baseline measured in the same run, and collected in build/bench.json.

    .venv/bin/python bench/run.py [--messages N] [--rounds R] [--cycles K] [--outage-cycles O]

No figure is asserted against a threshold: compare runs (build/bench.json), not absolutes.
Everything runs on loopback against private mosquittos on free ports; every process started
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
HARD_LIMIT_S = 420
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


def bench_firmware(report: Report, workdir: Path, cycles: int, outage_cycles: int) -> None:
    mpy_dir = workdir / "mpy"
    compiled_sha = firmware.source_fingerprint(REPO / "firmware")
    if compiled_sha != report.env["firmware_sha"]:
        note(f"firmware/ changed during the run: {report.env['firmware_sha']} at start, "
             f"{compiled_sha} compiled for the firmware figures")
        report.env["firmware_sha_compiled"] = compiled_sha
    summary = firmware.compile_firmware(mpy_dir)
    firmware.compile_harness(mpy_dir)
    report.details["mpy_compile"] = summary
    report.env["garden_heapsize"] = firmware.HEAPSIZE
    note(f"garden node: .mpy build on the micropython unix port, -X heapsize="
         f"{firmware.HEAPSIZE}, report interval 1 s, its own mosquitto (stopped for the "
         "outages)")
    modules: list[str] | None = None
    garden_error: BenchError | None = None
    # A broker of its own: the outages stop it.
    broker = Mosquitto(workdir / "mosquitto")
    try:
        try:
            broker.start()
        except AssertionError as exc:  # testkit's wait_for: not accepting in time
            raise BenchError(f"the garden node's mosquitto did not start: {exc}") from exc
        garden = firmware.run_garden(workdir / "garden", mpy_dir, broker, cycles=cycles,
                                     outage_cycles=outage_cycles, warmup=2, timeout_s=30)
        modules = [str(m) for m in garden.raw["modules"]]
        report_garden(report, garden)
    except BenchError as exc:
        garden_error = exc
    finally:
        broker.stop()
    size = firmware.mpy_size(mpy_dir, modules)
    report.details["mpy_size"] = {"total_bytes": size.total_bytes, "files": size.files,
                                  "basis": size.basis}
    report.add(Figure(
        "mpy_size_garden_kb", size.total_bytes / KIB, "KiB", 1,
        f".mpy bytes of {size.basis} ({len(size.files)} files, main.mpy included although a "
        "device runs main.py as source)"))
    if garden_error is not None:
        raise garden_error


def report_garden(report: Report, g: firmware.GardenResult) -> None:
    heap = f"-X heapsize={g.heapsize}"
    base = g.baseline_bytes
    r, n = g.report, g.cycles
    sample_ms = int(g.raw["sample_ms"])
    peak = max(g.app_started_bytes, g.window_start_bytes, r.live_max)
    report.add(Figure(
        "heap_peak_garden_kb", (peak - base) / KIB, "KiB", 1,
        "highest live heap (gc.collect(); gc.mem_alloc()) while reporting - once the app has "
        f"started, then every {sample_ms} ms over {n} report intervals - minus the same run's "
        f"baseline of interpreter + harness + emulated board; .mpy, {heap}, 64-bit port"))
    report.add(Figure(
        "heap_peak_garden_total_kb", peak / KIB, "KiB", 1,
        "the same peak for the whole process, emulated board included"))
    report.add(Figure(
        "heap_baseline_emulated_board_kb", base / KIB, "KiB", 1,
        "baseline: live heap of interpreter + harness + emulated board, no firmware"))
    report.add(Figure(
        "heap_app_started_garden_kb", (g.app_started_bytes - base) / KIB, "KiB", 1,
        "live heap once main's imports are done (from .mpy) and the node is built, net of "
        "the baseline"))
    report.add(Figure(
        "alloc_per_cycle_garden_bytes", (r.delta("alloc") - r.delta("hw")) / n, "bytes", 0,
        f"bytes allocated per report cycle (gc.mem_alloc() growth with GC disabled, banked at "
        f"each of the harness's collections, over {n} report intervals of 1 s, online and "
        "idle-aligned), minus what the emulated hardware's Python code allocated (C on an "
        "MCU)"))
    report.add(Figure(
        "alloc_per_cycle_emulated_hw_bytes", r.delta("hw") / n, "bytes", 0,
        "baseline: bytes allocated per cycle inside the emulated machine/network/onewire "
        "calls"))
    report.add(Figure(
        "heap_retained_per_cycle_garden_bytes", (r.last.live - r.first.live) / n, "bytes", 0,
        "live heap growth per report cycle across the window (after gc.collect()), whole "
        "process: the emulated board's share cannot be told apart (its RAM pin history and "
        "chip transaction logs are emptied before each sample); one-off growth shows here "
        "too"))
    report_rate = r.delta("sent") / r.seconds
    report.add(Figure(
        "report_records_per_s", report_rate, "records/s", 2,
        "comparison for the drain rate: outbox records sent (PUBACKed) per second while "
        f"reporting normally ({r.delta('sent')} in {n} intervals: what the node produces)"))

    o, m = g.outage, g.cycles_in(g.outage)
    report.add(Figure(
        "alloc_per_cycle_offline_garden_bytes", (o.delta("alloc") - o.delta("hw")) / m,
        "bytes", 0,
        f"as alloc_per_cycle_garden_bytes, over {m} intervals with the broker stopped: "
        "readings go to the flash outbox, reconnect attempts back off"))
    report.add(Figure(
        "heap_retained_per_cycle_offline_garden_bytes", (o.last.live - o.first.live) / m,
        "bytes", 0,
        f"as heap_retained_per_cycle_garden_bytes, over those {m} offline intervals (the "
        f"outbox grew by {o.delta('pending')} records)"))

    d = g.drain
    drained = d.delta("sent")
    if drained < 1:
        raise BenchError(f"the drain sent no record: {d}")
    drain_rate = drained / d.seconds
    report.add(Figure(
        "outbox_records_drained", drained, "records", 0,
        f"records the node sent from its outbox after {g.cycles_in(g.offline)} s offline, "
        "from the moment the link was up again (subscribed, birth sent) until the outbox was "
        f"empty; {d.first.pending} were pending then"))
    report.add(Figure(
        "drain_records_per_s", drain_rate, "records/s", 0,
        f"outbox_records_drained / the time that took ({d.seconds * 1000:.1f} ms, "
        f"{d.delta('publishes')} QoS1 publishes, PUBACKed by a local mosquitto); the harness "
        "does not collect in between"))
    report.add(Figure(
        "alloc_per_drained_record_bytes", (d.delta("alloc") - d.delta("hw")) / drained,
        "bytes", 0,
        "bytes allocated (GC disabled, as alloc_per_cycle_garden_bytes) from link up to the "
        "outbox empty, per record sent, minus the emulated hardware's share"))
    p = g.peak_drain
    report.add(Figure(
        "heap_peak_drain_garden_kb", (p.live_max - base) / KIB, "KiB", 1,
        "highest live heap while draining, net of the baseline: a second, identical outage "
        f"whose drain ({p.delta('sent')} records) the harness stops at every scheduler turn "
        f"to collect and sample ({p.delta('samples')} samples; {p.seconds * 1000:.1f} ms "
        f"instead of {d.seconds * 1000:.1f}); {heap}"))

    hw_calls = d.delta("hw_calls")
    if hw_calls:
        note(f"garden drain: {hw_calls} emulated hardware calls during the timed drain - a "
             "sensor read ran in it and its allocation counts as draining")
    per_cycle = g.report_cycle_fw
    pubs = r.delta("publishes") / n
    offline_fw = (o.delta("alloc") - o.delta("hw")) / m
    online_fw = (r.delta("alloc") - r.delta("hw")) / n
    note(f"garden: {r.delta('sent') / n:g} records in {pubs:g} publishes per report cycle "
         f"(how records share a publish depends on timing: the main source of "
         f"alloc_per_cycle's spread, {min(per_cycle)}..{max(per_cycle)} bytes per cycle); "
         f"sending costs {online_fw - offline_fw:.0f} bytes per cycle (online - offline), "
         f"~{(online_fw - offline_fw) / pubs:.0f} per publish; the drain sent "
         f"{drained / max(1, d.delta('publishes')):.1f} records per publish")
    note(f"garden drain: {drain_rate:.0f} records/s against {report_rate:.2f} records/s "
         f"produced; offline {g.offline.seconds:.1f} s, reconnect "
         f"{g.offline.last.connects - g.offline.first.connects} connect(s) by the node's own "
         f"backoff; {len(per_cycle)} report cycles, {m} offline cycles measured")
    note(f"garden heap: {WORD_NOTE}")
    note("garden heap: micropython.mem_peak() is not a high-water mark on this port (GC "
         "sweeps never subtract from it; it was "
         f"{int(g.raw['mem_peak_raw_bytes']) / KIB:.0f} KiB with a {g.heapsize} heap), so "
         f"peaks are live heap sampled every {sample_ms} ms (every turn in the second "
         "drain): a transient shorter than that can be missed")
    report.details["garden"] = g.raw
    report.details["garden_summary"] = {
        "report_cycle_fw_bytes": per_cycle,
        "report_publishes_per_cycle": pubs,
        "offline_cycle_fw_bytes": offline_fw,
        "drain_ms": round(d.seconds * 1000, 3),
        "drain_publishes": d.delta("publishes"),
        "drain_hw_calls": hw_calls,
        "drain_window_fw_bytes": g.drain_window.delta("alloc") - g.drain_window.delta("hw"),
        "drain_window_cycles": g.cycles_in(g.drain_window),
        "peak_drain_ms": round(p.seconds * 1000, 3),
        "peak_drain_records": p.delta("sent"),
        "peak_drain_fw_bytes": p.delta("alloc") - p.delta("hw"),
        "offline_s": round(g.offline.seconds, 3),
        "peak_offline_s": round(g.peak_offline.seconds, 3),
        "live_end_bytes": g.raw["checkpoints"][-1][1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10000, help="messages per ingest round")
    parser.add_argument("--rounds", type=int, default=7, help="ingest rounds (median taken)")
    parser.add_argument("--cycles", type=int, default=10, help="garden report cycles measured")
    parser.add_argument("--outage-cycles", type=int, default=12,
                        help="garden report cycles with the broker stopped, per outage (two)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if not (1 <= args.messages <= 100000 and 1 <= args.rounds <= 20 and 1 <= args.cycles <= 20
            and 2 <= args.outage_cycles <= 20):
        parser.error("--messages 1..100000, --rounds 1..20, --cycles 1..20, "
                     "--outage-cycles 2..20")

    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(HARD_LIMIT_S)
    started = time.monotonic()
    report = Report(env=environment())
    report.env.update(messages=args.messages, rounds=args.rounds, cycles=args.cycles,
                      outage_cycles=args.outage_cycles)
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
            ("firmware", lambda: bench_firmware(report, workdir / "firmware", args.cycles,
                                                args.outage_cycles)),
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
