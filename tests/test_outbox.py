"""Flash outbox: order, rotation, ack persistence, the size bound, power cuts at every byte,
corruption anywhere, and a model-based property test over random operation sequences."""

from __future__ import annotations

import binascii
import os
import random
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sensornode import outbox as outbox_module
from sensornode.outbox import Outbox
from sensornode.outbox_segment import HEADER, crc32_sw, decode_ack, encode_ack

Record = tuple[int, int, bytes]
ALL = (10**6, 10**9)  # peek arguments that return everything


def rec(seq: int, size: int = 20, kind: int = 1) -> Record:
    return kind, seq, bytes((seq * 7 + i) % 256 for i in range(size))


def recs(first: int, count: int, size: int = 20) -> list[Record]:
    return [rec(s, size) for s in range(first, first + count)]


def peek_all(ob: Outbox) -> list[Record]:
    return ob.peek(*ALL)


def seg_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"), key=lambda p: int(p.stem))


def on_flash(directory: Path) -> int:
    return sum(p.stat().st_size for p in seg_files(directory))


class CountingFile:
    def __init__(self, f: Any, log: list[tuple[str, int]]) -> None:
        self._f, self._log = f, log

    def write(self, data: Any) -> Any:
        self._log.append(("write", len(data)))
        return self._f.write(data)

    def flush(self) -> None:
        self._log.append(("flush", 0))
        self._f.flush()

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._f.read(n)
        self._log.append(("read", len(data)))
        return data

    def readinto(self, buf: Any) -> Any:
        got = self._f.readinto(buf)
        self._log.append(("read", got))
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


@pytest.fixture
def io_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    log: list[tuple[str, int]] = []

    def counting_open(path: str, mode: str = "r") -> CountingFile:
        return CountingFile(open(path, mode), log)

    monkeypatch.setattr(outbox_module, "open", counting_open, raising=False)
    return log


# -- basics -------------------------------------------------------------------------------


def test_append_peek_ack_in_order(tmp_path: Path) -> None:
    ob = Outbox(str(tmp_path / "ob"))
    ob.append(1, 7, b"first")
    ob.append(2, 8, '{"v":1}')  # str payloads are stored as UTF-8
    ob.append_many([(1, 9, b""), (3, 10, b"x" * 100)])
    expected = [(1, 7, b"first"), (2, 8, b'{"v":1}'), (1, 9, b""), (3, 10, b"x" * 100)]
    assert peek_all(ob) == expected
    assert peek_all(ob) == expected  # peek removes nothing
    assert (ob.pending, ob.pending_bytes) == (4, 4 * HEADER + 5 + 7 + 100)
    assert ob.ack(2) == 2
    assert peek_all(ob) == expected[2:]
    assert ob.ack(1) == 1
    assert ob.ack(1) == 1  # the rest of the same peek, in pieces
    assert ob.pending == 0 and peek_all(ob) == []
    assert seg_files(tmp_path / "ob") == []  # a drained outbox holds no segment


def test_peek_limits(tmp_path: Path) -> None:
    ob = Outbox(str(tmp_path / "ob"))
    ob.append_many(recs(0, 10, size=30))
    assert [r[1] for r in ob.peek(3, 10**6)] == [0, 1, 2]
    assert [r[1] for r in ob.peek(100, 95)] == [0, 1, 2]  # 3 x 30 payload bytes fit in 95
    assert [r[1] for r in ob.peek(100, 5)] == [0]  # one record even if it is over max_bytes
    with pytest.raises(ValueError):
        ob.ack(2)  # only one was peeked
    assert ob.ack(1) == 1
    assert ob.peek(0, 100) == []


def test_bad_records_are_refused_whole(tmp_path: Path) -> None:
    ob = Outbox(str(tmp_path / "ob"), max_bytes=1024, segment_bytes=256)
    for bad in [(256, 1, b""), (-1, 1, b""), (1, -1, b""), (1, 2**64, b""),
                (1, 1, b"x" * (256 - HEADER + 1)), (1.5, 1, b""), (1, 2.0, b"")]:
        with pytest.raises(ValueError):
            ob.append_many([(1, 0, b"ok"), bad])  # type: ignore[list-item]
    assert ob.pending == 0 and seg_files(tmp_path / "ob") == []
    ob.append(255, 2**64 - 1, b"x" * (256 - HEADER))  # the limits themselves are fine
    assert peek_all(ob) == [(255, 2**64 - 1, b"x" * (256 - HEADER))]
    with pytest.raises(ValueError):
        Outbox(str(tmp_path / "b"), max_bytes=100, segment_bytes=200)
    with pytest.raises(ValueError):
        Outbox(str(tmp_path / "c"), ack_every=0)


