"""Flash outbox: a model-based property test over random sequences of appends, peeks, acks,
reboots, power cuts and decaying bytes."""

from __future__ import annotations

import binascii
import shutil
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sensornode.outbox import Outbox
from sensornode.outbox_segment import HEADER

from testkit.outbox_helpers import ALL, Record, no_stray_files, on_flash, seg_files

__all__ = ["no_stray_files"]  # an autouse fixture, imported for pytest

SEGMENT, MAX, ACK_EVERY = 256, 1024, 3


def locate(directory: Path) -> dict[int, tuple[Path, int, int]]:
    """seq -> (file, start, end) of every whole record on flash, by a reader written apart
    from the module's."""
    where = {}
    for path in seg_files(directory):
        data = path.read_bytes()
        pos = 0
        while pos + HEADER <= len(data):
            _, _, _, length, seq, crc = struct.unpack_from("<2sBBHQI", data, pos)
            end = pos + HEADER + length
            body = data[pos:pos + 14] + data[pos + HEADER:end]
            if end > len(data) or binascii.crc32(body) != crc:
                break  # the module skips the rest of this file too
            where[seq] = (path, pos, end)
            pos = end
    return where
payloads = st.binary(min_size=0, max_size=90)


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-prop-"))
        self.ob = self.open()
        self.model: list[Record] = []  # unacked, oldest first
        self.acked: list[Record] = []  # in ack order
        self.peeked: list[Record] = []
        self.seq = 0

    def open(self) -> Outbox:
        return Outbox(str(self.dir / "ob"), max_bytes=MAX, segment_bytes=SEGMENT,
                      ack_every=ACK_EVERY)

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def store(self, bodies: list[bytes], kind: int, many: bool, cut: int | None) -> None:
        batch = []
        for body in bodies:
            batch.append((kind, self.seq, body))
            self.seq += 1
        before = {p.name: p.stat().st_size for p in seg_files(self.dir / "ob")}
        dropped = self.ob.dropped
        if many:
            self.ob.append_many(batch)
        else:
            for r in batch:
                self.ob.append(*r)
        delta = self.ob.dropped - dropped
        assert delta <= len(self.model)  # only older records are dropped
        self.model = self.model[delta:] + batch
        if cut is None or not batch:
            return
        # Power cut inside the last write call: it went to the newest segment file.
        newest = seg_files(self.dir / "ob")[-1]
        start = before.get(newest.name, 0)
        data = newest.read_bytes()
        wrote = len(data) - start
        offset = cut % wrote
        newest.write_bytes(data[:start + offset])
        # The records of that write are the newest ones; keep those wholly before the cut.
        sizes, in_write = 0, 0
        for r in reversed(self.model):
            if sizes == wrote:
                break
            sizes += HEADER + len(r[2])
            in_write += 1
        assert sizes == wrote
        first = len(self.model) - in_write
        kept, pos = 0, 0
        for r in self.model[first:]:
            pos += HEADER + len(r[2])
            if pos > offset:
                break
            kept += 1
        assert in_write - kept <= (len(batch) if many else 1)  # at most the write in progress
        self.model = self.model[:first + kept]
        self.reboot(clean=False)

    @rule(body=payloads, kind=st.integers(0, 255), cut=st.none() | st.integers(0, 10**6))
    def append(self, body: bytes, kind: int, cut: int | None) -> None:
        self.store([body], kind, False, cut)

    @rule(bodies=st.lists(payloads, max_size=6), cut=st.none() | st.integers(0, 10**6))
    def append_many(self, bodies: list[bytes], cut: int | None) -> None:
        self.store(bodies, 2, True, cut)

    @rule(n=st.integers(0, 8), max_bytes=st.integers(0, 300))
    def peek(self, n: int, max_bytes: int) -> None:
        got = self.ob.peek(n, max_bytes)
        expected: list[Record] = []
        used = 0
        for r in self.model[:n]:
            if expected and used + len(r[2]) > max_bytes:
                break
            expected.append(r)
            used += len(r[2])
        assert got == expected
        self.peeked = got

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        k = data.draw(st.integers(0, len(self.peeked)))
        retired = 0
        for r in self.peeked[:k]:
            if self.model and self.model[0] == r:
                self.acked.append(self.model.pop(0))
                retired += 1
        assert self.ob.ack(k) == retired
        self.peeked = self.peeked[k:]

    @rule(clean=st.booleans())
    def reboot(self, clean: bool) -> None:
        if clean:
            self.ob.close()
        self.ob = self.open()
        found = self.ob.pending  # by the boot scan alone
        got = self.ob.peek(*ALL)
        assert len(got) == found
        self.peeked = got
        again = len(got) - len(self.model)
        assert 0 <= again <= (0 if clean else ACK_EVERY - 1)
        assert got[again:] == self.model
        if again:  # sent again: the most recently acked records, in order
            assert got[:again] == self.acked[-again:]
            del self.acked[-again:]
        self.model = got[:again] + self.model

    @rule(data=st.data(), by_peek=st.booleans())
    def decay(self, data: st.DataObject, by_peek: bool) -> None:
        """A byte of a pending record rots: that record and the rest of its segment are never
        returned, whether the boot scan or a later peek finds it."""
        if not self.model:
            return
        target = data.draw(st.sampled_from(self.model))
        where = locate(self.dir / "ob")
        path, start, end = where[target[1]]
        pos = data.draw(st.integers(start, end - 1))
        blob = bytearray(path.read_bytes())
        blob[pos] ^= data.draw(st.integers(1, 255))
        path.write_bytes(bytes(blob))
        self.model = [r for r in self.model
                      if not (where[r[1]][0] == path and where[r[1]][1] >= start)]
        if by_peek:
            self.peek(10**6, 10**9)
        else:
            self.reboot(clean=True)

    @invariant()
    def accounting(self) -> None:
        assert self.ob.pending == len(self.model)
        assert self.ob.pending_bytes == sum(HEADER + len(r[2]) for r in self.model)
        assert self.ob.stats["bytes"] == on_flash(self.dir / "ob") <= MAX
        assert all(p.stat().st_size <= SEGMENT for p in seg_files(self.dir / "ob"))


TestOutboxProperties = OutboxMachine.TestCase
TestOutboxProperties.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
