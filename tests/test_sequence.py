"""Per-node seq numbers keep increasing across reboots, with one flash write per block."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sensornode.sequence import Sequence


def test_seq_increases_across_reboots(tmp_path: Path) -> None:
    path = str(tmp_path / "seq.json")
    first = Sequence(path, block=4)
    taken = [first.take() for _ in range(6)]
    assert taken == [0, 1, 2, 3, 4, 5]
    rebooted = Sequence(path, block=4)
    assert rebooted.first > taken[-1]
    assert rebooted.take() == rebooted.first


def test_one_flash_write_per_block(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    seq = Sequence(str(path), block=10)
    assert json.loads(path.read_text()) == {"reserved": 10, "boot": 1}
    for _ in range(10):
        seq.take()
    assert json.loads(path.read_text()) == {"reserved": 10, "boot": 1}
    seq.take()
    assert json.loads(path.read_text()) == {"reserved": 20, "boot": 1}


def test_damaged_file_never_reuses_old_numbers(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    seq = Sequence(str(path), block=4)
    last = max(seq.take() for _ in range(100))
    path.write_text('{"reserved": ')  # torn write
    after = Sequence(str(path))
    assert after.first > last
    assert after.first >= int(time.time()) * 1000


def test_a_reboot_continues_right_after_the_newest_seq_the_outbox_wrote(tmp_path: Path) -> None:
    path = str(tmp_path / "seq.json")
    seq = Sequence(path, block=64)
    taken = [seq.take() for _ in range(10)]
    rebooted = Sequence(path, block=64, boot_tail=(taken[-1], False))
    assert (rebooted.last, rebooted.first, rebooted.take()) == (9, 10, 10)


def test_a_write_cut_by_a_power_cut_counts_as_taken(tmp_path: Path) -> None:
    path = str(tmp_path / "seq.json")
    seq = Sequence(path, block=64)
    for _ in range(10):
        seq.take()
    # seq 9 was being written when the power went: 8 is the newest on flash.
    rebooted = Sequence(path, block=64, boot_tail=(8, True))
    assert (rebooted.last, rebooted.first) == (9, 10)


def test_without_a_sure_answer_from_the_outbox_the_next_block_is_used(tmp_path: Path) -> None:
    path = str(tmp_path / "seq.json")
    seq = Sequence(path, block=64)
    for _ in range(70):  # a second block reserved: the mark is 128
        seq.take()
    for tail in (None, (None, False), (3, False), (200, False)):
        # None: the outbox cannot tell; (None, False): it holds nothing (wiped?); 3: older
        # than the last reservation; 200: past the mark, so not from this seq file.
        rebooted = Sequence(path, block=64, boot_tail=tail)
        assert rebooted.last is None, tail
        assert rebooted.first >= 128, tail
        path_mark = json.loads(Path(path).read_text())["reserved"]
        seq = rebooted
        assert path_mark == rebooted.first + 64


def test_a_lost_seq_file_with_an_outbox_left_is_not_a_first_boot(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    seq = Sequence(str(path), block=4)
    for _ in range(10):
        seq.take()
    path.unlink()
    after = Sequence(str(path), block=4, boot_tail=(9, False))
    assert after.last is None
    assert after.first >= int(time.time()) * 1000


def test_boots_are_counted_and_never_repeat(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    boots = [Sequence(str(path), boot_tail=(None, False) if i == 0 else (-1, False)).boot
             for i in range(3)]
    assert boots == [1, 2, 3]
    path.write_text(json.dumps({"reserved": 640}))  # a file from before the boot count
    assert Sequence(str(path)).boot == 641
