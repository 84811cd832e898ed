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
    assert json.loads(path.read_text()) == {"reserved": 10}
    for _ in range(10):
        seq.take()
    assert json.loads(path.read_text()) == {"reserved": 10}
    seq.take()
    assert json.loads(path.read_text()) == {"reserved": 20}


def test_damaged_file_never_reuses_old_numbers(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    seq = Sequence(str(path), block=4)
    last = max(seq.take() for _ in range(100))
    path.write_text('{"reserved": ')  # torn write
    after = Sequence(str(path))
    assert after.first > last
    assert after.first >= int(time.time()) * 1000
