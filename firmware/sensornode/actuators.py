# Timed actuator runs: a pump or a diffuser channel switched on for N seconds and switched off
# by the node's own timer, so a lost link or a stalled gateway can never leave it running.
import asyncio

from sensornode import compat


class TimedRun:
    """One run at a time of one output, never longer than max_run_s."""

    def __init__(self, name, max_run_s, switch_off, on_change, limit_field):
        self.name = name
        self._max_run_s = max_run_s
        self._switch_off = switch_off
        self._on_change = on_change
        self._limit_field = limit_field  # the config field to name when refusing
        self._task = None
        self._ends_ms = 0
        self.running = False

    def remaining_s(self):
        if not self.running:
            return 0
        return max(0, compat.ticks_diff(self._ends_ms, compat.ticks_ms()) // 1000)

    def start(self, seconds, reason, switch_on):
        """Return (ok, detail); on ok the output is already on and its off-timer running."""
        if seconds > self._max_run_s:
            return False, "seconds=%d exceeds %s=%d" % (seconds, self._limit_field, self._max_run_s)
        if self.running:
            return False, "%s already running, %d s left" % (self.name, self.remaining_s())
        self._ends_ms = compat.ticks_add(compat.ticks_ms(), seconds * 1000)
        switch_on()
        self.running = True
        self._on_change("on", reason)
        self._task = asyncio.create_task(self._stop_after(seconds * 1000, reason))
        return True, "%s on for %d s" % (self.name, seconds)

    def stop(self, reason):
        """Switch off now (a command asked for 0, or the node is shutting down)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.running:
            self._off(reason)

    def _off(self, reason):
        self._switch_off()
        self.running = False
        self._on_change("off", reason)

    async def _stop_after(self, ms, reason):
        try:
            await asyncio.sleep(ms / 1000)
        except asyncio.CancelledError:
            return  # stop() switched off already
        self._task = None
        self._off(reason)
