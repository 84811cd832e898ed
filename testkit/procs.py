"""Process helpers for tests: bounded waits and stopping what we started, by PID."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from edge_gateway.procutil import stop_process

__all__ = ["stop_process", "wait_for"]


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.05,
    proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None,
) -> object:
    """Poll predicate until it returns a truthy value; fail with `what` after timeout seconds.

    `what` may be a callable, evaluated only on failure: a description that quotes a node's
    log then shows the log as it was when the wait gave up, not when it began."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(
                f"process for {_describe(what)} exited with {proc.returncode}: {err!r}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {_describe(what)}")
        time.sleep(interval)


def _describe(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()
