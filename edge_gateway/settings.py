"""Where the gateway and the CLI find the broker, the site and the database.

Each setting comes from its command-line flag, else its environment variable, else the
default; a bad value is reported with where it came from and how to write it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from sensornode import protocol

DEFAULT_BROKER = "127.0.0.1:1883"
DEFAULT_SITE = "home"
DEFAULT_DB = "neoterra.db"
DEFAULT_MQTT_PORT = 1883
ENV_BROKER = "NEOTERRA_BROKER"
ENV_SITE = "NEOTERRA_SITE"
ENV_DB = "NEOTERRA_DB"

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names its source and the fix."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_broker(text: str) -> BrokerAddress:
    """HOST:PORT, HOST (port 1883) or [IPv6]:PORT."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [IPV6]:PORT")
        has_port, port_text = bool(rest), rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        has_port = True
    else:  # a bare host name, IPv4 or IPv6 address
        host, has_port, port_text = text, False, ""
    if not host:
        raise ValueError(f"{text!r} has no host; use HOST:PORT, e.g. {DEFAULT_BROKER}")
    if not has_port:
        return BrokerAddress(host, DEFAULT_MQTT_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(
            f"port {port_text!r} is not a number in 1-65535; use HOST:PORT, e.g. {DEFAULT_BROKER}"
        )
    return BrokerAddress(host, int(port_text))


def parse_site(text: str) -> str:
    if not protocol.valid_name(text):
        raise ValueError(f"{text!r} is not a site name; use 1-32 characters of a-z, 0-9, - or _")
    return text


def resolve(
    flag_value: str | None,
    flag: str,
    env_var: str,
    default: str,
    parse: Callable[[str], T],
    environ: Mapping[str, str] | None = None,
) -> T:
    """Parse the first of flag, environment variable, default that is set."""
    environ = os.environ if environ is None else environ
    if flag_value is not None:
        source, text = flag, flag_value
    elif environ.get(env_var):
        source, text = f"${env_var}", environ[env_var]
    else:
        source, text = "default", default
    try:
        return parse(text)
    except ValueError as exc:
        raise SettingsError(f"{source}: {exc}") from exc


def broker_setting(flag_value: str | None) -> BrokerAddress:
    return resolve(flag_value, "--broker", ENV_BROKER, DEFAULT_BROKER, parse_broker)


def site_setting(flag_value: str | None) -> str:
    return resolve(flag_value, "--site", ENV_SITE, DEFAULT_SITE, parse_site)


def db_setting(flag_value: str | None) -> str:
    return resolve(flag_value, "--db", ENV_DB, DEFAULT_DB, _parse_path)


def _parse_path(text: str) -> str:
    if not text.strip():
        raise ValueError("an empty path; give a file name, e.g. ./neoterra.db")
    return text
