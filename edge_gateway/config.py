"""The gateway's one TOML config file, checked as a whole into frozen dataclasses.

Sections: [site], [broker], [storage], [nodes.<name>], [plants.<name>], [rules.<name>],
[local_hardware], [homeassistant], [http]; docs/gateway.toml.example shows every key. Every
value is checked (type, range, unknown keys, names, references between sections, files that
must exist) and every problem in the file is reported together as `ConfigErrors`, each a
`ConfigError` naming the dotted key and the fix, so a user fixes the file in one go. Relative
paths are relative to the config file's directory.

[rules] and [local_hardware] are parsed by their own modules (edge_gateway.rules,
edge_gateway.localhw); here they are only checked to be tables and kept raw.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sensornode import protocol

from edge_gateway import boards
from edge_gateway.config_checks import ConfigErrors, Problems, Table, suggestion
from edge_gateway.configerror import ConfigError
from edge_gateway.writer import DEFAULT_LINGER_S, DEFAULT_MAX_BATCH, DEFAULT_MAX_PENDING

__all__ = [
    "BrokerConfig", "Config", "ConfigError", "ConfigErrors", "HomeAssistantConfig", "HttpConfig",
    "NodeConfig", "PlantProfile", "StorageConfig", "load_config", "parse_config",
]

SECTIONS = ("site", "broker", "storage", "nodes", "plants", "rules", "local_hardware",
            "homeassistant", "http")
MAX_STALE_S = 7 * 86400
MAX_REPORT_INTERVAL_S = 86400  # as the node's own config allows
DEFAULT_BATCH_MAX_MS = round(DEFAULT_LINGER_S * 1000)


@dataclass(frozen=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None  # from `password` or read from `password_file`
    ca_file: Path | None = None  # TLS when set
    client_id: str | None = None  # None: the gateway's default for the site

    def __repr__(self) -> str:  # keeps the password out of logs and tracebacks
        shown = "***" if self.password is not None else None
        return (f"BrokerConfig(host={self.host!r}, port={self.port}, username={self.username!r}, "
                f"password={shown}, ca_file={self.ca_file!r}, client_id={self.client_id!r})")


@dataclass(frozen=True)
class StorageConfig:
    path: Path
    raw_retention_days: int = 30
    hourly_retention_days: int = 365
    batch_max_messages: int = DEFAULT_MAX_BATCH  # commit after this many messages...
    batch_max_ms: int = DEFAULT_BATCH_MAX_MS  # ...or after waiting this long for more (0: none)


@dataclass(frozen=True)
class PlantProfile:
    """How to water one kind of bed: start below low, stop at high (the hysteresis band)."""

    name: str
    moisture_low_pct: float
    moisture_high_pct: float
    soak_s: int  # wait after a run before judging the moisture again
    max_run_s: int
    daily_budget_l: float
    flow_l_per_min: float


@dataclass(frozen=True)
class NodeConfig:
    name: str
    role: str  # "garden" or "drone"
    board: str | None = None
    plant: str | None = None  # a key of Config.plants
    key_file: Path | None = None  # the command-signing key
    stale_after_s: int = 300
    report_interval_s: int | None = None  # None: the node keeps its own setting


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = False
    prefix: str = "homeassistant"


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class Config:
    site: str
    broker: BrokerConfig
    storage: StorageConfig
    nodes: Mapping[str, NodeConfig]
    plants: Mapping[str, PlantProfile]
    homeassistant: HomeAssistantConfig
    http: HttpConfig
    rules_table: Mapping[str, Any]  # raw [rules]: edge_gateway.rules.parse_rules reads it
    local_hardware_table: Mapping[str, Any]  # raw [local_hardware], for edge_gateway.localhw
    source: Path | None = None
    timezone: str = "UTC"  # IANA name: rules' times of day and "today" are in it


def load_config(path: str | Path) -> Config:
    """Read and check the file; raises ConfigErrors listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigErrors([ConfigError(str(path), f"cannot be read ({reason})",
                                        "give the path of the gateway's TOML config file "
                                        "(start from docs/gateway.toml.example)")]) from exc
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigErrors([ConfigError(str(path), f"not valid TOML ({exc})",
                                        "fix the syntax at that line")]) from exc
    return parse_config(table, base_dir=path.resolve().parent, source=path)


