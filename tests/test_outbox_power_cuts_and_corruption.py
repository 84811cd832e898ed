"""Flash outbox: power cuts at every byte, corruption anywhere, read and write errors, and
the boot scan that finds what survived."""

from __future__ import annotations

import binascii
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from sensornode import outbox as outbox_module
from sensornode.outbox import Outbox
from sensornode.outbox_segment import HEADER, crc32_sw

from testkit.outbox_helpers import (
    ALL,
    Record,
    io_log,
    no_stray_files,
    on_flash,
    peek_all,
    rec,
    recs,
    seg_files,
)

__all__ = ["io_log", "no_stray_files"]  # fixtures, imported for pytest


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
        # The next boot's seqs continue after the newest record written, and after the one
        # the cut interrupted (taken, lost: the gateway is to report it).
        assert ob.boot_tail() == (expected[-1][1], torn > 0), cut
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
            # The records behind the bad one may have been sent: a boot must never be told
            # to continue at or below their seqs (the gateway would drop new readings).
            tail = ob.boot_tail()
            assert tail is None or tail[0] + tail[1] >= records[-1][1], (pos, flip, tail)
            shutil.rmtree(d)


@pytest.mark.parametrize("filler", [b"\x00", b"\xff"])
def test_trailing_erased_or_zeroed_bytes_are_skipped(tmp_path: Path, filler: bytes) -> None:
    d = tmp_path / "ob"
    seg, _ = build(d, [recs(0, 3)])
    with seg.open("ab") as f:
        f.write(filler * 100)
    ob = Outbox(str(d), max_bytes=10_000, segment_bytes=2000)
    assert peek_all(ob) == recs(0, 3) and ob.stats["skipped_bytes"] == 100
    # Not a cut write (that would end with a record's start): the node cannot tell what else
    # was there, so it does not continue its seqs from what it can read.
    assert ob.boot_tail() is None
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
