"""The node's command authentication (firmware/sensornode/cmdauth.py) under CPython: HMAC-SHA256
against RFC 4231 and the stdlib, and which commands a node refuses and why. The same checks
run under the real micropython in hil_tests/test_cmdauth_micropython.py."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from sensornode import cmdauth, config, protocol

KEY = bytes(range(32))
KEY_HEX = KEY.hex()
NODE = "bed-1"

# RFC 4231, HMAC-SHA-256 test cases 1-7: (key hex, data hex, HMAC hex). Case 5's output is
# truncated to 128 bits in the RFC; the others are complete.
RFC4231 = [
    ("0b" * 20, b"Hi There".hex(),
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe".hex(), b"what do ya want for nothing?".hex(),
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ("aa" * 20, "dd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)).hex(), "cd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    ("0c" * 20, b"Test With Truncation".hex(), "a3b6167473100ee06e0c796c2955552b"),
    ("aa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    ("aa" * 131,
     b"This is a test using a larger than block-size key and a larger than block-size data. "
     b"The key needs to be hashed before being used by the HMAC algorithm.".hex(),
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


def signed_command(counter: int, node: str = NODE, key: bytes = KEY, cmd_id: str = "c1",
                   seconds: int = 5) -> bytes:
    """A command as the gateway signs it (edge_gateway.signing does the same with hmac)."""
    unsigned = protocol.encode_command(cmd_id, "irrigate", {"seconds": seconds}, time.time(),
                                       node, counter)
    return protocol.sign_command(unsigned, hmac.new(key, unsigned, hashlib.sha256).hexdigest())


def admit(auth: cmdauth.CommandAuth, payload: bytes) -> str | None:
    return auth.admit(protocol.decode_command(payload), payload)


@pytest.mark.parametrize(("key", "data", "expected"), RFC4231)
def test_hmac_sha256_matches_rfc4231(key: str, data: str, expected: str) -> None:
    digest = cmdauth.hmac_sha256(bytes.fromhex(key), bytes.fromhex(data)).hex()
    assert digest.startswith(expected) and len(digest) == 64


@pytest.mark.parametrize("key_len", [0, 1, 63, 64, 65, 200])
def test_hmac_sha256_matches_the_stdlib_at_every_key_length_edge(key_len: int) -> None:
    key = bytes((7 * i + 1) % 256 for i in range(key_len))
    message = b"x" * 1000
    assert cmdauth.sign(key, message) == hmac.new(key, message, hashlib.sha256).hexdigest()


def test_same_text_compares_whole_strings() -> None:
    assert cmdauth.same_text("ab12", "ab12")
    assert not cmdauth.same_text("ab12", "ab13")
    assert not cmdauth.same_text("ab12", "ab1")


def test_a_good_command_is_admitted_and_its_counter_saved(tmp_path: Path) -> None:
    path = tmp_path / "cmd_counter.json"
    auth = cmdauth.CommandAuth(NODE, KEY_HEX, str(path))
    assert admit(auth, signed_command(5)) is None
    assert auth.last == 5
    assert json.loads(path.read_text()) == {"last": 5}
    assert not (tmp_path / "cmd_counter.json.tmp").exists()
    assert admit(auth, signed_command(6)) is None


def test_a_replay_is_refused_also_after_a_reboot(tmp_path: Path) -> None:
    path = str(tmp_path / "cmd_counter.json")
    first = signed_command(10)
    assert admit(cmdauth.CommandAuth(NODE, KEY_HEX, path), first) is None
    rebooted = cmdauth.CommandAuth(NODE, KEY_HEX, path)
    assert admit(rebooted, first) == "replayed: counter 10, last accepted 10"
    assert admit(rebooted, signed_command(9)) == "replayed: counter 9, last accepted 10"
    assert admit(rebooted, signed_command(11)) is None


@pytest.mark.parametrize(("payload", "reason"), [
    (signed_command(1, key=bytes(32)), "forged: the signature does not match this node's key"),
    (protocol.encode_command("c1", "irrigate", {"seconds": 5}, time.time(), NODE, 1),
     "forged: no signature"),
    (signed_command(1, node="bed-2"), "wrong node: it is for bed-2, this is bed-1"),
    (signed_command(1, node=""), "wrong node: the command names no node"),
    (protocol.sign_command(protocol.encode_command("c1", "irrigate", {"seconds": 5},
                                                   time.time(), NODE, 0), "0" * 64),
     "forged: the signature does not match this node's key"),
])
def test_forged_and_misdirected_commands_are_refused(tmp_path: Path, payload: bytes,
                                                     reason: str) -> None:
    path = tmp_path / "cmd_counter.json"
    auth = cmdauth.CommandAuth(NODE, KEY_HEX, str(path))
    assert admit(auth, payload) == reason
    assert auth.last == 0 and not path.exists(), "a refused command must not move the counter"


def test_tampering_with_any_signed_byte_is_a_forgery(tmp_path: Path) -> None:
    payload = signed_command(3, seconds=5)
    tampered = payload.replace(b'"seconds":5', b'"seconds":9')
    assert tampered != payload
    auth = cmdauth.CommandAuth(NODE, KEY_HEX, str(tmp_path / "c.json"))
    assert admit(auth, tampered) == "forged: the signature does not match this node's key"


def test_a_signed_command_without_counter_is_refused(tmp_path: Path) -> None:
    auth = cmdauth.CommandAuth(NODE, KEY_HEX, str(tmp_path / "c.json"))
    assert admit(auth, signed_command(0)) == "replayed: the command has no counter"


def test_without_a_key_every_command_is_refused(tmp_path: Path) -> None:
    auth = cmdauth.CommandAuth(NODE, "", str(tmp_path / "c.json"))
    assert admit(auth, signed_command(1)) == (
        "no key configured: set cmd_key in this node's config (the gateway's key for it)"
    )


def test_a_damaged_counter_file_refuses_commands_until_removed(tmp_path: Path) -> None:
    path = tmp_path / "cmd_counter.json"
    path.write_text('{"last": "x')
    auth = cmdauth.CommandAuth(NODE, KEY_HEX, str(path))
    assert admit(auth, signed_command(10**12)) == (
        f"error: {path} is damaged; remove it to accept commands again"
    )
    path.unlink()
    assert admit(cmdauth.CommandAuth(NODE, KEY_HEX, str(path)), signed_command(1)) is None


def test_an_unwritable_counter_file_refuses_rather_than_forgets(tmp_path: Path) -> None:
    auth = cmdauth.CommandAuth(NODE, KEY_HEX, str(tmp_path / "missing-dir" / "c.json"))
    refusal = admit(auth, signed_command(1))
    assert refusal is not None and refusal.startswith("error: cannot save the command counter")
    assert auth.last == 0


# ---- the wire form ------------------------------------------------------------------------


def test_signature_is_the_last_member_and_splits_back_exactly() -> None:
    unsigned = protocol.encode_command("c1", "irrigate", {"seconds": 5}, 1795300000.5, NODE, 7)
    payload = protocol.sign_command(unsigned, "ab" * 32)
    assert payload.endswith(b',"sig":"' + b"ab" * 32 + b'"}')
    assert protocol.split_signature(payload) == (unsigned, "ab" * 32)
    assert protocol.split_signature(payload.decode()) == (unsigned, "ab" * 32)
    assert protocol.split_signature(unsigned) == (unsigned, "")
    decoded = protocol.decode_command(payload)
    assert (decoded["node"], decoded["counter"], decoded["sig"]) == (NODE, 7, "ab" * 32)


@pytest.mark.parametrize(("payload", "error"), [
    # a sig that is not the last member cannot be checked over the exact bytes
    ('{"v":1,"sig":"' + "ab" * 32 + '","id":"c","action":"irrigate","params":{"seconds":1},'
     '"ts":1795300000.5}', "cmd.sig"),
    ('{"v":1,"id":"c","action":"irrigate","params":{"seconds":1},"ts":1795300000.5,'
     '"sig":"' + "AB" * 32 + '"}', "cmd.sig"),
    ('{"v":1,"id":"c","action":"irrigate","params":{"seconds":1},"ts":1795300000.5,'
     '"counter":-1}', "cmd.counter"),
    ('{"v":1,"id":"c","action":"irrigate","params":{"seconds":1},"ts":1795300000.5,'
     '"node":"Bed 1"}', "cmd.node"),
])
def test_malformed_signing_fields_are_protocol_errors(payload: str, error: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=error):
        protocol.decode_command(payload)


# ---- the config field ---------------------------------------------------------------------


def base_config(**overrides: Any) -> dict[str, Any]:
    return {"site": "home", "node": NODE, **overrides}


def test_config_takes_a_64_hex_digit_key_and_defaults_to_none() -> None:
    assert config.validate(base_config())["cmd_key"] == ""
    assert config.validate(base_config(cmd_key=KEY_HEX))["cmd_key"] == KEY_HEX


@pytest.mark.parametrize(("key", "problem"), [
    ("ab" * 16, "must be 64 hex digits (a 32-byte key), got 32 characters"),
    ("zz" * 32, "must be hex digits only (0-9, a-f), got 64 characters"),
    (1234, "must be 64 hex digits (a 32-byte key), got int"),
])
def test_config_refuses_a_bad_key_without_printing_it(key: object, problem: str) -> None:
    with pytest.raises(config.ConfigError) as raised:
        config.validate(base_config(cmd_key=key))
    message = str(raised.value)
    assert message.startswith(f"cmd_key: {problem}; copy the gateway's key file"), message
    assert str(key) not in message


def test_the_signed_vector_and_the_documented_example_verify_with_key_00_to_1f(
    tmp_path: Path,
) -> None:
    vectors = json.loads((Path(__file__).parent / "vectors" / "protocol.json").read_text())
    (vector,) = [v for v in vectors["payloads"] if v["name"].startswith("irrigate, signed")]
    payload = vector["payload"].encode()
    auth = cmdauth.CommandAuth(NODE, KEY_HEX, str(tmp_path / "c.json"))
    assert admit(auth, payload) is None
    docs = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    assert vector["decoded"]["sig"] in docs
