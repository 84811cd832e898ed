"""`neoterra` command line. Exit codes: 0 ok, 1 failure, 2 usage error."""

from __future__ import annotations

import argparse
import getpass
import importlib
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edge_gateway import audit, cli_site, config_cli, logs, settings
from edge_gateway.cli_aroma import add_setpoint_parser
from edge_gateway.commands import CommandError, InvalidCommand, send_command
from edge_gateway.config_checks import ConfigErrors
from edge_gateway.daemon import Daemon
from edge_gateway.export import add_export_parser
from edge_gateway.gaps import DROPPED, Gap, list_gaps
from edge_gateway.ingest import Gateway, GatewayError
from edge_gateway.registry import short_duration
from edge_gateway.signing import KeyFileError, KeyRing, Signer
from edge_gateway.store import NodeInfo, Reading, Store, StoreError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_TIMEOUT_S = 10.0
ENV_KEYS = "NEOTERRA_KEYS"
DEFAULT_KEYS = "keys"


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
    run.add_argument("--config", metavar="FILE", type=Path,
                     help="gateway TOML config (docs/gateway.toml.example); its broker, site "
                     "and database are used unless a flag below overrides them")
    _add_broker_options(run)
    _add_db_option(run)
    run.add_argument("--log-level", default="INFO", choices=list(logs.LEVELS[:-1]))
    run.add_argument("--log-format", default="text", choices=list(logs.FORMATS),
                     help="json: one JSON object per line (default %(default)s)")
    _add_keys_option(run)
    run.set_defaults(handler=_gateway_run)
    check = gateway_commands.add_parser("check-config", help="check the gateway config file "
                                        "and print every problem in it")
    check.add_argument("--config", metavar="FILE", type=Path, required=True,
                       help="gateway TOML config to check")
    check.set_defaults(handler=config_cli.check_config)

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
    add_export_parser(commands)
    add_setpoint_parser(commands)

    irrigate = commands.add_parser("irrigate", help="water a garden bed and wait for the ack")
    irrigate.add_argument("node", metavar="NODE")
    irrigate.add_argument("seconds", metavar="SECONDS", type=_seconds_argument)
    _add_broker_options(irrigate)
    _add_signing_options(irrigate)
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
    _add_signing_options(diffuse)
    diffuse.add_argument("--timeout", type=_timeout_argument, default=DEFAULT_TIMEOUT_S,
                         help="seconds to wait for the node's ack")
    diffuse.set_defaults(handler=_diffuse)

    keygen = commands.add_parser("keygen", help="make a node's command key: prints it for the "
                                 "node's cmd_key and keeps it in the keys directory")
    keygen.add_argument("node", metavar="NODE")
    _add_keys_option(keygen)
    keygen.set_defaults(handler=_keygen)

    audit_log = commands.add_parser("audit", help="list the commands sent and refused: who "
                                    "asked, what, when, and the result")
    _add_db_option(audit_log)
    audit_log.add_argument("--node", metavar="NODE", help="only this node")
    audit_log.add_argument("--limit", metavar="N", type=_whole_number, default=50,
                           help="the newest N entries (default %(default)s)")
    audit_log.set_defaults(handler=_audit)
    cli_site.add_parsers(commands, _add_broker_options, _add_db_option)  # estop, config push

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


def _add_keys_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", metavar="DIR", type=Path,
                        help=f"directory of the nodes' command keys, NODE.key (${ENV_KEYS}, "
                        f"default ./{DEFAULT_KEYS})")


def _add_signing_options(parser: argparse.ArgumentParser) -> None:
    _add_keys_option(parser)
    _add_db_option(parser)  # the command counters and the audit log live in the gateway's store
    parser.add_argument("--as", dest="requested_by", metavar="WHO",
                        help="who asks, for the audit log (default: your login name)")


def _keys(args: argparse.Namespace) -> KeyRing:
    return KeyRing(args.keys or os.environ.get(ENV_KEYS) or DEFAULT_KEYS)


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


# ---- commands -----------------------------------------------------------------------------


def _gateway_run(args: argparse.Namespace) -> int:
    run = config_cli.run_settings(args)
    logs.setup_logging(args.log_level, args.log_format)
    gateway = Gateway(run.site, run.broker.host, run.broker.port, run.db_path,
                      client_id=run.client_id, username=run.username, password=run.password,
                      batch_max=run.batch_max, batch_linger_s=run.batch_linger_s)
    if run.config is None:
        gateway.run_forever()
        return EXIT_OK
    # With a config: rules, history, registry, Home Assistant... around the same gateway.
    files = {name: node.key_file for name, node in run.config.nodes.items()
             if node.key_file is not None}
    keys = KeyRing(args.keys or os.environ.get(ENV_KEYS) or DEFAULT_KEYS, files)
    Daemon(run.config, gateway, keys).run_forever()
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
            state = f"filled {short_duration(gap.filled_at - gap.detected_at)} later"
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


def _age(then: float | None, now: float) -> str:
    if then is None:
        return "never"
    return f"{short_duration(now - then)} ago"


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
    username, password = config_cli.credentials(args.username, args.password_file)
    with Store(settings.db_setting(args.db)) as store:
        ack = send_command(broker.host, broker.port, site, args.node, action, params,
                           args.timeout, signer=Signer(store, _keys(args)),
                           requested_by=args.requested_by or getpass.getuser(),
                           username=username, password=password)
    detail = f": {ack['detail']}" if ack["detail"] else ""
    if not ack["ok"]:
        print(f"node {args.node} refused {description} ({ack['result']}){detail}",
              file=sys.stderr)
        return EXIT_FAILURE
    print(f"node {args.node}: {description} {ack['result']}{detail}")
    return EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    keys = _keys(args)
    try:
        path = keys.create(args.node)
    except KeyFileError as exc:
        print(f"neoterra: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{keys.key(args.node).hex()}\n(kept in {path}; put this text in node "
          f"{args.node}'s config as \"cmd_key\")")
    return EXIT_OK


def _audit(args: argparse.Namespace) -> int:
    db_path = _existing_db(args)
    if db_path is None:
        return EXIT_FAILURE
    with Store(db_path) as store:
        entries = audit.entries(store, node=args.node, limit=args.limit)
    if not entries:
        print(f"no commands in the audit log of {db_path} yet")
        return EXIT_OK
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.requested_at))
        params = " ".join(f"{k}={v}" for k, v in sorted(entry.params.items()))
        detail = f" ({entry.detail})" if entry.detail else ""
        print(f"{when}  {entry.requested_by}  {entry.node}  {entry.action} {params}  "
              f"{entry.result}{detail}")
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
    except (settings.SettingsError, InvalidCommand) as exc:
        print(f"neoterra: error: {exc} (see neoterra {args.command} --help)", file=sys.stderr)
        return EXIT_USAGE
    except (CommandError, GatewayError, StoreError, ConfigErrors) as exc:
        print(f"neoterra: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except sqlite3.Error as exc:
        print(f"neoterra: database error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
