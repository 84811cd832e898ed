"""The node's command authentication under the real MicroPython interpreter (from source and
from the .mpy files we ship): HMAC-SHA256 against RFC 4231, and commands signed by the
gateway's own signer (stdlib hmac) admitted or refused for the right reason, across a reboot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sensornode import protocol

from edge_gateway.signing import KeyRing, Signer
from edge_gateway.store import Store
from hil_tests.target import compiled_firmware, run_micropython
from tests.test_cmdauth import RFC4231

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import binascii
import json
import sys

from sensornode import cmdauth, protocol

with open(sys.argv[1]) as f:
    given = json.loads(f.read())

macs = []
for key, data in given["hmac"]:
    mac = cmdauth.hmac_sha256(binascii.unhexlify(key), binascii.unhexlify(data))
    macs.append(binascii.hexlify(mac).decode())


def run(auth, payloads):
    out = []
    for payload in payloads:
        raw = payload.encode()
        out.append(auth.admit(protocol.decode_command(raw), raw))
    return out


first_boot = run(cmdauth.CommandAuth("bed-1", given["key"], "cmd_counter.json"), given["boot1"])
after_reboot = run(cmdauth.CommandAuth("bed-1", given["key"], "cmd_counter.json"), given["boot2"])
keyless = run(cmdauth.CommandAuth("bed-1", "", "keyless.json"), given["boot2"][-1:])
print("RESULT " + json.dumps({"hmac": macs, "boot1": first_boot, "boot2": after_reboot,
                              "keyless": keyless}))
"""


def gateway_commands(tmp_path: Path) -> dict[str, Any]:
    """Commands signed by the gateway's Signer, and the scenario the node goes through."""
    keys = KeyRing(tmp_path / "keys")
    keys.create("bed-1")
    keys.create("bed-2")
    key_hex = (tmp_path / "keys" / "bed-1.key").read_text().strip()
    with Store(tmp_path / "gateway.db") as store:
        signer = Signer(store, keys)

        def command(node: str = "bed-1", cmd_id: str = "c") -> str:
            return signer.sign(node, cmd_id, "irrigate", {"seconds": 5}, time.time())[1].decode()

        first, second, third = command(cmd_id="c1"), command(cmd_id="c2"), command(cmd_id="c3")
        forged = command("bed-2")  # bed-2's key, retargeted at bed-1 below
        unsigned, _ = protocol.split_signature(command())
    return {
        "key": key_hex,
        "hmac": [[key, data] for key, data, _ in RFC4231],
        "boot1": [
            first,
            first,
            forged.replace('"node":"bed-2"', '"node":"bed-1"'),
            unsigned.decode(),
            first.replace('"node":"bed-1"', '"node":"bed-9"'),
            first.replace('"seconds":5', '"seconds":60'),
            second,
        ],
        "boot2": [second, third],
    }


@pytest.mark.parametrize("build", ["source", "mpy"])
def test_cmdauth_under_micropython(build: str, tmp_path: Path) -> None:
    firmware = compiled_firmware() if build == "mpy" else REPO / "firmware"
    given = gateway_commands(tmp_path)
    (tmp_path / "given.json").write_text(json.dumps(given))
    script = tmp_path / "scenario.py"
    script.write_text(SCRIPT)
    output = run_micropython(script, str(tmp_path / "given.json"), path=[firmware], cwd=tmp_path)
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, output
    result = json.loads(lines[0].removeprefix("RESULT "))

    macs = result["hmac"]
    assert [mac[: len(expected)] for mac, (_, _, expected) in zip(macs, RFC4231, strict=True)] \
        == [expected for _, _, expected in RFC4231]
    first_counter = protocol.decode_command(given["boot1"][0])["counter"]
    second_counter = protocol.decode_command(given["boot2"][0])["counter"]
    assert result["boot1"] == [
        None,
        f"replayed: counter {first_counter}, last accepted {first_counter}",
        "forged: the signature does not match this node's key",
        "forged: no signature",
        "wrong node: it is for bed-9, this is bed-1",
        "forged: the signature does not match this node's key",
        None,
    ]
    assert result["boot2"] == [
        f"replayed: counter {second_counter}, last accepted {second_counter}",
        None,
    ]
    assert result["keyless"] == [
        "no key configured: set cmd_key in this node's config (the gateway's key for it)"
    ]
    assert json.loads((tmp_path / "cmd_counter.json").read_text())["last"] > second_counter
