# MicroPython side of the garden-node memory benchmark (bench/firmware.py drives it).
#
# Runs on the emulated board under the real `micropython` unix port, compiled to .mpy and put
# on MICROPYPATH next to the firmware's .mpy files (the firmware's sources are not on the
# path at all). It runs firmware/main.py's own code path - `import main` loads config.json
# and board.json and starts the app - with hooks installed from here, so the firmware is not
# edited. The hooks only touch:
#
# * sensornode.app.Node.run: replaced by a function that keeps the node, then runs the real
#   run() next to a monitor task (below). The monitor only reads the node's public state:
#   node.sender.sent, node.outbox.pending / .appended, node.link.is_up / .connects and
#   node.link.client.stats["sent"] (PUBLISH packets).
# * the emulated board's modules (machine, network, onewire): every public function and
#   method is wrapped so the bytes allocated inside them are counted apart. On an MCU these
#   are C and allocate nothing; here they are Python (the emulation also models the chips
#   and rewrites its state file on hardware access). The wrapper's own argument packing is
#   measured at start (calibration) and counted with the hardware too.
#
# The monitor waits until the node is online and has sent readings for `warmup` report
# intervals, then keeps the GC disabled from half an interval after the latest send (when
# the node is idle) to the end, so the growth of gc.mem_alloc() is every byte allocated,
# garbage included. Every SAMPLE_MS (and whenever free heap runs low) it banks that growth,
# runs gc.collect() and samples the live heap (gc.mem_alloc() right after): the banked sums
# are unaffected by the collections, which happen only here, between the firmware's steps.
# Nothing the monitor does between two banks allocates (checked: asyncio.sleep_ms, ticks,
# gc.mem_free and the node's counters allocate no heap block; its waits are inline loops, as
# calling a coroutine allocates); what it allocates while banking falls between two readings
# and is not counted.
#
# Timeline, each step bounded in time:
# 1. report: `cycles` whole report intervals online (a snapshot of the counters at each
#    interval boundary);
# 2. outage: prints "NT_BENCH_PHASE outage"; the host stops the broker; once the link is
#    down, `outage_cycles` whole intervals offline (readings pile up in the flash outbox),
#    then prints "NT_BENCH_PHASE restore"; the host starts the broker again;
# 3. drain: the node reconnects by its own backoff. From the restore on the monitor runs at
#    every scheduler turn (a reconnect, its subscribes and birth and the first publishes can
#    all happen within a ms): it collects once the MQTT session is up, takes a snapshot
#    without collecting when the link is up (subscribed, birth sent) and another when the
#    outbox is empty for the first time - no collection in between, so the drain is timed
#    undisturbed - then goes on to a whole number of intervals after the link came up.
# 2. and 3. run twice: the second drain is not timed; the monitor collects and samples the
# live heap at every scheduler turn of it (which slows it) for the drain's heap peak.
# Then it prints one line "NT_BENCH_RESULT <json>" (the snapshots; bench/firmware.py turns
# them into figures) and raises SystemExit, which leaves asyncio.run and main (MicroPython's
# asyncio only catches Exception).
# MicroPython: no typing at runtime.
import asyncio
import gc
import json
import sys
import time

import micropython

RESULT_TAG = "NT_BENCH_RESULT"
PHASE_TAG = "NT_BENCH_PHASE"
HW_MODULES = ("machine", "network", "onewire")
_CALIBRATION_CALLS = 32
LOW_HEAP_BYTES = 64 * 1024
SAMPLE_MS = 5
LINK_DOWN_TIMEOUT_MS = 10000
RECONNECT_TIMEOUT_MS = 45000  # the node's reconnect backoff goes up to 30 s plus jitter
DRAIN_TIMEOUT_MS = 30000

_checkpoints = []  # [name, live heap bytes after gc.collect()]
_hw = [0, 0]  # [bytes allocated inside emulated hardware calls, call depth]
_hw_calls = [0] * 16  # outermost hardware calls, by positional-arg count (+8: with keywords)
_hw_overhead = [0] * 16  # bytes a wrapper call allocates before it starts counting
_hw_wrapped = []  # names of the wrapped functions
_node = []  # the running sensornode.app.Node

