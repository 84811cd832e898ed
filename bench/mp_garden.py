# MicroPython side of the garden-node memory benchmark (bench/firmware.py drives it).
#
# Runs on the emulated board under the real `micropython` unix port, compiled to .mpy and put
# on MICROPYPATH next to the firmware's .mpy files (the firmware's sources are not on the
# path at all). It runs firmware/main.py's own code path - `import main` loads config.json
# and board.json and starts the app - with hooks installed from here, so the firmware is not
# edited and its internal structure is not assumed. The hooks only touch:
#
# * asyncio.run: the app's coroutine is run next to a monitor task (below);
# * sensornode.protocol.encode_telemetry: counts telemetry batches (the wire protocol's API);
# * the emulated board's modules (machine, network, onewire): every public function and
#   method is wrapped so the bytes allocated inside them are counted apart. On an MCU these
#   are C and allocate nothing; here they are Python (the emulation also models the chips
#   and rewrites its state file on hardware access). The wrapper's own argument packing is
#   measured at start (calibration) and counted with the hardware too.
#
# The monitor waits until the node has published `warmup` telemetry batches (so it is online
# and has flushed what it sampled before connecting), then starts half a report interval
# after the latest batch - when the node is idle - and for `cycles` report intervals keeps
# the GC disabled (fewer cycles if free heap runs low): the growth of gc.mem_alloc() is every
# byte allocated in those cycles, garbage included. The live heap (gc.collect();
# gc.mem_alloc()) is sampled at checkpoints.
# Then it prints one line "NT_BENCH_RESULT <json>" and raises SystemExit, which leaves
# asyncio.run and main (MicroPython's asyncio only catches Exception).
# MicroPython: no typing at runtime.
import asyncio
import gc
import json
import sys
import time

import micropython

RESULT_TAG = "NT_BENCH_RESULT"
HW_MODULES = ("machine", "network", "onewire")
_CALIBRATION_CALLS = 32
LOW_HEAP_BYTES = 64 * 1024

_checkpoints = []  # [name, live heap bytes after gc.collect()]
_hw = [0, 0]  # [bytes allocated inside emulated hardware calls, call depth]
_hw_calls = [0] * 16  # outermost hardware calls, by positional-arg count (+8: with keywords)
_hw_overhead = [0] * 16  # bytes a wrapper call allocates before it starts counting
_hw_wrapped = []  # names of the wrapped functions
_tele = [0, 0, 0]  # telemetry batches, entries, ticks_ms of the latest batch


def checkpoint(name):
    # The emulated board keeps a pin-change history in RAM (up to 256 entries, for in-process
    # tests; the launcher reads pins.log instead). It would show as heap growth here, and an
    # MCU has nothing like it: empty it before each measurement.
    emu = sys.modules.get("emu")
    history = getattr(emu.get(), "history", None) if emu is not None else None
    if history:
        del history[:]
    gc.collect()
    live = gc.mem_alloc()
    _checkpoints.append([name, live])
    return live


def _hw_wrapper(orig):
    def wrapper(*args, **kw):
        if _hw[1]:
            return orig(*args, **kw)
        i = len(args)
        if i > 7:
            i = 7
        if kw:
            i += 8
        _hw_calls[i] += 1
        _hw[1] = 1
        before = gc.mem_alloc()
        try:
            return orig(*args, **kw)
        finally:
            _hw[0] += gc.mem_alloc() - before
            _hw[1] = 0

    return wrapper


def _calibrate():
    """Bytes a wrapper call allocates before its own counting starts (the *args tuple and
    **kw dict), per argument count: subtracted from the firmware, added to the hardware."""

    def noop(*args, **kw):
        return None

    w = _hw_wrapper(noop)
    calls = (
        lambda: w(), lambda: w(1), lambda: w(1, 2), lambda: w(1, 2, 3),
        lambda: w(1, 2, 3, 4), lambda: w(1, 2, 3, 4, 5), lambda: w(1, 2, 3, 4, 5, 6),
        lambda: w(1, 2, 3, 4, 5, 6, 7),
        lambda: w(k=1), lambda: w(1, k=1), lambda: w(1, 2, k=1), lambda: w(1, 2, 3, k=1),
        lambda: w(1, 2, 3, 4, k=1), lambda: w(1, 2, 3, 4, 5, k=1),
        lambda: w(1, 2, 3, 4, 5, 6, k=1), lambda: w(1, 2, 3, 4, 5, 6, 7, k=1),
    )
    gc.collect()
    gc.disable()
    for i in range(16):
        call = calls[i]
        _hw[0] = 0
        before = gc.mem_alloc()
        for _ in range(_CALIBRATION_CALLS):
            call()
        total = gc.mem_alloc() - before
        _hw_overhead[i] = (total - _hw[0]) // _CALIBRATION_CALLS
    gc.enable()
    _hw[0] = 0
    for i in range(16):
        _hw_calls[i] = 0


def _wrap_hardware():
    function = type(_calibrate)
    for module_name in HW_MODULES:
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        for name in dir(module):
            if name.startswith("_"):
                continue
            value = getattr(module, name)
            if type(value) is function:
                setattr(module, name, _hw_wrapper(value))
                _hw_wrapped.append(module_name + "." + name)
            elif type(value) is type:
                for attr in dir(value):
                    if attr.startswith("_") and attr != "__call__":
                        continue
                    method = getattr(value, attr)
                    # Generated wrappers are closures, not functions: never wrapped twice.
                    if type(method) is function:
                        setattr(value, attr, _hw_wrapper(method))
                        _hw_wrapped.append(module_name + "." + name + "." + attr)


