"""`neoterra setpoint NODE --channel N --target X`: give a drone's aroma loop a target.

The node's diffuser channel then holds the target VOC index (SGP40, 1..500, 100 = the room's
typical air) or gas-resistance ratio (BME680, clean air 1.0) by itself, under its safety layer
(firmware/sensornode/drone.py); `--off` hands the channel back (diffuser off). Sent as a signed
"setpoint" command through edge_gateway.commands.send_command, audited like every command.
"""

from __future__ import annotations

import argparse
from typing import Any

from sensornode import protocol

from edge_gateway.commands import check_command

QUANTITIES = tuple(sorted(protocol.SETPOINT_QUANTITIES))


def add_setpoint_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `setpoint` subcommand, with the CLI's broker and signing options."""
    from edge_gateway import cli  # the CLI module is loaded by the time it builds its parser

    setpoint = commands.add_parser("setpoint", help="make a drone's diffuser channel hold an "
                                   "aroma level by itself, and wait for the ack")
    setpoint.add_argument("node", metavar="NODE")
    setpoint.add_argument("--channel", metavar="N", type=cli._whole_number, required=True,
                          help=f"diffuser channel, 1-{protocol.DIFFUSER_CHANNELS}")
    target = setpoint.add_mutually_exclusive_group(required=True)
    target.add_argument("--target", metavar="X", type=_target_argument,
                        help="the level to hold (voc_index 1-500, gas_ratio 0.1-100)")
    target.add_argument("--off", action="store_true", help="stop the loop: diffuser off")
    setpoint.add_argument("--quantity", choices=QUANTITIES, default="voc_index",
                          help="what the target is (default %(default)s)")
    cli._add_broker_options(setpoint)
    cli._add_signing_options(setpoint)
    setpoint.add_argument("--timeout", type=cli._timeout_argument, default=cli.DEFAULT_TIMEOUT_S,
                          metavar="S", help="seconds to wait for the ack (default %(default)g)")
    setpoint.set_defaults(handler=run_setpoint)


def _target_argument(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    return value


def setpoint_params(channel: int, target: float | None, quantity: str) -> dict[str, Any]:
    """The command's params; InvalidCommand (naming the parameter) if the node would refuse
    them as malformed."""
    params: dict[str, Any] = {"channel": channel, "target": target, "quantity": quantity}
    check_command("check", "check", "setpoint", params)  # the node's own decoder
    return params


def run_setpoint(args: argparse.Namespace) -> int:
    from edge_gateway import cli

    target = None if args.off else args.target
    params = setpoint_params(args.channel, target, args.quantity)
    if target is None:
        what = f"aroma loop off on channel {args.channel}"
    else:
        what = f"hold {args.quantity} {target:g} on channel {args.channel}"
    return cli._command(args, "setpoint", params, what)
