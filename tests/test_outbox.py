"""Flash outbox: order, rotation, ack persistence and the size bound. Power cuts and
corruption are in test_outbox_power_cuts_and_corruption.py, the model-based property test in
test_outbox_properties.py."""

from __future__ import annotations

import binascii
import struct
from pathlib import Path

import pytest
from sensornode.outbox import Outbox
from sensornode.outbox_segment import HEADER, decode_ack, encode_ack

from testkit.outbox_helpers import (
    io_log,
    no_stray_files,
    on_flash,
    peek_all,
    recs,
    seg_files,
)

__all__ = ["io_log", "no_stray_files"]  # fixtures, imported for pytest


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
    # One save per 4 acks, and one when the outbox drains (it keeps the newest seq written).
    assert ob.stats["ack_saves"] == min(acked // 4, 4) + (acked == 20)
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
    assert decode_ack((d / "ack").read_bytes()) == (0, 2 * (HEADER + 20), 1)
    data = bytearray((d / "ack").read_bytes())
    data[5] ^= 1
    (d / "ack").write_bytes(bytes(data))
    (d / "ack.tmp").write_bytes(b"half a save")
    ob = Outbox(str(d))
    assert peek_all(ob) == recs(0, 5)
    assert not (d / "ack.tmp").exists()
    # An ack position beyond the file (cannot happen by itself) also means: resend.
    (d / "ack").write_bytes(encode_ack(0, 10_000, 0))
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


def test_a_drained_outbox_still_tells_the_newest_seq_written(tmp_path: Path) -> None:
    d = tmp_path / "ob"
    ob = Outbox(str(d))
    ob.append_many(recs(40, 3))
    peek_all(ob)
    ob.ack(3)
    assert not list(d.glob("*.seg"))
    # No close(): a power cut right after the drain.
    assert Outbox(str(d)).boot_tail() == (42, False)


def test_pending_records_tell_the_newest_seq_written(tmp_path: Path) -> None:
    d = tmp_path / "ob"
    ob = Outbox(str(d), segment_bytes=200)
    ob.append_many(recs(7, 12))  # several segments
    peek_all(ob)
    ob.ack(2)
    assert Outbox(str(d), segment_bytes=200).boot_tail() == (18, False)
    assert Outbox(str(tmp_path / "empty")).boot_tail() == (None, False)


def test_an_ack_file_of_the_first_format_is_still_read(tmp_path: Path) -> None:
    head = struct.pack("<2sQI", b"NA", 3, 36)
    old = head + struct.pack("<I", binascii.crc32(head))
    assert decode_ack(old) == (3, 36, None)
    assert decode_ack(old[:-1] + bytes([old[-1] ^ 1])) is None
