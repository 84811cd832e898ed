"""Process helpers for tests: bounded waits and stopping what we started, by PID."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.05,
    proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None,
) -> object:
    """Poll predicate until it returns a truthy value; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"process for {what} exited with {proc.returncode}: {err!r}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop_process(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    sig: int = signal.SIGTERM,
    grace: float = 5.0,
) -> int:
    """Signal the process, wait up to `grace` seconds, then SIGKILL; always reaps it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            stream.close()
    return int(proc.returncode)