def test_one_write_and_one_flush_per_append(tmp_path: Path, io_log: list[tuple[str, int]]) -> None:
    ob = Outbox(str(tmp_path / "ob"), segment_bytes=4096)
    io_log.clear()
    ob.append(1, 0, b"x" * 50)
    assert io_log == [("write", HEADER + 50), ("flush", 0)]
    io_log.clear()
    ob.append_many(recs(1, 10))  # a cycle's readings: one write
    assert io_log == [("write", 10 * (HEADER + 20)), ("flush", 0)]


def test_rotation(tmp_path: Path, io_log: list[tuple[str, int]]) -> None:
    d = tmp_path / "ob"
    ob = Outbox(str(d), max_bytes=10_000, segment_bytes=200)
    records = recs(0, 30)  # 38 bytes each: 5 per segment
    for r in records[:12]:
        ob.append(*r)
    assert [p.name for p in seg_files(d)] == ["0.seg", "1.seg", "2.seg"]
    assert [p.stat().st_size for p in seg_files(d)] == [190, 190, 76]
    io_log.clear()
    ob.append_many(records[12:20])  # 3 fit in 2.seg, 5 fill 3.seg
    assert [e for e in io_log if e[0] == "write"] == [("write", 3 * 38), ("write", 5 * 38)]
    assert all(p.stat().st_size <= 200 for p in seg_files(d))
    assert peek_all(ob) == records[:20]
    ob.close()
    ob = Outbox(str(d), max_bytes=10_000, segment_bytes=200)
    ob.append_many(records[20:])
    assert peek_all(ob) == records
    assert int(seg_files(d)[-1].stem) == 5  # numbers only grow


def test_fully_acked_segments_are_deleted_and_numbers_keep_growing(tmp_path: Path) -> None:
    d = tmp_path / "ob"
    ob = Outbox(str(d), max_bytes=10_000, segment_bytes=200, ack_every=100)
    ob.append_many(recs(0, 12))
    peek_all(ob)
    ob.ack(5)
    assert [p.name for p in seg_files(d)] == ["1.seg", "2.seg"]
    ob.ack(7)
    assert seg_files(d) == []
    ob.append(1, 12, b"after")
    assert [p.name for p in seg_files(d)] == ["3.seg"]


# -- ack persistence ----------------------------------------------------------------------