def parse_config(table: Mapping[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Check a parsed TOML document; raises ConfigErrors listing every problem."""
    problems = Problems(base_dir)
    top = Table(problems, "", dict(table), SECTIONS)
    site_table = top.subtable("site", ("name", "timezone"))
    site_name = site_table.name("name")
    timezone = _timezone(site_table)
    broker = _broker(top.subtable("broker", (
        "host", "port", "username", "password", "password_file", "ca_file", "client_id")))
    storage = _storage(top)
    plants = {name: _plant(Table(problems, f"plants.{name}", value, PLANT_KEYS), name)
              for name, value in top.named_tables("plants").items()}
    nodes = {name: _node(Table(problems, f"nodes.{name}", value, NODE_KEYS), name, plants)
             for name, value in top.named_tables("nodes").items()}
    homeassistant = _homeassistant(top.subtable("homeassistant", ("enabled", "prefix")))
    http_table = top.subtable("http", ("host", "port"))
    http = HttpConfig(http_table.text("host", "127.0.0.1"), http_table.integer("port", 1, 65535,
                                                                                8080))
    rules_table = top.raw_table("rules")
    local_hardware_table = top.raw_table("local_hardware")
    if problems.errors:
        raise ConfigErrors(problems.errors, str(source) if source else "")
    return Config(
        site=site_name, timezone=timezone, broker=broker, storage=storage,
        nodes=MappingProxyType(nodes), plants=MappingProxyType(plants),
        homeassistant=homeassistant, http=http,
        rules_table=MappingProxyType(rules_table),
        local_hardware_table=MappingProxyType(local_hardware_table),
        source=source,
    )


def _timezone(table: Table) -> str:
    name = table.text("timezone", "UTC", '"Europe/Berlin"')
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        table.problems.add(table.path("timezone"), f"{name!r} is not a time zone this machine "
                           "knows", 'use an IANA name such as "Europe/Berlin" or "UTC" '
                           "(install the tzdata package if none are known)")
        return "UTC"
    return name


def _broker(table: Table) -> BrokerConfig:
    problems = table.problems
    username = table.optional_text("username", '"gateway"')
    password = table.optional_text("password")
    password_file = table.file("password_file", "a file holding the MQTT password")
    if table.has("password") and table.has("password_file"):
        problems.add("broker.password", "both password and password_file are set",
                     "keep only password_file (the password stays out of this file)")
    elif password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            problems.add("broker.password_file", f"{password_file} cannot be read ({exc})",
                         "make it readable by the gateway's user")
    if (table.has("password") or table.has("password_file")) and not table.has("username"):
        problems.add("broker.username", "missing: a password needs a user name",
                     'add username = "gateway" to [broker]')
    client_id = table.optional_text("client_id", '"neoterra-gw-home"')
    if client_id is not None and problems.ok("broker.client_id") and (
            not client_id.isprintable() or " " in client_id or len(client_id) > 128):
        problems.add("broker.client_id", f"{client_id!r} is not a usable MQTT client id",
                     "use up to 128 printable characters without spaces, or leave it out")
    return BrokerConfig(
        host=table.text("host", "127.0.0.1"),
        port=table.integer("port", 1, 65535, 1883),
        username=username, password=password,
        ca_file=table.file("ca_file", "the broker's CA certificate (PEM)"),
        client_id=client_id,
    )


def _storage(top: Table) -> StorageConfig:
    table = top.subtable("storage", ("path", "raw_retention_days", "hourly_retention_days",
                                     "batch_max_messages", "batch_max_ms"))
    path_text = table.text("path", example='"/var/lib/neoterra/neoterra.db"', max_len=4096)
    path = table.problems.base_dir / Path(path_text).expanduser()
    if table.problems.ok("storage.path") and path.is_dir():
        table.problems.add("storage.path", f"{path} is a directory",
                           "name the database file in it, e.g. "
                           f"{path / 'neoterra.db'}")
    storage = StorageConfig(
        path=path,
        raw_retention_days=table.integer("raw_retention_days", 1, 3650, 30),
        hourly_retention_days=table.integer("hourly_retention_days", 1, 36500, 365),
        batch_max_messages=table.integer("batch_max_messages", 1, DEFAULT_MAX_PENDING,
                                         DEFAULT_MAX_BATCH),
        batch_max_ms=table.integer("batch_max_ms", 0, 60_000, DEFAULT_BATCH_MAX_MS),
    )
    if table.problems.ok("storage.raw_retention_days", "storage.hourly_retention_days") and (
            storage.hourly_retention_days < storage.raw_retention_days):
        table.problems.add("storage.hourly_retention_days",
                           f"{storage.hourly_retention_days} is shorter than raw_retention_days "
                           f"({storage.raw_retention_days})",
                           "keep the hourly summaries at least as long as the raw readings")
    return storage


PLANT_KEYS = ("moisture_low_pct", "moisture_high_pct", "soak_s", "max_run_s", "daily_budget_l",
              "flow_l_per_min")


def _plant(table: Table, name: str) -> PlantProfile:
    problems, key = table.problems, table.key
    plant = PlantProfile(
        name=name,
        moisture_low_pct=table.number("moisture_low_pct", 0, 100),
        moisture_high_pct=table.number("moisture_high_pct", 0, 100),
        soak_s=table.integer("soak_s", 0, 86400, 600),
        max_run_s=table.integer("max_run_s", 1, protocol.MAX_IRRIGATE_S),
        daily_budget_l=table.number("daily_budget_l", 0, 100_000, above_low=True),
        flow_l_per_min=table.number("flow_l_per_min", 0, 1000, above_low=True),
    )
    if problems.ok(f"{key}.moisture_low_pct", f"{key}.moisture_high_pct") and (
            plant.moisture_high_pct <= plant.moisture_low_pct):
        problems.add(f"{key}.moisture_high_pct",
                     f"{plant.moisture_high_pct:g} is not above moisture_low_pct "
                     f"({plant.moisture_low_pct:g})",
                     "watering starts below moisture_low_pct and stops at moisture_high_pct: "
                     "make high at least a few points above low")
    if problems.ok(f"{key}.max_run_s", f"{key}.flow_l_per_min", f"{key}.daily_budget_l"):
        one_run_l = plant.max_run_s * plant.flow_l_per_min / 60
        if one_run_l > plant.daily_budget_l:
            problems.add(f"{key}.max_run_s",
                         f"one run of {plant.max_run_s} s at {plant.flow_l_per_min:g} l/min uses "
                         f"{one_run_l:g} l, more than daily_budget_l ({plant.daily_budget_l:g})",
                         "shorten max_run_s or raise daily_budget_l")
    return plant


NODE_KEYS = ("role", "board", "plant", "key_file", "stale_after_s", "report_interval_s")


def _node(table: Table, name: str, plants: Mapping[str, PlantProfile]) -> NodeConfig:
    problems, key = table.problems, table.key
    role = table.choice("role", protocol.ROLES)
    node = NodeConfig(
        name=name, role=role,
        board=table.optional_text("board", '"esp32_devkitc"'),
        plant=table.optional_text("plant", '"tomatoes"'),
        key_file=table.file("key_file", "the node's command-signing key"),
        stale_after_s=table.integer("stale_after_s", 10, MAX_STALE_S, 300),
        report_interval_s=table.optional_integer("report_interval_s", 1, MAX_REPORT_INTERVAL_S),
    )
    if node.board is not None and problems.ok(f"{key}.board", f"{key}.role"):
        _check_board(problems, key, node.board, role)
    if node.plant is not None and problems.ok(f"{key}.plant"):
        if role == "drone" and problems.ok(f"{key}.role"):
            problems.add(f"{key}.plant", "a drone node has no plants to water",
                         "remove plant, or set role = \"garden\"")
        elif node.plant not in plants:
            problems.add(f"{key}.plant", f"no plant profile {node.plant!r}",
                         f"{suggestion(node.plant, plants)}add a [plants.{node.plant}] section"
                         + (f" or use one of: {', '.join(sorted(plants))}" if plants else ""))
    if node.report_interval_s is not None and problems.ok(
            f"{key}.stale_after_s", f"{key}.report_interval_s") and (
            node.stale_after_s < 2 * node.report_interval_s):
        problems.add(f"{key}.stale_after_s",
                     f"{node.stale_after_s} s is less than two report intervals "
                     f"({node.report_interval_s} s each)",
                     f"set stale_after_s to at least {2 * node.report_interval_s}, or the node "
                     "is marked stale between two healthy reports")
    return node


def _check_board(problems: Problems, key: str, board: str, role: str) -> None:
    shipped = boards.shipped_profiles()
    if not shipped:  # installed without the boards/ directory: nothing to check against
        return
    if board not in shipped:
        problems.add(f"{key}.board", f"no board profile {board!r}",
                     f"{suggestion(board, shipped)}use one of: {', '.join(shipped)}")
    elif role not in boards.shipped_roles(board):
        problems.add(f"{key}.board", f"board {board!r} has no {role} profile",
                     f"its profiles: {', '.join(boards.shipped_roles(board)) or 'none'}; "
                     "pick another board or role")


def _homeassistant(table: Table) -> HomeAssistantConfig:
    prefix = table.text("prefix", "homeassistant")
    if table.problems.ok("homeassistant.prefix") and (
            any(ch in prefix for ch in "+#\0") or "" in prefix.split("/")):
        table.problems.add("homeassistant.prefix", f"{prefix!r} is not an MQTT topic prefix",
                           'use levels without "+", "#" or empty parts, e.g. "homeassistant"')
    return HomeAssistantConfig(enabled=table.boolean("enabled", False), prefix=prefix)
