"""`neoterra` command line. Exit codes: 0 ok, 1 failure, 2 usage error."""

from __future__ import annotations

import argparse
import importlib
import logging
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edge_gateway import settings
from edge_gateway.commands import CommandError, InvalidCommand, send_command
from edge_gateway.gaps import DROPPED, Gap, list_gaps
from edge_gateway.ingest import Gateway, GatewayError
from edge_gateway.store import NodeInfo, Reading, Store, StoreError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_TIMEOUT_S = 10.0


class UsageError(Exception):
    """Bad invocation: printed with the usage hint, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neoterra", description="Neoterra edge gateway: garden and drone nodes over MQTT."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gateway = commands.add_parser("gateway", help="the gateway daemon")
    gateway_commands = gateway.add_subparsers(dest="gateway_command", required=True,
                                              metavar="ACTION")
    run = gateway_commands.add_parser("run", help="ingest node messages into the database "
                                      "until SIGINT/SIGTERM")
    _add_broker_options(run)
    _add_db_option(run)
    run.add_argument("--log-level", default="INFO",
                     choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(handler=_gateway_run)

    nodes = commands.add_parser("nodes", help="list nodes with their latest readings")
    _add_db_option(nodes)
    nodes.set_defaults(handler=_nodes)

    gaps = commands.add_parser("gaps", help="list seqs a node sent that were never stored "
                               "(lost, or dropped by the node when its outbox was full)")
    _add_db_option(gaps)
    gaps.add_argument("--node", metavar="NODE", help="only this node")
    gaps.add_argument("--open", action="store_true",
                      help="only gaps still open (not filled by late arrivals)")
    gaps.set_defaults(handler=_gaps)

    irrigate = commands.add_parser("irrigate", help="water a garden bed and wait for the ack")
    irrigate.add_argument("node", metavar="NODE")
    irrigate.add_argument("seconds", metavar="SECONDS", type=_seconds_argument)
    _add_broker_options(irrigate)
    irrigate.add_argument("--timeout", type=_timeout_argument, default=DEFAULT_TIMEOUT_S,
                          metavar="S", help="seconds to wait for the ack (default %(default)g)")
    irrigate.set_defaults(handler=_irrigate)

    diffuse = commands.add_parser("diffuse", help="run a drone's flavor diffuser and wait for "
                                                   "the ack (duty 0 switches it off)")
    diffuse.add_argument("node", metavar="NODE")
    diffuse.add_argument("channel", metavar="CHANNEL", type=_whole_number,
                         help="diffuser channel, 1-4")
    diffuse.add_argument("duty", metavar="DUTY_PCT", type=_whole_number,
                         help="PWM duty in %%, 0-100 (the node caps it)")
    diffuse.add_argument("seconds", metavar="SECONDS", type=_seconds_argument)
    _add_broker_options(diffuse)
    diffuse.add_argument("--timeout", type=_timeout_argument, default=DEFAULT_TIMEOUT_S,
                         help="seconds to wait for the node's ack")
    diffuse.set_defaults(handler=_diffuse)

    # The demo's own options are defined by edge_gateway.demo, imported only when it runs.
    demo = commands.add_parser("demo", help="run the demo: broker, gateway and emulated nodes "
                               "(`neoterra demo --help` for its options)", add_help=False)
    demo.set_defaults(handler=_demo)
    return parser


def _add_broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", metavar="HOST:PORT",
                        help=f"MQTT broker (${settings.ENV_BROKER}, default "
                        f"{settings.DEFAULT_BROKER})")
    parser.add_argument("--site", metavar="S",
                        help=f"site name (${settings.ENV_SITE}, default {settings.DEFAULT_SITE})")
    parser.add_argument("--username", metavar="U", help="MQTT user name")
    parser.add_argument("--password-file", metavar="F", type=Path,
                        help="file holding the MQTT password (needs --username)")


def _add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="PATH",
                        help=f"SQLite database (${settings.ENV_DB}, "
                        f"default ./{settings.DEFAULT_DB})")


def _seconds_argument(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds")
    return int(text)


def _whole_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def _timeout_argument(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def _credentials(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if args.password_file is None:
        return args.username, None
    if args.username is None:
        raise UsageError("--password-file needs --username")
    try:
        password = args.password_file.read_text().rstrip("\r\n")
    except OSError as exc:
        raise UsageError(f"--password-file: cannot read {args.password_file}: "
                         f"{exc.strerror}") from exc
    return args.username, password


# ---- commands -----------------------------------------------------------------------------


def _gateway_run(args: argparse.Namespace) -> int:
    broker = settings.broker_setting(args.broker)
    site = settings.site_setting(args.site)
    db_path = settings.db_setting(args.db)
    username, password = _credentials(args)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gateway = Gateway(site, broker.host, broker.port, db_path, username=username,
                      password=password)
    gateway.run_forever()
    return EXIT_OK


def _existing_db(args: argparse.Namespace) -> Path | None:
    db_path = Path(settings.db_setting(args.db))
    if not db_path.exists():
        print(f"no database at {db_path}: start the gateway first "
              f"(neoterra gateway run --db {db_path})", file=sys.stderr)
        return None
    return db_path


def _nodes(args: argparse.Namespace) -> int:
    db_path = _existing_db(args)
    if db_path is None:
        return EXIT_FAILURE
    with Store(db_path) as store:
        nodes = store.nodes()
        latest = store.latest_readings()
    if not nodes:
        print(f"no nodes in {db_path} yet — is the gateway running and are nodes publishing?")
        return EXIT_OK
    print(format_nodes(nodes, latest, now=time.time()))
    return EXIT_OK


def format_nodes(nodes: Sequence[NodeInfo], latest: Sequence[Reading], now: float) -> str:
    header = ("NODE", "ONLINE", "ROLE", "FW", "BOARD", "LAST SEEN", "LATEST")
    rows = [header]
    for node in nodes:
        values = " ".join(f"{r.quantity}={r.value:g}" for r in latest if r.node == node.node)
        online = "?" if node.online is None else ("yes" if node.online else "no")
        rows.append((node.node, online, node.role or "-", node.fw or "-", node.board or "-",
                     _age(node.last_seen, now), values or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  " + row[-1]
        for row in rows
    )


def _gaps(args: argparse.Namespace) -> int:
    db_path = _existing_db(args)
    if db_path is None:
        return EXIT_FAILURE
    with Store(db_path) as store:
        gaps = list_gaps(store, node=args.node, open_only=args.open)
    if not gaps:
        print(f"no {'open ' if args.open else ''}gaps in {db_path}: every seq "
              f"{'of ' + args.node + ' ' if args.node else ''}up to the newest is stored")
        return EXIT_OK
    print(format_gaps(gaps))
    return EXIT_OK


def format_gaps(gaps: Sequence[Gap]) -> str:
    header = ("NODE", "SEQ", "COUNT", "CAUSE", "DETECTED", "STATE")
    rows = [header]
    for gap in gaps:
        if gap.filled_at is not None:
            state = f"filled {_duration(gap.filled_at - gap.detected_at)} later"
        elif gap.missing < gap.size:
            state = f"open, {gap.missing} still missing"
        else:
            state = "open"
        rows.append((gap.node, gap.seqs, str(gap.size),
                     "dropped by node" if gap.cause == DROPPED else gap.cause,
                     time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(gap.detected_at)), state))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.rjust(width) if i == 2 else cell.ljust(width)
                  for i, (cell, width) in enumerate(zip(row, widths, strict=False)))
        + "  " + row[-1]
        for row in rows
    )


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _age(then: float | None, now: float) -> str:
    if then is None:
        return "never"
    return f"{_duration(now - then)} ago"


def _irrigate(args: argparse.Namespace) -> int:
    return _command(args, "irrigate", {"seconds": args.seconds}, f"irrigate {args.seconds} s")


def _diffuse(args: argparse.Namespace) -> int:
    params = {"channel": args.channel, "duty_pct": args.duty, "seconds": args.seconds}
    return _command(args, "diffuse", params,
                    f"diffuse channel {args.channel} at {args.duty} % for {args.seconds} s")


def _command(args: argparse.Namespace, action: str, params: dict[str, int],
             description: str) -> int:
    """Send one command, wait for the ack, print it; exit 1 when refused."""
    broker = settings.broker_setting(args.broker)
    site = settings.site_setting(args.site)
    username, password = _credentials(args)
    ack = send_command(broker.host, broker.port, site, args.node, action, params,
                       args.timeout, username=username, password=password)
    detail = f": {ack['detail']}" if ack["detail"] else ""
    if not ack["ok"]:
        print(f"node {args.node} refused {description} ({ack['result']}){detail}",
              file=sys.stderr)
        return EXIT_FAILURE
    print(f"node {args.node}: {description} {ack['result']}{detail}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    try:
        demo = importlib.import_module("edge_gateway.demo")
    except ModuleNotFoundError as exc:
        if exc.name == "edge_gateway.demo":
            print("neoterra: the demo is not part of this installation (no module "
                  "edge_gateway.demo)", file=sys.stderr)
        else:
            print(f"neoterra: the demo cannot start: it needs the module {exc.name!r}, which "
                  "is missing (install neoterra[emulator], or update this checkout)",
                  file=sys.stderr)
        return EXIT_FAILURE
    demo_parser = argparse.ArgumentParser(prog="neoterra demo", description=demo.__doc__)
    demo.add_arguments(demo_parser)
    result = demo.main(demo_parser.parse_args(args.demo_args))
    return result if isinstance(result, int) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # The demo parses its own options (see _demo); every other command takes only its own.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "demo":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.demo_args = extra
    try:
        code: int = args.handler(args)
        return code
    except (settings.SettingsError, InvalidCommand, UsageError) as exc:
        print(f"neoterra: error: {exc} (see neoterra {args.command} --help)", file=sys.stderr)
        return EXIT_USAGE
    except (CommandError, GatewayError, StoreError) as exc:
        print(f"neoterra: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except sqlite3.Error as exc:
        print(f"neoterra: database error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
