"""Signing commands at the gateway: key files, counters that never repeat, and signatures the
node's own cmdauth accepts."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from sensornode import cmdauth, protocol

from edge_gateway.signing import KeyFileError, KeyRing, Signer, parse_key, signature
from edge_gateway.store import Store

T0 = 1795300000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    ring = KeyRing(tmp_path / "keys")
    ring.create("bed-1")
    return ring


def test_create_writes_a_private_random_key_and_never_overwrites(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys")
    path = ring.create("bed-1")
    assert path == tmp_path / "keys" / "bed-1.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = ring.key("bed-1")
    assert len(key) == 32 and key != ring.key(ring.create("bed-2").stem)
    with pytest.raises(KeyFileError, match="bed-1 already has a key"):
        ring.create("bed-1")
    assert ring.key("bed-1") == key


def test_a_missing_key_file_names_the_file_and_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as raised:
        KeyRing(tmp_path).key("bed-7")
    assert str(raised.value) == (
        f"{tmp_path / 'bed-7.key'}: no key for node bed-7; make one with `neoterra keygen "
        "bed-7` (it writes this file) and put the same text in the node's cmd_key"
    )


@pytest.mark.parametrize(("text", "problem"), [
    ("ab" * 16, "got 32 characters;"),
    ("zz" * 32, "got 64 characters that are not all hex;"),
    ("", "got 0 characters that are not all hex;"),
])
def test_a_bad_key_file_is_named_without_echoing_its_text(tmp_path: Path, text: str,
                                                          problem: str) -> None:
    (tmp_path / "bed-1.key").write_text(text)
    with pytest.raises(KeyFileError) as raised:
        KeyRing(tmp_path).key("bed-1")
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'bed-1.key'}: must hold 64 hex digits"), message
    assert problem in message and "neoterra keygen" in message
    assert not text or text not in message


def test_key_file_text_may_have_surrounding_whitespace() -> None:
    assert parse_key("  " + "0f" * 32 + "\n", "k") == bytes([15] * 32)


def test_a_node_name_that_could_escape_the_key_directory_is_refused(keys: KeyRing) -> None:
    with pytest.raises(protocol.ProtocolError, match="node"):
        keys.key("../etc/passwd")


def test_counters_increase_per_node_and_survive_a_restart(tmp_path: Path, keys: KeyRing) -> None:
    clock = FakeClock()
    db = tmp_path / "gw.db"
    floor = int(T0 * 1000)
    with Store(db) as store:
        signer = Signer(store, keys, clock)
        assert [signer.next_counter("bed-1") for _ in range(3)] == [floor, floor + 1, floor + 2]
        assert signer.next_counter("bed-2") == floor
    clock.now = T0 - 3600  # the clock stepped back an hour: counters still go up
    with Store(db) as store:
        assert Signer(store, keys, clock).next_counter("bed-1") == floor + 3


def test_counters_jump_to_the_clock_so_a_lost_database_still_counts_above(
    tmp_path: Path, keys: KeyRing
) -> None:
    clock = FakeClock()
    with Store(tmp_path / "old.db") as store:
        before = Signer(store, keys, clock).next_counter("bed-1")
    clock.now += 1.0
    with Store(tmp_path / "new.db") as store:  # the SD card was replaced
        assert Signer(store, keys, clock).next_counter("bed-1") > before


def test_two_signers_on_one_database_never_share_a_counter(tmp_path: Path, keys: KeyRing) -> None:
    db = tmp_path / "gw.db"
    Store(db).close()
    taken: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        with Store(db) as store:
            signer = Signer(store, keys, FakeClock())
            mine = [signer.next_counter("bed-1") for _ in range(50)]
        with lock:
            taken.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert len(taken) == 200 and len(set(taken)) == 200


def test_a_signed_command_is_admitted_by_the_nodes_cmdauth(tmp_path: Path,
                                                           keys: KeyRing) -> None:
    with Store(tmp_path / "gw.db") as store:
        counter, payload = Signer(store, keys).sign("bed-1", "c1", "irrigate", {"seconds": 5},
                                                    T0)
    cmd = protocol.decode_command(payload)
    assert (cmd["node"], cmd["counter"], cmd["params"]) == ("bed-1", counter, {"seconds": 5})
    unsigned, sig = protocol.split_signature(payload)
    assert sig == signature(keys.key("bed-1"), unsigned)
    node = cmdauth.CommandAuth("bed-1", keys.key("bed-1").hex(), str(tmp_path / "c.json"))
    assert node.admit(cmd, payload) is None


def test_signing_for_a_node_without_a_key_takes_no_counter(tmp_path: Path,
                                                           keys: KeyRing) -> None:
    with Store(tmp_path / "gw.db") as store:
        signer = Signer(store, keys)
        with pytest.raises(KeyFileError, match="no key for node bed-2"):
            signer.sign("bed-2", "c1", "irrigate", {"seconds": 5}, T0)
        assert store.query("SELECT count(*) FROM command_counters") == [(0,)]
