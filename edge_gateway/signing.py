"""Signing commands for the nodes: per-node keys from key files, a counter per node that never
repeats, and the HMAC-SHA256 the node checks (firmware/sensornode/cmdauth.py).

A node accepts a command only if its signature matches the node's key and its counter is
above the last one the node accepted (docs/protocol.md, "cmd"). The counters live in the
gateway's SQLite store, taken in a transaction, so neither a restart nor two `neoterra`
processes at once ever sign two commands with the same counter. A counter is also never
below the current Unix time in milliseconds: a gateway whose database was lost or replaced
still counts above everything it sent before, as long as its clock is right.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sensornode import protocol

from edge_gateway.store import Store

KEY_BYTES = 32
KEY_SUFFIX = ".key"

_COUNTER_TABLE = """CREATE TABLE IF NOT EXISTS command_counters (
    node TEXT PRIMARY KEY,
    counter INTEGER NOT NULL     -- the last counter signed for the node
)"""


class KeyFileError(ValueError):
    """A node's key file is missing or unusable; the message names the file and the fix."""


def signature(key: bytes, unsigned: bytes) -> str:
    return hmac.new(key, unsigned, hashlib.sha256).hexdigest()


def parse_key(text: str, where: str) -> bytes:
    """The key in a key file's text (64 hex digits, surrounding whitespace allowed)."""
    hex_digits = text.strip()
    try:
        key = bytes.fromhex(hex_digits)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES or len(hex_digits) != 2 * KEY_BYTES:
        # Never echo the text: it is (nearly) a secret.
        raise KeyFileError(
            f"{where}: must hold {2 * KEY_BYTES} hex digits (a {KEY_BYTES}-byte key), got "
            f"{len(hex_digits)} characters{'' if key else ' that are not all hex'}; "
            "write a new one with `neoterra keygen NODE` and put the same text in the "
            "node's cmd_key"
        )
    return key


class KeyRing:
    """The nodes' keys: `<directory>/<node>.key`, each the node's cmd_key in hex, unless
    `files` names a node's file (the gateway config's [nodes.<name>] key_file)."""

    def __init__(self, directory: str | Path, files: Mapping[str, Path] | None = None) -> None:
        self.directory = Path(directory)
        self.files = dict(files or {})

    def path(self, node: str) -> Path:
        given = self.files.get(node)
        if given is not None:
            return given
        return self.directory / f"{protocol.check_name('node', node)}{KEY_SUFFIX}"

    def key(self, node: str) -> bytes:
        path = self.path(node)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise KeyFileError(
                f"{path}: no key for node {node}; make one with `neoterra keygen {node}` "
                f"(it writes this file) and put the same text in the node's cmd_key"
            ) from None
        except (OSError, UnicodeError) as exc:
            raise KeyFileError(f"{path}: cannot be read ({exc}); check its permissions") from exc
        return parse_key(text, str(path))

    def create(self, node: str) -> Path:
        """Write a new random key for `node`, readable by the owner only; refuses to
        overwrite (the node would refuse every command until it got the new key too)."""
        path = self.path(node)
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileError(
                f"{path}: node {node} already has a key; delete the file first if you mean "
                "to replace it (and give the node the new one)"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(KEY_BYTES) + "\n")
        return path


class Signer:
    """Signs commands with the nodes' keys and counters kept in `store`."""

    def __init__(self, store: Store, keys: KeyRing,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.keys = keys
        self._clock = clock
        with store.transaction() as db:
            db.execute(_COUNTER_TABLE)

    def next_counter(self, node: str) -> int:
        floor = int(self._clock() * 1000)
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT counter FROM command_counters WHERE node = ?", (node,)
            ).fetchone()
            counter = max(floor, 1 if row is None else int(row[0]) + 1)
            db.execute(
                "INSERT INTO command_counters (node, counter) VALUES (?, ?)"
                " ON CONFLICT (node) DO UPDATE SET counter = excluded.counter",
                (node, counter),
            )
        return counter

    def sign(self, node: str, cmd_id: str, action: str, params: dict[str, Any],
             ts: float, expires: float = 0) -> tuple[int, bytes]:
        """(counter, payload) of the signed command. The key is read before a counter is
        taken, so a node without a key costs nothing."""
        key = self.keys.key(node)
        counter = self.next_counter(node)
        unsigned = protocol.encode_command(cmd_id, action, params, ts, node, counter, expires)
        return counter, protocol.sign_command(unsigned, signature(key, unsigned))
