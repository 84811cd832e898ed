"""The flash outbox under the real MicroPython interpreter (from source and from .mpy): the
behaviour checks, power cuts at every block-device write of LittleFS (the filesystem the boards
use, on a RAM block device), SIGKILLs of a node appending and acking in a loop, and throughput,
heap and flash-write figures (printed as BENCH lines)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hil_tests.target import micropython_binary

REPO = Path(__file__).resolve().parent.parent
MODULES = ("sensornode/__init__.py", "sensornode/outbox.py", "sensornode/outbox_segment.py")
KILL_ROUNDS = int(os.environ.get("OUTBOX_KILL_ROUNDS", "12"))  # `make soak` may raise it

COMMON = r"""
import binascii
import gc
import os
import sys

from sensornode.outbox import Outbox
from sensornode.outbox_segment import HEADER, crc32_sw

FAILS = []


def check(name, ok, got=None):
    if not ok:
        FAILS.append(name)
        print("FAIL", name, got)


def body(seq, n=20):
    return bytes([(seq * 7 + i) % 256 for i in range(n)])


def rm_tree(d):
    for name in os.listdir(d):
        os.remove(d + "/" + name)
    os.rmdir(d)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


ALL = (100000, 10000000)
"""

BEHAVIOUR = COMMON + r"""
recs = [(1, s, body(s)) for s in range(12)]  # 38 bytes each: 5 per 200-byte segment
ob = Outbox("t1", max_bytes=2000, segment_bytes=200, ack_every=4)
for r in recs[:7]:
    ob.append(*r)
ob.append_many(recs[7:])
check("order", ob.peek(*ALL) == recs)
check("rotation", sorted(os.listdir("t1")) == ["0.seg", "1.seg", "2.seg"], os.listdir("t1"))
check("limits", ob.peek(3, 100) == recs[:3] and ob.peek(10, 1) == recs[:1])
ob.peek(*ALL)
check("ack", ob.ack(6) == 6 and ob.pending == 6)
check("acked segment deleted", "0.seg" not in os.listdir("t1"))
del ob  # power cut: the ack inside 1.seg was not saved yet
ob = Outbox("t1", max_bytes=2000, segment_bytes=200, ack_every=4)
check("resent window", ob.peek(*ALL) == recs[5:])
ob.ack(3)
ob.close()
ob = Outbox("t1", max_bytes=2000, segment_bytes=200, ack_every=4)
check("close saves", ob.peek(*ALL) == recs[8:])
for s in range(12, 80):
    ob.append(1, s, body(s))
    check("bound", ob.stats["bytes"] <= 2000, ob.stats)
got = ob.peek(*ALL)
check("newest kept", got[-1] == (1, 79, body(79)))
check("dropped counted", got[0][1] == 8 + ob.dropped and ob.dropped_last_seq == got[0][1] - 1,
      (got[0][1], ob.dropped, ob.dropped_last_seq))
ob.close()
rm_tree("t1")

# A power cut at every byte of the last write, and a corrupt byte anywhere.
first = [(1, s, body(s, 9)) for s in range(4)]
last = [(2, s, body(s, 9)) for s in range(4, 7)]
ob = Outbox("p", segment_bytes=2000)
for r in first:
    ob.append(*r)
ob.append_many(last)
ob.close()
with open("p/0.seg", "rb") as f:
    full = f.read()
