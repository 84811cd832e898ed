"""The flash outbox under the real MicroPython interpreter, cut off mid-write: power cuts at
every block-device write of LittleFS (the filesystem the boards use, on a RAM block device) and
SIGKILLs of a node appending and acking in a loop."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from hil_tests.outbox_runner import COMMON, firmware_path, run_script
from hil_tests.target import micropython_binary

KILL_ROUNDS = int(os.environ.get("OUTBOX_KILL_ROUNDS", "12"))  # `make soak` may raise it

# A RAM block device that logs every program and erase, so each prefix of the log is the
# flash as a power cut at that moment left it (and half of a program: a torn one).
LFS = (
    COMMON
    + r"""
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
)

WRITER = (
    COMMON
    + r"""
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
)

CHECKER = (
    COMMON
    + r"""
ob = Outbox("outbox", max_bytes=1 << 20, segment_bytes=512, ack_every=8)
got = ob.peek(*ALL)
bad = [r[1] for r in got if r != (1, r[1], body(r[1], 10 + r[1] % 40))]
print(ob.stats["dropped"], ob.stats["torn"], ob.stats["skipped_bytes"])
print("RESULT", bad, [r[1] for r in got])
"""
)


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
        proc = subprocess.Popen(
            [micropython_binary(), "writer.py", str(start)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
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
        whole = [
            ln.split() for ln in (lines + rest.splitlines(keepends=True)) if ln.endswith("\n")
        ]  # a line cut by the kill is not a confirmation
        assert all(w[0] in "APK" and len(w) == 2 for w in whole), whole
        appended = [int(w[1]) for w in whole if w[0] == "A"]
        acked = [int(w[1]) for w in whole if w[0] == "K"]
        in_flight = [int(w[1]) for w in whole if w[0] == "P"]
        last_a = appended[-1] if appended else start - 1
        last_k = acked[-1] if acked else acked_before - 1
        last_p = max(in_flight[-1] if in_flight else -1, last_k)

        check = subprocess.run(
            [micropython_binary(), "checker.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        out = check.stdout + check.stderr
        assert check.returncode == 0 and "RESULT" in out, out
        dropped, torn, skipped = map(int, out.splitlines()[0].split())
        bad, seqs = (
            json.loads(part)
            for part in out.split("RESULT ", 1)[1].strip().replace("] [", "]|[").split("|")
        )
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
