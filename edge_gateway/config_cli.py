"""`neoterra gateway check-config`, and the settings `neoterra gateway run` takes from --config.

With --config, each setting comes from its command-line flag, else the config file; the
environment variables and built-in defaults apply only without --config (the file names every
setting it needs, and a daemon should not change with its environment).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_gateway import settings
from edge_gateway.config import Config, load_config
from edge_gateway.config_checks import ConfigErrors
from edge_gateway.config_desired import desired_node_configs
from edge_gateway.configerror import ConfigError
from edge_gateway.localhw import parse_local_hardware
from edge_gateway.rules import parse_rules
from edge_gateway.writer import DEFAULT_LINGER_S, DEFAULT_MAX_BATCH


def _rules_context(config: Config) -> dict[str, Any]:
    """What parse_rules checks a rule against: the nodes, and the flow of each watered bed."""
    flows = {name: config.plants[node.plant].flow_l_per_min
             for name, node in config.nodes.items() if node.plant is not None}
    return {"known_nodes": frozenset(config.nodes), "flow_l_per_min": flows}


# Sections other modules parse: (section, parser, raw table, keyword arguments).
SECTION_PARSERS: tuple[tuple[str, Callable[..., object], Callable[[Config], Mapping[str, Any]],
                             Callable[[Config], dict[str, Any]]], ...] = (
    ("rules", parse_rules, lambda c: c.rules_table, _rules_context),
    ("local_hardware", parse_local_hardware, lambda c: c.local_hardware_table, lambda c: {}),
)


@dataclass(frozen=True)
class RunSettings:
    site: str
    broker: settings.BrokerAddress
    db_path: str
    client_id: str | None
    username: str | None
    password: str | None
    # Writer batching: [storage] batch_max_messages and batch_max_ms.
    batch_max: int = DEFAULT_MAX_BATCH
    batch_linger_s: float = DEFAULT_LINGER_S
    config: Config | None = None  # the checked config file, if one was given


def run_settings(args: argparse.Namespace) -> RunSettings:
    """Settings for `gateway run`: flags, else --config, else environment and defaults.

    Raises SettingsError for a bad flag, ConfigErrors for a bad config file."""
    config = full_check(Path(args.config)) if args.config is not None else None
    if config is None:
        broker = settings.broker_setting(args.broker)
        site = settings.site_setting(args.site)
        db_path = settings.db_setting(args.db)
        client_id = None
    else:
        if config.broker.ca_file is not None:
            raise ConfigErrors([ConfigError(
                "broker.ca_file", "TLS to the broker is not supported by `gateway run` yet",
                "remove ca_file and use a broker listener on the local network or loopback")],
                str(args.config))
        broker = (settings.broker_setting(args.broker) if args.broker is not None
                  else settings.BrokerAddress(config.broker.host, config.broker.port))
        site = settings.site_setting(args.site) if args.site is not None else config.site
        db_path = (settings.db_setting(args.db) if args.db is not None
                   else str(config.storage.path))
        client_id = config.broker.client_id
    if args.username is not None or args.password_file is not None or config is None:
        username, password = credentials(args.username, args.password_file)
    else:
        username, password = config.broker.username, config.broker.password
    if config is None:
        return RunSettings(site, broker, db_path, client_id, username, password)
    return RunSettings(site, broker, db_path, client_id, username, password,
                       batch_max=config.storage.batch_max_messages,
                       batch_linger_s=config.storage.batch_max_ms / 1000, config=config)


def credentials(username: str | None, password_file: Path | None) -> tuple[str | None,
                                                                            str | None]:
    """--username and --password-file; raises SettingsError when they cannot be used."""
    if password_file is None:
        return username, None
    if username is None:
        raise settings.SettingsError("--password-file needs --username")
    try:
        password = password_file.read_text().rstrip("\r\n")
    except OSError as exc:
        raise settings.SettingsError(f"--password-file: cannot read {password_file}: "
                                     f"{exc.strerror}") from exc
    return username, password


def full_check(path: Path) -> Config:
    """load_config, then the sections other modules own, all problems reported together."""
    config = load_config(path)
    errors: list[ConfigError] = []
    for section, parse, table_of, context in SECTION_PARSERS:
        table = table_of(config)
        if not table:
            continue
        try:
            parse(dict(table), **context(config))
        except ConfigError as exc:
            errors.append(exc)
        except ValueError as exc:
            found = getattr(exc, "errors", None)
            if isinstance(found, list) and all(isinstance(e, ConfigError) for e in found):
                errors.extend(found)
            else:
                errors.append(ConfigError(section, str(exc), f"fix the [{section}] section"))
    if errors:
        raise ConfigErrors(errors, str(path))
    return config


def check_config(args: argparse.Namespace) -> int:
    """Print "ok: ..." and a line per node, or every problem; 0 when ok, 1 otherwise."""
    try:
        config = full_check(Path(args.config))
    except ConfigErrors as exc:
        print(f"neoterra: {exc}", file=sys.stderr)
        return 1
    print(summary(config))
    return 0


def summary(config: Config) -> str:
    def count(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 's'}"

    ha = config.homeassistant
    rules = sum(isinstance(value, Mapping) for value in config.rules_table.values())
    lines = [
        f"ok: {count(len(config.nodes), 'node')}, {count(rules, 'rule')}, "
        f"{count(len(config.plants), 'plant profile')}, site {config.site}, broker "
        f"{settings.BrokerAddress(config.broker.host, config.broker.port)}, database "
        f"{config.storage.path}, Home Assistant discovery "
        + (f"on (prefix {ha.prefix})" if ha.enabled else "off")
    ]
    desired = desired_node_configs(config)
    for name, node in sorted(config.nodes.items()):
        plant = f", plant {node.plant}" if node.plant else ""
        board = f" on {node.board}" if node.board else ""
        key = "" if node.key_file else ", no command key"
        lines.append(f"  {name}: {node.role}{board}{plant}{key}, "
                     f"config version {desired[name].version}")
    return "\n".join(lines)
