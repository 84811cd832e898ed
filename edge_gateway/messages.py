"""What the gateway stores and reads back: decoded node messages and the rows they become.

Plain frozen dataclasses with no I/O; `edge_gateway.store` writes and queries them (and
re-exports them, so `from edge_gateway.store import Reading` keeps working).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reading:
    node: str
    seq: int
    ts: float
    quantity: str
    value: float
    received_at: float


@dataclass(frozen=True)
class Telemetry:
    site: str
    node: str
    readings: tuple[Reading, ...]
    received_at: float


@dataclass(frozen=True)
class Status:
    site: str
    node: str
    online: bool
    received_at: float
    role: str = ""
    fw: str = ""
    board: str = ""
    uptime_s: int = 0
    seq_next: int = 0
    seq_last: int | None = None  # the last seq the node's earlier boots took, when it knows
    config_version: str = ""  # the desired config version the node has applied ("" none)


@dataclass(frozen=True)
class Event:
    site: str
    node: str
    seq: int
    ts: float
    kind: str
    name: str
    state: str
    detail: str
    received_at: float


@dataclass(frozen=True)
class Ack:
    site: str
    node: str
    cmd_id: str
    ok: bool
    result: str
    detail: str
    ts: float
    received_at: float


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: str
    received_at: float


Message = Telemetry | Status | Event | Ack | DeadLetter


@dataclass(frozen=True)
class NodeInfo:
    node: str
    site: str
    online: bool | None  # None: no status seen yet
    role: str | None
    fw: str | None
    board: str | None
    seq_next: int | None
    uptime_s: int | None
    last_seen: float | None
    changed_at: float | None
