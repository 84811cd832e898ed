"""A step run every `interval_s` in a daemon thread until stop(): the shape of the daemon's
background services (history maintenance, stale watch, rules). A failing step is logged with
its traceback and tried again next period; stop() waits a bounded time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, step: Callable[[], object], interval_s: float) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """True once stop() was called: a long step may check it between its parts."""
        return self._stopping.is_set()

    def pause(self, seconds: float) -> bool:
        """Wait inside a step; True if stop() was called (the step should end)."""
        return self._stopping.wait(seconds)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"neoterra-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to stop and wait for it; False if it is still busy after `timeout`."""
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        self._stopping.set()
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.step()
            except Exception:  # e.g. the database locked for long: try again next period
                log.exception("%s failed", self.name)
            if self._stopping.wait(self.interval_s):
                return