@pytest.mark.parametrize("acked", range(21))
def test_acked_records_after_reboot_without_close(tmp_path: Path, acked: int) -> None:
    """Exactly the acks since the last save (< ack_every, the most recent ones) come back."""
    d = str(tmp_path / "ob")
    records = recs(0, 20)
    ob = Outbox(d, ack_every=4)
    ob.append_many(records)
    for _ in range(acked):
        ob.peek(1, 10**6)
        ob.ack(1)
    saved = acked // 4 * 4 if acked < 20 else 20  # the last ack deletes the segment
    assert ob.stats["ack_saves"] == min(acked // 4, 4)
    del ob  # power cut: no close()
    assert peek_all(Outbox(d, ack_every=4)) == records[saved:]
    assert saved >= acked - 3


def test_close_saves_the_ack_position(tmp_path: Path) -> None:
    d = str(tmp_path / "ob")
    ob = Outbox(d, ack_every=1000)
    ob.append_many(recs(0, 10))
    peek_all(ob)
    ob.ack(3)
    ob.close()
    assert peek_all(Outbox(d, ack_every=1000)) == recs(3, 7)


def test_acks_spanning_segments_resend_only_inside_the_first(tmp_path: Path) -> None:
    d = str(tmp_path / "ob")
    ob = Outbox(d, max_bytes=10_000, segment_bytes=200, ack_every=10)
    ob.append_many(recs(0, 15))  # segments of 5
    peek_all(ob)
    ob.ack(7)  # segment 0 deleted; 2 acked in segment 1, not saved
    assert peek_all(Outbox(d, max_bytes=10_000, segment_bytes=200)) == recs(5, 10)


def test_damaged_or_stale_ack_file_resends_instead_of_losing(tmp_path: Path) -> None:
    d = tmp_path / "ob"
    ob = Outbox(str(d), ack_every=1)
    ob.append_many(recs(0, 5))
    peek_all(ob)
    ob.ack(2)
    ob.close()
    assert decode_ack((d / "ack").read_bytes()) == (0, 2 * (HEADER + 20))
    data = bytearray((d / "ack").read_bytes())
    data[5] ^= 1
    (d / "ack").write_bytes(bytes(data))
    (d / "ack.tmp").write_bytes(b"half a save")
    ob = Outbox(str(d))
    assert peek_all(ob) == recs(0, 5)
    assert not (d / "ack.tmp").exists()
    # An ack position beyond the file (cannot happen by itself) also means: resend.
    (d / "ack").write_bytes(encode_ack(0, 10_000))
    assert peek_all(Outbox(str(d))) == recs(0, 5)


# -- the bound ----------------------------------------------------------------------------


def test_drops_oldest_segments_and_counts(tmp_path: Path) -> None:
    d = tmp_path / "ob"
    ob = Outbox(str(d), max_bytes=800, segment_bytes=200)  # 4 segments of 5 records
    records = recs(0, 60)  # 38 bytes each
    for r in records:
        before, dropped = ob.stats["bytes"], ob.dropped
        ob.append(*r)
        assert on_flash(d) == ob.stats["bytes"] <= 800
        kept = peek_all(ob)
        assert kept == records[ob.dropped:r[1] + 1]  # the oldest go; never the newest
        if ob.dropped > dropped:
            assert ob.dropped - dropped == 5  # one whole segment
            assert before + 38 > 800  # and only when needed
            assert ob.dropped_last_seq == ob.dropped - 1
    assert ob.dropped == 40 and ob.stats["dropped"] == 40


def test_drop_between_peek_and_ack(tmp_path: Path) -> None:
    ob = Outbox(str(tmp_path / "ob"), max_bytes=400, segment_bytes=200)
    ob.append_many(recs(0, 10))
    assert len(peek_all(ob)) == 10
    ob.append_many(recs(10, 5))  # drops segment 0 (records 0..4), which was in flight
    assert ob.dropped == 5
    assert ob.ack(10) == 5  # only 5..9 were still there to retire
    assert peek_all(ob) == recs(10, 5)


def test_lowered_bound_applies_at_open(tmp_path: Path) -> None:
    d = str(tmp_path / "ob")
    Outbox(d, max_bytes=2000, segment_bytes=200).append_many(recs(0, 40))
    ob = Outbox(d, max_bytes=400, segment_bytes=200)
    assert peek_all(ob) == recs(30, 10) and ob.dropped == 30 and ob.dropped_last_seq == 29


# -- power cuts and corruption ------------------------------------------------------------


def build(d: Path, batches: list[list[Record]]) -> tuple[Path, int]:
    """Append each batch with one call; return the newest segment and where its last write
    began."""
    ob = Outbox(str(d), max_bytes=10_000, segment_bytes=2000)
    before = 0
    for batch in batches:
        before = on_flash(d)
        ob.append_many(batch)
    ob.close()
    return seg_files(d)[-1], before


@pytest.mark.parametrize("last_write", ["append", "append_many"])
def test_power_cut_at_every_byte_of_the_last_write(tmp_path: Path, last_write: str) -> None:
    first = [[r] for r in recs(0, 4, size=9)]
    last = [rec(4, 9)] if last_write == "append" else recs(4, 3, size=9)
    pristine = tmp_path / "pristine"
    seg, start = build(pristine, [*first, last])
    full = seg.read_bytes()
    assert len(full) == start + len(last) * (HEADER + 9)
    for cut in range(start, len(full)):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(pristine, d)
        (d / seg.name).write_bytes(full[:cut])
        ob = Outbox(str(d), max_bytes=10_000, segment_bytes=2000)
        complete = (cut - start) // (HEADER + 9)  # records of the cut write that made it
        expected = [r for b in first for r in b] + last[:complete]
        assert peek_all(ob) == expected, cut
        torn = (cut - start) % (HEADER + 9)
        assert (ob.stats["torn"], ob.stats["skipped_bytes"]) == (int(torn > 0), torn)
        ob.append(1, 100, b"after the cut")
        assert peek_all(ob) == [*expected, (1, 100, b"after the cut")]
        again = Outbox(str(d), max_bytes=10_000, segment_bytes=2000)
        assert peek_all(again) == [*expected, (1, 100, b"after the cut")]
        assert len(seg_files(d)) == 1 + (torn > 0)  # a torn segment takes no more appends
        shutil.rmtree(d)


def test_corrupt_byte_anywhere_hides_that_record_and_the_rest_of_its_segment(
        tmp_path: Path) -> None:
    records = recs(0, 5, size=7)
    pristine = tmp_path / "pristine"
    seg, _ = build(pristine, [records])
    full = seg.read_bytes()
    size = HEADER + 7
    for pos in range(len(full)):
        for flip in (0x01, 0x80, 0xFF):
            data = bytearray(full)
            data[pos] ^= flip
            d = tmp_path / "c"
            shutil.copytree(pristine, d)
            (d / seg.name).write_bytes(bytes(data))
            ob = Outbox(str(d), max_bytes=10_000, segment_bytes=2000)
            assert ob.pending == pos // size  # found by the boot scan
            assert peek_all(ob) == records[:pos // size], (pos, flip)
            assert ob.stats["skipped_bytes"] == len(full) - pos // size * size
            shutil.rmtree(d)


@pytest.mark.parametrize("filler", [b"\x00", b"\xff"])
def test_trailing_erased_or_zeroed_bytes_are_skipped(tmp_path: Path, filler: bytes) -> None:
    d = tmp_path / "ob"
    seg, _ = build(d, [recs(0, 3)])
    with seg.open("ab") as f:
        f.write(filler * 100)
    ob = Outbox(str(d), max_bytes=10_000, segment_bytes=2000)
    assert peek_all(ob) == recs(0, 3) and ob.stats["skipped_bytes"] == 100
    ob.append(*rec(3))
    assert peek_all(Outbox(str(d), max_bytes=10_000, segment_bytes=2000)) == recs(0, 4)


def test_corruption_after_boot_is_caught_by_peek(tmp_path: Path) -> None:
    d = tmp_path / "ob"
    ob = Outbox(str(d), max_bytes=10_000, segment_bytes=200)
    ob.append_many(recs(0, 8))  # 5 in 0.seg, 3 in 1.seg
    data = bytearray((d / "0.seg").read_bytes())
    data[2 * 38 + HEADER + 3] ^= 0x10  # payload of record 2
    (d / "0.seg").write_bytes(bytes(data))
    assert peek_all(ob) == recs(0, 2) + recs(5, 3)
    assert ob.pending == 5 and ob.stats["torn"] == 1
    ob.append(*rec(8))  # still appends (into 1.seg)
    assert peek_all(ob) == recs(0, 2) + recs(5, 4)
    ob.ack(2)
    ob.ack(4)
    assert ob.pending == 0 and seg_files(d) == []


def test_read_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "ob"
    ob = Outbox(str(d), max_bytes=10_000, segment_bytes=200)
    ob.append_many(recs(0, 8))  # 5 in 0.seg, 3 in 1.seg
    real_open = open

    def failing_open(path: str, mode: str = "r") -> Any:
        if "r" in mode:
            raise OSError(5, "EIO")
        return real_open(path, mode)

    monkeypatch.setattr(outbox_module, "open", failing_open, raising=False)
    assert ob.peek(*ALL) == [] and ob.pending == 8  # a read error loses nothing
    monkeypatch.undo()
    assert peek_all(ob) == recs(0, 8)
    (d / "0.seg").unlink()  # a segment file vanishes: its records are gone, the rest are not
    assert peek_all(ob) == recs(5, 3) and ob.pending == 3 and ob.stats["torn"] == 1
    assert ob.ack(3) == 3 and seg_files(d) == []


def test_write_failure_raises_and_the_outbox_carries_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "ob"
    ob = Outbox(str(d))
    ob.append(*rec(0))
    real_open = open

    class Full:
        def __init__(self, f: Any) -> None:
            self.f = f

        def write(self, data: bytes) -> int:
            self.f.write(bytes(data)[:7])  # a short write, then the flash is full
            raise OSError(28, "ENOSPC")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

    ob.close()  # the next append reopens its file
    monkeypatch.setattr(outbox_module, "open",
                        lambda p, m="r": Full(real_open(p, m)) if "a" in m else real_open(p, m),
                        raising=False)
    with pytest.raises(OSError):
        ob.append(*rec(1))
    monkeypatch.undo()
    assert ob.pending == 1 and ob.stats["errors"] == 1
    ob.append(*rec(2))
    assert peek_all(ob) == [rec(0), rec(2)]
    assert peek_all(Outbox(str(d))) == [rec(0), rec(2)]


def test_boot_scan_reads_each_byte_once_in_small_pieces(
        tmp_path: Path, io_log: list[tuple[str, int]]) -> None:
    d = tmp_path / "ob"
    ob = Outbox(str(d), max_bytes=1 << 20, segment_bytes=256)
    for i in range(300):
        ob.append_many(recs(i * 5, 5, size=30))
    ob.close()
    total = on_flash(d)
    assert len(seg_files(d)) >= 300
    io_log.clear()
    ob = Outbox(str(d), max_bytes=1 << 20, segment_bytes=256)
    reads = [n for op, n in io_log if op == "read"]
    assert sum(reads) == total and max(reads) <= 128
    assert ob.pending == 1500


def test_software_crc_matches_binascii() -> None:
    rnd = random.Random(4)
    for n in (0, 1, 2, 15, 16, 17, 100, 1000):
        data = bytes(rnd.randrange(256) for _ in range(n))
        assert crc32_sw(data) == binascii.crc32(data)
        assert crc32_sw(data, 12345) == binascii.crc32(data, 12345)


# -- model-based property test ------------------------------------------------------------

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


@pytest.fixture(autouse=True)
def _no_stray_files() -> Iterator[None]:
    cwd = set(os.listdir("."))
    yield
    assert set(os.listdir(".")) == cwd  # everything lives in tmp dirs
