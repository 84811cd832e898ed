"""Stopping the processes we started, by PID, always reaped: shared by the demo, the emulator
launcher and the tests."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace: float = 5.0) -> int:
    """Signal the process, wait up to `grace` seconds, then SIGKILL; return its exit code."""
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
