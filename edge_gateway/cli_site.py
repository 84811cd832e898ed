"""`neoterra estop`, `neoterra reset-estop` and `neoterra config push`: retained messages for a
whole site, published over a short-lived MQTT connection.

The e-stop and its reset go retained on nt/<site>/estop (docs/protocol.md, "estop"), so a
node that boots or reconnects later learns the current state at once. They are broadcasts,
not signed per-node commands: each is recorded in the audit log with node "*" (every node of
the site) and the site in its params; its result is "published" once the broker has it.

`config push` publishes each node's desired config (edge_gateway.config_desired) retained on
nt/<site>/<node>/config, as the daemon does at every connect: for a config edited while the
daemon runs (which publishes its own loaded config again when it reconnects or restarts).
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sensornode import protocol

from edge_gateway import audit, config_cli, settings
from edge_gateway.commands import CommandError, InvalidCommand, connect
from edge_gateway.config_desired import desired_node_configs
from edge_gateway.store import Store

ALL_NODES = "*"  # the audit's node for a site-wide broadcast
PUBLISHED = "published"
DEFAULT_TIMEOUT_S = 10.0
KEEPALIVE_S = 30

OptionAdder = Callable[[argparse.ArgumentParser], None]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                broker_options: OptionAdder, db_option: OptionAdder) -> None:
    """The site commands, with the CLI's own --broker/--site/... and --db options."""
    estop = commands.add_parser("estop", help="latch the site e-stop: every node switches "
                                "every actuator off until reset-estop (retained)")
    estop.add_argument("--reason", metavar="TEXT", default="",
                       help="why, for the nodes' events and the audit log "
                       f"(≤ {protocol.MAX_REASON} characters)")
    reset = commands.add_parser("reset-estop", help="clear the site e-stop (retained); nodes "
                                "stay off until asked again")
    for parser in (estop, reset):
        broker_options(parser)
        db_option(parser)  # the audit log lives in the gateway's store
        parser.add_argument("--as", dest="requested_by", metavar="WHO",
                            help="who asks, for the audit log (default: your login name)")
        parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                            help="seconds to wait for the broker (default %(default)g)")
    estop.set_defaults(handler=run_estop)
    reset.set_defaults(handler=run_reset_estop, reason="")

    config = commands.add_parser("config", help="node configs")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    push = actions.add_parser("push", help="publish each node's desired config (retained) "
                              "from the gateway config file")
    push.add_argument("--config", metavar="FILE", type=Path, required=True,
                      help="gateway TOML config: its nodes, site and broker")
    broker_options(push)
    push.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                      help="seconds to wait for the broker (default %(default)g)")
    push.set_defaults(handler=run_config_push, db=None)


def run_estop(args: argparse.Namespace) -> int:
    return _site_estop(args, latched=True)


def run_reset_estop(args: argparse.Namespace) -> int:
    return _site_estop(args, latched=False)


def _site_estop(args: argparse.Namespace, latched: bool) -> int:
    broker = settings.broker_setting(args.broker)
    site = settings.site_setting(args.site)
    username, password = config_cli.credentials(args.username, args.password_file)
    requested_by = args.requested_by or getpass.getuser()
    try:
        audit.check_requester(requested_by)
        # `by` is what the nodes log; the audit keeps the whole name
        payload = protocol.encode_estop(latched, requested_by[:protocol.MAX_BY], time.time(),
                                        args.reason)
    except (ValueError, protocol.ProtocolError) as exc:
        raise InvalidCommand(str(exc)) from exc
    _check_timeout(args.timeout)
    topic = protocol.site_topic(site, protocol.ESTOP)
    action = "estop" if latched else "reset-estop"
    params: dict[str, Any] = {"site": site}
    if args.reason:
        params["reason"] = args.reason
    with Store(settings.db_setting(args.db)) as store:
        audit.ensure_table(store)
        # Not a signed command: no counter (0), and the id only names this audit row.
        row = audit.record(store, requested_by, ALL_NODES, action, params,
                           cmd_id=secrets.token_hex(8), counter=0,
                           detail=f"connecting to the MQTT broker at {broker}")
        try:
            publish_retained(broker.host, broker.port, [(topic, payload)], args.timeout,
                             username, password)
        except CommandError as exc:
            audit.update(store, row, audit.NOT_SENT, str(exc))
            raise
        audit.update(store, row, PUBLISHED, f"retained on {topic}")
    what = "latched: every node stops its actuators" if latched else "reset"
    print(f"site {site}: e-stop {what} ({topic}, retained)")
    return 0


def run_config_push(args: argparse.Namespace) -> int:
    run = config_cli.run_settings(args)  # flags over the file, as for `gateway run`
    assert run.config is not None
    desired = desired_node_configs(run.config)
    if not desired:
        print(f"{args.config} has no [nodes.<name>] sections: nothing to push")
        return 0
    _check_timeout(args.timeout)
    messages = [(protocol.node_topic(run.site, name, protocol.CONFIG), document.payload())
                for name, document in sorted(desired.items())]
    publish_retained(run.broker.host, run.broker.port, messages, args.timeout, run.username,
                     run.password)
    for (topic, _), name in zip(messages, sorted(desired), strict=True):
        print(f"{name}: config version {desired[name].version} published on {topic}")
    return 0


def _check_timeout(timeout: float) -> None:
    if not timeout > 0:
        raise InvalidCommand(f"--timeout: must be more than 0 seconds, got {timeout:g}")


def publish_retained(host: str, port: int, messages: Sequence[tuple[str, bytes]],
                     timeout_s: float, username: str | None, password: str | None) -> None:
    """Publish each (topic, payload) QoS 1 retained; return once the broker has them all
    (PUBACK), CommandError otherwise. `timeout_s` bounds the whole exchange."""
    broker = f"{host}:{port}"
    deadline = time.monotonic() + timeout_s
    client = connect(host, port, f"neoterra-cli-{secrets.token_hex(4)}", username, password,
                     deadline)
    try:
        sent = [client.publish(topic, payload, qos=1, retain=True)
                for topic, payload in messages]
        for info, (topic, _) in zip(sent, messages, strict=True):
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                raise CommandError(f"publishing on {topic} failed: {exc}") from exc
            if not info.is_published():
                raise CommandError(f"the MQTT broker at {broker} did not confirm {topic} "
                                   f"within {timeout_s:g} s")
    finally:
        client.disconnect()
        client.loop_stop()
