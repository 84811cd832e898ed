"""`neoterra setpoint` (edge_gateway/cli_aroma.py): the signed "setpoint" command a drone's aroma
loop takes, its arguments checked before anything is sent, the ack printed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from edge_gateway.cli_aroma import add_setpoint_parser, run_setpoint, setpoint_params
from edge_gateway.commands import InvalidCommand
from edge_gateway.signing import KeyRing
from testkit.mosquitto import Mosquitto
from tests.test_commands import SITE, ScriptedNode


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="neoterra")
    add_setpoint_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["setpoint", *argv])


def test_setpoint_is_signed_sent_and_its_ack_printed(
        mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[dict[str, Any]] = []

    def answer(cmd: dict[str, Any]) -> list[tuple[str, bool, str, str]]:
        seen.append(cmd)
        return [(cmd["id"], True, "done", "aroma_2 holding voc_index at 180 with diffuser_2")]

    keys = KeyRing(tmp_path / "keys")
    keys.create("drone-1")
    common = ("--broker", f"127.0.0.1:{mosquitto.port}", "--site", SITE, "--keys",
              str(tmp_path / "keys"), "--db", str(tmp_path / "gw.db"), "--as", "alice")
    node = ScriptedNode(mosquitto, "drone-1", answer)
    try:
        assert run_setpoint(parse("drone-1", "--channel", "2", "--target", "180", *common)) == 0
        assert run_setpoint(parse("drone-1", "--channel", "2", "--off", *common)) == 0
    finally:
        node.close()
    assert [c["params"] for c in seen] == [
        {"channel": 2, "target": 180.0, "quantity": "voc_index"},
        {"channel": 2, "target": None, "quantity": "voc_index"}]
    assert all(c["sig"] and c["counter"] for c in seen)
    out = capsys.readouterr().out
    assert "node drone-1: hold voc_index 180 on channel 2 done: aroma_2 holding" in out
    assert "node drone-1: aroma loop off on channel 2 done" in out


@pytest.mark.parametrize(("channel", "target", "quantity", "expected"), [
    (5, 100.0, "voc_index", "cmd.params.channel"),
    (1, 600.0, "voc_index", "cmd.params.target: must be a voc_index from 1.0 to 500.0"),
    (1, 0.05, "gas_ratio", "cmd.params.target: must be a gas_ratio from 0.1 to 100.0"),
    (1, 2.0, "ppm", "cmd.params.quantity"),
])
def test_bad_setpoints_are_refused_before_sending(channel: int, target: float, quantity: str,
                                                  expected: str) -> None:
    with pytest.raises(InvalidCommand, match=expected.replace(".", r"\.")):
        setpoint_params(channel, target, quantity)


@pytest.mark.parametrize("argv", [
    ("drone-1", "--channel", "1"),  # neither --target nor --off
    ("drone-1", "--channel", "1", "--target", "100", "--off"),
    ("drone-1", "--channel", "x", "--target", "100"),
    ("drone-1", "--channel", "1", "--target", "nan"),
    ("drone-1", "--channel", "1", "--target", "200", "--quantity", "ppm"),
])
def test_bad_arguments_are_usage_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