rm_tree("p")
size = HEADER + 9
start = 4 * size
for cut in range(start, len(full)):
    os.mkdir("c")
    write("c/0.seg", full[:cut])
    ob = Outbox("c", segment_bytes=2000)
    expected = first + last[:(cut - start) // size]
    check("cut %d" % cut, ob.peek(*ALL) == expected)
    check("torn %d" % cut, ob.stats["skipped_bytes"] == (cut - start) % size, ob.stats)
    ob.append(3, 99, b"after")
    check("after cut %d" % cut, Outbox("c", segment_bytes=2000).peek(*ALL)
          == expected + [(3, 99, b"after")])
    ob.close()
    rm_tree("c")
every = first + last
for pos in range(len(full)):
    data = bytearray(full)
    data[pos] ^= 0x41
    os.mkdir("c")
    write("c/0.seg", data)
    ob = Outbox("c", segment_bytes=2000)
    check("corrupt %d" % pos, ob.pending == pos // size and ob.peek(*ALL) == every[:pos // size])
    rm_tree("c")

for n in (0, 1, 7, 16, 33, 300):
    data = bytes([(i * 31) % 256 for i in range(n)])
    check("crc %d" % n, crc32_sw(data, 7) == binascii.crc32(data, 7))
print("DONE FAILED", len(FAILS))
"""

# A RAM block device that logs every program and erase, so each prefix of the log is the
# flash as a power cut at that moment left it (and half of a program: a torn one).
LFS = COMMON + r"""
BS = 512
NBLOCKS = 128


class Flash:
    def __init__(self, data):
        self.data = data
        self.log = None

    def readblocks(self, block, buf, off=0):
        a = block * BS + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, block, buf, off=0):
        a = block * BS + off
        self.data[a:a + len(buf)] = buf
        if self.log is not None:
            self.log.append((a, bytes(buf)))

    def ioctl(self, op, arg):
        if op == 4:
            return NBLOCKS
        if op == 5:
            return BS
        if op == 6:
            self.data[arg * BS:(arg + 1) * BS] = b"\xff" * BS
            if self.log is not None:
                self.log.append((arg * BS, None))
            return 0
        return 0


live = Flash(bytearray(b"\xff" * (BS * NBLOCKS)))
os.VfsLfs2.mkfs(live)
base = bytes(live.data)
os.mount(os.VfsLfs2(live), "/flash")
live.log = []
KW = {"max_bytes": 16384, "segment_bytes": 1024, "ack_every": 3}
ob = Outbox("/flash/outbox", **KW)
# After each call: (ops so far, records appended, records acked); acks go oldest first, so
# the stored records are always all[acked:appended].
marks = [(len(live.log), 0, 0)]
appended = acked = 0
all_recs = []
for step in range(90):
    if step % 3 == 2:
        got = ob.peek(step % 4 + 1, 4096)  # acks of 1 to 4 records: several saves per segment
        acked += ob.ack(len(got))
    elif step % 4 == 0:
        batch = [(2, appended + k, body(appended + k, 30)) for k in range(3)]
        ob.append_many(batch)
        all_recs += batch
        appended += 3
    else:
        r = (1, appended, body(appended, 20 + step))
        ob.append(*r)
        all_recs.append(r)
        appended += 1
    marks.append((len(live.log), appended, acked))
ob.close()
marks.append((len(live.log), appended, acked))
print("OPS", len(live.log), "appended", appended, "acked", acked)

work = Flash(bytearray(base))
m = 0
images = 0
for k in range(len(live.log) + 1):
    for torn in (False, True):
        if torn and (k == len(live.log) or live.log[k][1] is None):
            continue
        work.data[:] = base
        for a, data in live.log[:k]:
            work.data[a:a + (BS if data is None else len(data))] = (
                b"\xff" * BS if data is None else data)
        if torn:
            a, data = live.log[k]
            half = len(data) // 2
            work.data[a:a + half] = data[:half]
        while m + 1 < len(marks) and marks[m + 1][0] <= k:
            m += 1
        # The call in progress at op k ran from marks[m] to marks[m + 1].
        before, after = marks[m], marks[min(m + 1, len(marks) - 1)]
        os.mount(os.VfsLfs2(work), "/c")
        ob = Outbox("/c/outbox", **KW)
        got = ob.peek(*ALL)
        seqs = [r[1] for r in got]
        ok = all(r == all_recs[r[1]] for r in got)
        ok = ok and seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else ok
        b = seqs[0] if seqs else None
        c = seqs[-1] + 1 if seqs else None
        if seqs:
            ok = ok and before[2] - (KW["ack_every"] - 1) <= b <= after[2]
            ok = ok and before[1] <= c <= after[1]
        else:
            ok = ok and before[1] <= after[2]
        ob.append(3, 10 ** 6, b"after")
        ok = ok and ob.peek(*ALL)[-1:] == [(3, 10 ** 6, b"after")]
        check("image %d torn %s" % (k, torn), ok, (before, after, seqs))
        os.umount("/c")
        images += 1
print("IMAGES", images)
print("DONE FAILED", len(FAILS))
"""

WRITER = COMMON + r"""
seq = int(sys.argv[1])
ob = Outbox("outbox", max_bytes=1 << 20, segment_bytes=512, ack_every=8)
for i in range(20000):
    ob.append(1, seq, body(seq, 10 + seq % 40))
    print("A", seq)
    seq += 1
    if i % 4 == 3:
        got = ob.peek(5, 4096)
        n = len(got) - (i % 3 == 0)
        if n > 0:
            print("P", got[n - 1][1])
            ob.ack(n)
            print("K", got[n - 1][1])
"""

CHECKER = COMMON + r"""
ob = Outbox("outbox", max_bytes=1 << 20, segment_bytes=512, ack_every=8)
got = ob.peek(*ALL)
bad = [r[1] for r in got if r != (1, r[1], body(r[1], 10 + r[1] % 40))]
print(ob.stats["dropped"], ob.stats["torn"], ob.stats["skipped_bytes"])
print("RESULT", bad, [r[1] for r in got])
"""


def compile_modules(target: Path) -> None:
    mpy_cross = Path(micropython_binary()).parent / "mpy-cross"
    for module in MODULES:
        out = (target / module).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(mpy_cross), str(REPO / "firmware" / module), "-o", str(out)],
                       check=True)


def firmware_path(build: str, tmp_path: Path) -> Path:
    if build == "source":
        return REPO / "firmware"
    compile_modules(tmp_path / "mpy")
    return tmp_path / "mpy"


def run_script(script: str, cwd: Path, firmware: Path, *args: str,
               heap: str | None = None, timeout: float = 120) -> str:
    (cwd / "script.py").write_text(script)
    cmd = [micropython_binary(), *(["-X", f"heapsize={heap}"] if heap else []), "script.py"]
    result = subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True,
                            env=dict(os.environ, MICROPYPATH=f"{firmware}:.frozen"),
                            timeout=timeout, check=False)
    output = result.stdout + result.stderr  # MicroPython prints tracebacks to stdout
    assert result.returncode == 0, output
    return output


@pytest.mark.parametrize("build", ["source", "mpy"])
def test_outbox_behaviour_under_micropython(build: str, tmp_path: Path) -> None:
    output = run_script(BEHAVIOUR, tmp_path, firmware_path(build, tmp_path))
    assert output.strip().splitlines()[-1] == "DONE FAILED 0", output


def test_power_cut_at_every_littlefs_write(tmp_path: Path) -> None:
    output = run_script(LFS, tmp_path, firmware_path("mpy", tmp_path), timeout=300)
    print(output)
    lines = output.strip().splitlines()
    assert lines[-1] == "DONE FAILED 0", output
    ops = int(lines[0].split()[1])
    assert ops > 100 and int(lines[-2].split()[1]) > ops  # every op, most also torn


def test_sigkill_while_appending_and_acking(tmp_path: Path) -> None:
    firmware = firmware_path("mpy", tmp_path)
    (tmp_path / "writer.py").write_text(WRITER)
    (tmp_path / "checker.py").write_text(CHECKER)
    env = dict(os.environ, MICROPYPATH=f"{firmware}:.frozen")
    rnd = random.Random(int(os.environ.get("OUTBOX_KILL_SEED", "7")))
    start, acked_before = 0, 0
    for round_ in range(KILL_ROUNDS):
        proc = subprocess.Popen([micropython_binary(), "writer.py", str(start)], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        assert proc.stdout is not None
        target = rnd.randrange(1, 800)
        deadline = time.monotonic() + 30
        lines = []
        try:
            while len(lines) < target and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break  # the writer ended by itself: an error (its output says which)
                lines.append(line)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        rest = proc.stdout.read()
        proc.stdout.close()
        assert len(lines) == target, "".join(lines) + rest
        whole = [ln.split() for ln in (lines + rest.splitlines(keepends=True))
                 if ln.endswith("\n")]  # a line cut by the kill is not a confirmation
        assert all(w[0] in "APK" and len(w) == 2 for w in whole), whole
        appended = [int(w[1]) for w in whole if w[0] == "A"]
        acked = [int(w[1]) for w in whole if w[0] == "K"]
        in_flight = [int(w[1]) for w in whole if w[0] == "P"]
        last_a = appended[-1] if appended else start - 1
        last_k = acked[-1] if acked else acked_before - 1
        last_p = max(in_flight[-1] if in_flight else -1, last_k)

        check = subprocess.run([micropython_binary(), "checker.py"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=30, check=False)
        out = check.stdout + check.stderr
        assert check.returncode == 0 and "RESULT" in out, out
        dropped, torn, skipped = map(int, out.splitlines()[0].split())
        bad, seqs = (json.loads(part) for part in
                     out.split("RESULT ", 1)[1].strip().replace("] [", "]|[").split("|"))
        context = (round_, target, last_a, last_k, last_p, seqs[:3], seqs[-3:], out[:200])
        assert bad == [] and dropped == 0, context  # no corrupt record is ever returned
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True, context
        if seqs:
            # Every confirmed append is there, plus at most the one being written.
            assert last_a <= seqs[-1] <= last_a + 1, context
            # Acked records come back only inside the window (ack_every - 1) before the cut.
            assert last_k + 1 - 7 <= seqs[0] <= last_p + 1, context
        else:
            assert last_a <= last_p, context
        print(f"round {round_}: {target} lines, pending {len(seqs)}, torn {torn}/{skipped} B")
        start = max(last_a, seqs[-1] if seqs else -1) + 1
        acked_before = seqs[0] if seqs else start


MEASURE = COMMON + r"""
import time

KIND = sys.argv[1]
if KIND == "lfs":
    BS = 4096


    class Flash:
        def __init__(self, n):
            self.data = bytearray(b"\xff" * (BS * n))
            self.n = n
            self.progs = self.prog_bytes = self.erases = 0

        def readblocks(self, block, buf, off=0):
            a = block * BS + off
            buf[:] = self.data[a:a + len(buf)]

        def writeblocks(self, block, buf, off=0):
            a = block * BS + off
            self.data[a:a + len(buf)] = buf
            self.progs += 1
            self.prog_bytes += len(buf)

        def ioctl(self, op, arg):
            if op == 4:
                return self.n
            if op == 5:
                return BS
            if op == 6:
                self.erases += 1
            return 0


    flash = Flash(40)  # 160 KB: the outbox's 64 KB and room for littlefs to move blocks
    os.VfsLfs2.mkfs(flash)
    os.mount(os.VfsLfs2(flash), "/flash")
    D = "/flash/outbox"
else:
    flash = None
    D = "outbox"


def wear(label, n):
    if flash is not None:
        print("BENCH outbox_lfs_%s_prog_bytes_per_record %d B" % (label, flash.prog_bytes // n))
        print("BENCH outbox_lfs_%s_erases_per_1000_records %d" % (label, flash.erases * 1000 // n))
        flash.progs = flash.prog_bytes = flash.erases = 0


def rate(name, n, t0):
    dt = time.ticks_diff(time.ticks_us(), t0)
    print("BENCH outbox_%s_%s %d per_s" % (KIND, name, n * 1000000 // max(dt, 1)))


gc.collect()
heap0 = gc.mem_alloc()
ob = Outbox(D)  # defaults: 64 KB, 4 KB segments, ack_every 16
payload = body(0, 100)  # a telemetry entry's size
if flash is not None:
    flash.progs = flash.prog_bytes = flash.erases = 0  # count from here: not mkfs/mkdir
t0 = time.ticks_us()
for s in range(200):
    ob.append(1, s, payload)
rate("append", 200, t0)
wear("append", 200)
t0 = time.ticks_us()
for b in range(20):
    ob.append_many([(1, 200 + b * 10 + k, payload) for k in range(10)])
rate("append_many10_records", 200, t0)
wear("append_many10", 200)
n = 0
t0 = time.ticks_us()
for _ in range(100):
    got = ob.peek(10, 4096)
    n += ob.ack(len(got))
rate("peek_ack10_records", n, t0)
wear("ack", max(n, 1))
gc.collect()
print("BENCH outbox_%s_heap_empty %d B" % (KIND, gc.mem_alloc() - heap0))
for s in range(600):  # fill to the bound: 16 segments held
    ob.append(1, 10000 + s, payload)
ob.close()
del ob
gc.collect()
heap1 = gc.mem_alloc()
t0 = time.ticks_us()
ob = Outbox(D)
dt = time.ticks_diff(time.ticks_us(), t0)
gc.collect()
print("BENCH outbox_%s_open_scan_ms %d.%03d records %d segments %d dropped_so_far %d" % (
    KIND, dt // 1000, dt % 1000, ob.pending, ob.stats["segments"], ob.dropped))
print("BENCH outbox_%s_heap_full %d B" % (KIND, gc.mem_alloc() - heap1))
gc.collect()
if flash is None:  # the RAM flash allocates on each block access: measure on posix only
    gc.disable()
a0 = gc.mem_alloc()
for s in range(20):
    ob.append(1, 20000 + s, payload)
a1 = gc.mem_alloc()
ob.append_many([(1, 30000 + k, payload) for k in range(10)])
a2 = gc.mem_alloc()
got = ob.peek(10, 4096)
ob.ack(len(got))
a3 = gc.mem_alloc()
gc.enable()
if flash is None:
    print("BENCH outbox_%s_alloc_per_append %d B" % (KIND, (a1 - a0) // 20))
    print("BENCH outbox_%s_alloc_per_append_many10 %d B" % (KIND, a2 - a1))
    print("BENCH outbox_%s_alloc_per_peek_ack10 %d B" % (KIND, a3 - a2))
print("DONE FAILED", len(FAILS))
"""


@pytest.mark.parametrize("fs", ["posix", "lfs"])
def test_throughput_heap_and_flash_writes(fs: str, tmp_path: Path) -> None:
    """Figures for the report; the test itself asserts only that the outbox works within a
    64 KB heap (from .mpy, the shipped form) and allocates per call, not per byte held."""
    heap = "64K" if fs == "posix" else "512K"  # the RAM flash itself needs 160 KB of heap
    output = run_script(MEASURE, tmp_path, firmware_path("mpy", tmp_path), fs, heap=heap)
    print(output)
    assert output.strip().splitlines()[-1] == "DONE FAILED 0", output
    bench = {ln.split()[1]: int(ln.split()[2].split(".")[0]) for ln in output.splitlines()
             if ln.startswith("BENCH")}
    assert bench[f"outbox_{fs}_heap_full"] < 4000  # ~ per-segment bookkeeping only
    if fs == "posix":
        assert bench["outbox_posix_alloc_per_append"] < 600  # one buffer per record
