"""The flash outbox under the real MicroPython interpreter (from source and from .mpy): the
behaviour checks, and throughput, heap and flash-write figures (printed as BENCH lines). Power
cuts at every LittleFS write and SIGKILLs are in test_outbox_power_cuts_micropython.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil_tests.outbox_runner import COMMON, firmware_path, run_script

BEHAVIOUR = (
    COMMON
    + r"""
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
)


@pytest.mark.parametrize("build", ["source", "mpy"])
def test_outbox_behaviour_under_micropython(build: str, tmp_path: Path) -> None:
    output = run_script(BEHAVIOUR, tmp_path, firmware_path(build, tmp_path))
    assert output.strip().splitlines()[-1] == "DONE FAILED 0", output


MEASURE = (
    COMMON
    + r"""
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
)


@pytest.mark.parametrize("fs", ["posix", "lfs"])
def test_throughput_heap_and_flash_writes(fs: str, tmp_path: Path) -> None:
    """Figures for the report; the test itself asserts only that the outbox works within a
    64 KB heap (from .mpy, the shipped form) and allocates per call, not per byte held."""
    heap = "64K" if fs == "posix" else "512K"  # the RAM flash itself needs 160 KB of heap
    output = run_script(MEASURE, tmp_path, firmware_path("mpy", tmp_path), fs, heap=heap)
    print(output)
    assert output.strip().splitlines()[-1] == "DONE FAILED 0", output
    bench = {
        ln.split()[1]: int(ln.split()[2].split(".")[0])
        for ln in output.splitlines()
        if ln.startswith("BENCH")
    }
    assert bench[f"outbox_{fs}_heap_full"] < 4000  # ~ per-segment bookkeeping only
    if fs == "posix":
        assert bench["outbox_posix_alloc_per_append"] < 600  # one buffer per record