# The meter: banked allocation (GC off), the reading it continues from, live heap max since
# the last snapshot, samples, ticks_ms of the next sample, microseconds spent collecting.
_ALLOC, _A0, _LIVE_MAX, _SAMPLES, _NEXT, _COLLECT_US = 0, 1, 2, 3, 4, 5
_meter = [0] * 6
# A snapshot of the counters: preallocated (before the baseline checkpoint) and filled in
# place, so taking one allocates nothing and they do not grow the live heap.
SNAP_FIELDS = ("name", "t_ms", "t_us", "alloc", "hw", "hw_calls", "sent", "appended", "pending",
               "publishes", "connects", "live", "live_max", "samples", "collect_us")
_snaps = []
_snap_count = [0]


def _clear_emu_history():
    # The emulated board keeps a pin-change history in RAM (up to 256 entries, for in-process
    # tests; the launcher reads pins.log instead), and some chip models a transaction log
    # (`log`, also for tests; the SHT4x's has no bound). They would show as heap growth here,
    # and an MCU has nothing like them: empty them before each measurement.
    emu = sys.modules.get("emu")
    if emu is None:
        return
    sim = emu.get()
    history = getattr(sim, "history", None)
    if history:
        del history[:]
    buses = getattr(sim, "buses", None)
    if buses is None:
        return
    for devices in buses.i2c.values():
        for device in devices.values():
            _clear_log(device)
    for _pin, slot in buses.onewire:
        _clear_log(slot.device)


def _clear_log(device):
    log = getattr(device, "log", None)
    if type(log) is list and log:
        del log[:]


def checkpoint(name):
    _clear_emu_history()
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


# ---- the meter ---------------------------------------------------------------------------


def _bank(name=None, say=None):
    """Bank the allocation since the last bank, collect, sample the live heap; with a name,
    also fill the next snapshot; with `say`, print a phase line for the host. Whatever this
    allocates is not counted (it falls between the reading banked and the reading the meter
    continues from)."""
    a = gc.mem_alloc()
    m = _meter
    m[_ALLOC] += a - m[_A0]
    t_ms = time.ticks_ms()
    t0 = time.ticks_us()
    _clear_emu_history()
    gc.collect()
    live = gc.mem_alloc()
    m[_COLLECT_US] += time.ticks_diff(time.ticks_us(), t0)
    m[_SAMPLES] += 1
    if live > m[_LIVE_MAX]:
        m[_LIVE_MAX] = live
    m[_NEXT] = time.ticks_add(time.ticks_ms(), SAMPLE_MS)
    if name is not None:
        _fill_snapshot(name, t_ms, t0, live)
        m[_LIVE_MAX] = live  # the next snapshot's maximum starts here
    if say is not None:
        print(PHASE_TAG, say)
    m[_A0] = gc.mem_alloc()


def _fill_snapshot(name, t_ms, t_us, live):
    i = _snap_count[0]
    if i >= len(_snaps):
        raise RuntimeError("bench harness: out of snapshots")
    _snap_count[0] = i + 1
    s = _snaps[i]
    node = _node[0]
    hw = _hw[0]
    calls = 0
    for k in range(16):
        calls += _hw_calls[k]
        hw += _hw_calls[k] * _hw_overhead[k]
    s[0] = name
    s[1] = t_ms
    s[2] = t_us
    s[3] = _meter[_ALLOC]
    s[4] = hw
    s[5] = calls
    s[6] = node.sender.sent
    s[7] = node.outbox.appended
    s[8] = node.outbox.pending
    s[9] = node.link.client.stats["sent"]
    s[10] = node.link.connects
    s[11] = live
    s[12] = _meter[_LIVE_MAX]
    s[13] = _meter[_SAMPLES]
    s[14] = _meter[_COLLECT_US]


def _mark(name):
    """A snapshot without a collection (live heap -1): for the timed drain."""
    a = gc.mem_alloc()
    _meter[_ALLOC] += a - _meter[_A0]
    _fill_snapshot(name, time.ticks_ms(), time.ticks_us(), -1)
    _meter[_A0] = gc.mem_alloc()


def _poll(now):
    """Between two scheduler turns: bank and sample when due or when free heap runs low."""
    if time.ticks_diff(now, _meter[_NEXT]) >= 0 or gc.mem_free() < LOW_HEAP_BYTES:
        _bank()