def _emu_history_len():
    """Entries in the emulated board's pin history (it keeps up to emu.HISTORY_MAX)."""
    import emu

    return len(getattr(emu.get(), "history", ()))


def _finish(state, error):
    mods = sorted(n for n in sys.modules if n == "main" or n.startswith("sensornode"))
    result = {
        "ok": not error,
        "error": error,
        "cycles": state["cycles"],
        "interval_ms": state["interval_ms"],
        "alloc_window_bytes": state["alloc_window"],
        "alloc_window_hw_bytes": state["alloc_window_hw"],
        "alloc_window_hw_wrapper_bytes": state["alloc_window_hw_wrapper"],
        "hw_calls_window": state["hw_calls_window"],
        "mem_total_window_bytes": state["mem_total_window"],
        "telemetry_batches_window": state["batches_window"],
        "telemetry_entries_window": state["entries_window"],
        "emu_history_len": state.get("emu_history"),
        "checkpoints": _checkpoints,
        "mem_peak_raw_bytes": micropython.mem_peak(),
        "mem_total_raw_bytes": micropython.mem_total(),
        "heap_free_end_bytes": gc.mem_free(),
        "modules": mods,
        "hw_wrapped": len(_hw_wrapped),
        "hw_overhead": _hw_overhead,
        "elapsed_ms": time.ticks_diff(time.ticks_ms(), state["t0"]),
        "word_bits": 64 if sys.maxsize > 2**32 else 32,
    }
    print(RESULT_TAG, json.dumps(result))
    raise SystemExit(1 if error else 0)


async def _monitor(state, cycles, warmup, timeout_s):
    interval_ms = state["interval_ms"]
    while _tele[0] < warmup:
        if time.ticks_diff(time.ticks_ms(), state["t0"]) > timeout_s * 1000:
            _finish(state, f"{_tele[0]} of {warmup} telemetry batches after {timeout_s} s")
        await asyncio.sleep_ms(20)
    # Start mid-interval, when the node is idle: the window then holds whole cycles.
    start_at = time.ticks_add(_tele[2], interval_ms // 2)
    while time.ticks_diff(start_at, time.ticks_ms()) < 0:
        start_at = time.ticks_add(start_at, interval_ms)
    await asyncio.sleep_ms(time.ticks_diff(start_at, time.ticks_ms()))
    checkpoint("window start")
    state["emu_history"] = [_emu_history_len()]
    batches, entries = _tele[0], _tele[1]
    calls0 = list(_hw_calls)
    _hw[0] = 0
    gc.disable()
    a0 = gc.mem_alloc()
    m0 = micropython.mem_total()
    done = 0
    while done < cycles:
        done += 1
        end_at = time.ticks_add(start_at, done * interval_ms)
        await asyncio.sleep_ms(max(0, time.ticks_diff(end_at, time.ticks_ms())))
        # With GC off, garbage piles up: end early, on a whole cycle, before the heap runs out.
        if gc.mem_free() < LOW_HEAP_BYTES:
            break
    alloc = gc.mem_alloc() - a0
    total = micropython.mem_total() - m0
    hw = _hw[0]
    gc.enable()
    checkpoint("window end")
    state["emu_history"].append(_emu_history_len())
    wrapper = 0
    calls = 0
    for i in range(16):
        n = _hw_calls[i] - calls0[i]
        calls += n
        wrapper += n * _hw_overhead[i]
    state["cycles"] = done
    state["alloc_window"] = alloc
    state["alloc_window_hw"] = hw + wrapper
    state["alloc_window_hw_wrapper"] = wrapper
    state["hw_calls_window"] = calls
    state["mem_total_window"] = total
    state["batches_window"] = _tele[0] - batches
    state["entries_window"] = _tele[1] - entries
    _finish(state, "")


def run(cycles, warmup, timeout_s, interval_s):
    """Run the garden node (firmware/main.py) and measure; never returns (SystemExit)."""
    state = {
        "t0": time.ticks_ms(), "interval_ms": interval_s * 1000, "cycles": 0,
        "alloc_window": 0, "alloc_window_hw": 0, "alloc_window_hw_wrapper": 0,
        "hw_calls_window": 0, "mem_total_window": 0, "batches_window": 0, "entries_window": 0,
    }
    checkpoint("harness")
    # The emulated board's modules shadow the port's machine and add network/onewire; the
    # firmware imports them too, so importing them first changes nothing but the order.
    import emu

    emu.get()
    _calibrate()
    _wrap_hardware()
    checkpoint("emulated_board")

    from sensornode import protocol

    encode_telemetry = protocol.encode_telemetry

    def counting_encode_telemetry(batch):
        _tele[0] += 1
        _tele[1] += len(batch)
        _tele[2] = time.ticks_ms()
        return encode_telemetry(batch)

    protocol.encode_telemetry = counting_encode_telemetry
    asyncio_run = asyncio.run

    def run_with_monitor(coro):
        checkpoint("app started")  # main's imports done, the node built

        async def both():
            state["monitor"] = asyncio.create_task(_monitor(state, cycles, warmup, timeout_s))
            return await coro

        return asyncio_run(both())

    asyncio.run = run_with_monitor
    import main  # noqa: F401  (runs the node; the monitor ends it with SystemExit)

    _finish(state, "firmware main returned without running asyncio.run")
