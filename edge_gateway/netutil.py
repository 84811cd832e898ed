"""Small network helpers shared by the CLI, the demo and the tests (loopback only)."""

from __future__ import annotations

import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def parse_broker(value: str, flag: str = "--broker") -> tuple[str, int]:
    """'HOST:PORT' or 'HOST' (port 1883) -> (host, port); ValueError naming the flag and the fix."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = value, "1883"
    if not host:
        raise ValueError(f"{flag}: {value!r} has no host; use HOST:PORT, e.g. 127.0.0.1:1883")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{flag}: {port_text!r} is not a port; use HOST:PORT with a port 1-65535")
    return host, int(port_text)


def wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing is listening on {host}:{port} ({exc})") from exc
            time.sleep(0.1)