def _start_meter():
    for i in range(len(_meter)):
        _meter[i] = 0
    _clear_emu_history()
    gc.collect()
    gc.disable()
    _meter[_A0] = gc.mem_alloc()
    _meter[_NEXT] = time.ticks_add(time.ticks_ms(), SAMPLE_MS)


# ---- the run -----------------------------------------------------------------------------


def _finish(state, error):
    gc.enable()
    mods = sorted(n for n in sys.modules if n == "main" or n.startswith("sensornode"))
    result = {
        "ok": not error,
        "error": error,
        "phase": state["phase"],
        "interval_ms": state["interval_ms"],
        "cycles": state["cycles"],
        "outage_cycles": state["outage_cycles"],
        "sample_ms": SAMPLE_MS,
        "snapshot_fields": SNAP_FIELDS,
        "snapshots": _snaps[:_snap_count[0]],
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


def _late(deadline):
    return time.ticks_diff(time.ticks_ms(), deadline) > 0


async def _monitor(state, cycles, warmup, timeout_s, outage_cycles):
    node = _node[0]
    sender = node.sender
    interval = state["interval_ms"]

    # Warm-up (GC on): online, readings sent for `warmup` intervals; note the latest send.
    state["phase"] = "warmup"
    deadline = time.ticks_add(state["t0"], timeout_s * 1000)
    while sender.sent == 0:
        if _late(deadline):
            _finish(state, f"no reading sent within {timeout_s} s")
        await asyncio.sleep_ms(SAMPLE_MS)
    warm_end = time.ticks_add(time.ticks_ms(), warmup * interval)
    last_sent, last_send_at = sender.sent, time.ticks_ms()
    while time.ticks_diff(warm_end, time.ticks_ms()) > 0:
        await asyncio.sleep_ms(SAMPLE_MS)
        if sender.sent != last_sent:
            last_sent, last_send_at = sender.sent, time.ticks_ms()
    # Start mid-interval, when the node is idle: windows then hold whole cycles.
    start_at = time.ticks_add(last_send_at, interval // 2)
    while time.ticks_diff(start_at, time.ticks_ms()) < 0:
        start_at = time.ticks_add(start_at, interval)
    await asyncio.sleep_ms(time.ticks_diff(start_at, time.ticks_ms()))

    # 1. Reporting: `cycles` whole intervals online.
    state["phase"] = "report"
    checkpoint("window start")
    _start_meter()
    _bank("report 0")
    for c in range(1, cycles + 1):
        end = time.ticks_add(start_at, c * interval)
        pause = _step_ms(end)
        while pause:
            await asyncio.sleep_ms(pause)
            pause = _step_ms(end)
        _bank("report")
    state["cycles"] = cycles

    # 2. and 3., twice: an outage, then the drain (timed the first time; the second time
    # the live heap is sampled at every scheduler turn of the drain, which slows it).
    for names in (TIMED_ROUND, PEAK_ROUND):
        await _outage_and_drain(state, node, start_at, outage_cycles, names)
    state["outage_cycles"] = outage_cycles
    gc.enable()
    state["phase"] = "done"
    checkpoint("end")
    _finish(state, "")


def _step_ms(end):
    """Banks when due; how long to sleep on the way to ticks_ms `end` (0: there). The waits
    are inline loops, not a coroutine: calling one would allocate inside a window."""
    now = time.ticks_ms()
    left = time.ticks_diff(end, now)
    if left <= 0:
        return 0
    _poll(now)
    return left if left < SAMPLE_MS else SAMPLE_MS


# Snapshot names of the two outage rounds: link down, first whole interval offline, each
# further one, restore, MQTT session up again, link up (subscribed, birth sent), outbox
# empty, end of the whole intervals from link up.
TIMED_ROUND = ("link down", "outage 0", "outage", "restore", "connected", "link up",
               "drained", "drain window end")
PEAK_ROUND = ("peak: link down", "peak: outage 0", "peak: outage", "peak: restore",
              "peak: connected", "peak: link up", "peak: drained", "peak: drain window end")


async def _outage_and_drain(state, node, start_at, outage_cycles, names):
    outbox, link = node.outbox, node.link
    interval = state["interval_ms"]
    timed = names is TIMED_ROUND
    # Outage: the host stops the broker; `outage_cycles` whole intervals offline.
    state["phase"] = names[0]
    _bank(None, "outage")
    deadline = time.ticks_add(time.ticks_ms(), LINK_DOWN_TIMEOUT_MS)
    while link.is_up:
        if _late(deadline):
            _finish(state, f"the link stayed up {LINK_DOWN_TIMEOUT_MS} ms after the broker "
                    "was stopped")
        _poll(time.ticks_ms())
        await asyncio.sleep_ms(1)
    _bank(names[0])
    state["phase"] = names[2]
    c = 1
    while time.ticks_diff(time.ticks_add(start_at, c * interval), time.ticks_ms()) <= 0:
        c += 1
    for i in range(outage_cycles + 1):
        end = time.ticks_add(start_at, (c + i) * interval)
        pause = _step_ms(end)
        while pause:
            await asyncio.sleep_ms(pause)
            pause = _step_ms(end)
        _bank(names[2] if i else names[1])

    # Drain: the host starts the broker; the node reconnects (its own backoff) and sends
    # the backlog.
    state["phase"] = names[3]
    _bank(names[3], "restore")
    # From here on the monitor runs at every scheduler turn (a reconnect, its subscribes and
    # birth message and the first publishes of the drain can all happen within a ms).
    deadline = time.ticks_add(time.ticks_ms(), RECONNECT_TIMEOUT_MS)
    while not link.client.is_connected:
        if _late(deadline):
            _finish(state, f"no reconnect within {RECONNECT_TIMEOUT_MS} ms of the broker's "
                    "restart")
        _poll(time.ticks_ms())
        await asyncio.sleep_ms(0)
    # Collect now, while the link subscribes and sends its birth message: the drain starts
    # with the most free heap.
    _bank(names[4])
    while not link.is_up:
        if _late(deadline):
            _finish(state, "the link did not come up after the MQTT session did")
        await asyncio.sleep_ms(0)
    up_at = time.ticks_ms()
    state["phase"] = names[5]
    if timed:
        _mark(names[5])
    else:
        _bank(names[5])
    deadline = time.ticks_add(up_at, DRAIN_TIMEOUT_MS)
    while outbox.pending:
        if _late(deadline):
            _finish(state, f"outbox not empty {DRAIN_TIMEOUT_MS} ms after the reconnect")
        if timed:
            if gc.mem_free() < LOW_HEAP_BYTES:
                _bank()
        else:
            _bank()
        await asyncio.sleep_ms(0)
    if timed:
        _mark(names[6])
    else:
        _bank(names[6])
    k = (time.ticks_diff(time.ticks_ms(), up_at) + interval - 1) // interval
    end = time.ticks_add(up_at, (k if k > 0 else 1) * interval)
    pause = _step_ms(end)
    while pause:
        await asyncio.sleep_ms(pause)
        pause = _step_ms(end)
    _bank(names[7])


def run(cycles, warmup, timeout_s, interval_s, outage_cycles):
    """Run the garden node (firmware/main.py) and measure; never returns (SystemExit)."""
    state = {
        "t0": time.ticks_ms(), "interval_ms": interval_s * 1000, "cycles": 0,
        "outage_cycles": 0, "phase": "boot",
    }
    checkpoint("harness")
    for _ in range(cycles + 2 * outage_cycles + 20):
        _snaps.append([None] * len(SNAP_FIELDS))
    # The emulated board's modules shadow the port's machine and add network/onewire; the
    # firmware imports them too, so importing them first changes nothing but the order.
    import emu

    emu.get()
    _calibrate()
    _wrap_hardware()
    checkpoint("emulated_board")

    from sensornode import app

    node_run = app.Node.run

    def run_with_monitor(node):
        _node.append(node)
        checkpoint("app started")  # main's imports done, the node built

        async def both():
            state["monitor"] = asyncio.create_task(
                _monitor(state, cycles, warmup, timeout_s, outage_cycles))
            return await node_run(node)

        return both()

    app.Node.run = run_with_monitor
    import main  # noqa: F401  (runs the node; the monitor ends it with SystemExit)

    _finish(state, "firmware main returned without running the node")
