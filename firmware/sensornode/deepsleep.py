# Deep sleep for battery garden nodes (config power.deep_sleep_s > 0). Each wake the node runs
# as usual for a short, bounded while: every sensor updates once, the readings go to the
# broker if the link comes up in time (else they wait in the flash outbox for a later wake),
# then every actuator is switched off through the safety layer and the board sleeps
# deep_sleep_s. Nothing runs across a sleep: the last thing before machine.deepsleep() is the
# switch-off, with no await in between, so no command or local rule can slip in.
#
# Reported (events of kind "boot", name "sleep"): "start" before each sleep (cycle, planned
# sleep, time awake), "woke" after it (time really slept when the wall clock knows both ends).
# A wake-up is an explained boot for the boot guard.
#
# MicroPython subset: no typing at runtime.
import asyncio
import json
import os

from sensornode import compat

SLEEP_FILE = "sleep.json"
MEASURE_MAX_MS = 15000  # every component's first update (a DS18B20 conversion takes 750 ms)
CONNECT_MAX_MS = 15000  # Wi-Fi and broker, once per wake
DRAIN_MAX_MS = 10000  # the outbox to the broker while the link is up
LAST_WORDS_MAX_MS = 2000  # the sleep event itself
POLL_MS = 100
RETRY_MS = 5000
SOURCE = "local deep sleep"


def _load(path):
    try:
        with open(path) as f:
            record = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class DeepSleep:
    def __init__(self, node, board, root, sleep_s, reset_cause):
        if isinstance(sleep_s, bool) or not isinstance(sleep_s, int) or sleep_s < 1:
            raise ValueError("power.deep_sleep_s: must be a whole number of seconds >= 1 to "
                             "sleep, got %r" % (sleep_s,))
        self._node = node
        self._board = board
        self._path = root + SLEEP_FILE
        self.sleep_ms = sleep_s * 1000
        self.awake_since = compat.ticks_ms()
        record = _load(self._path) or {}
        self.cycle = record.get("cycle", 0) if isinstance(record.get("cycle"), int) else 0
        self.slept_s = None  # how long the last sleep really was, when the clock knows
        if reset_cause == "deepsleep":
            self._woke(record)

    def _woke(self, record):
        planned_s = record.get("ms", self.sleep_ms) / 1000
        now = self._node.clock.now()
        at = record.get("at")
        if now is not None and isinstance(at, (int, float)) and at > 0:
            self.slept_s = now - at
            detail = "cycle %d: slept %.1f s of %d s" % (self.cycle, self.slept_s, planned_s)
        else:
            detail = "cycle %d: slept ~%d s (clock unknown)" % (self.cycle, planned_s)
        self._node.event("boot", "sleep", "woke", detail)

    def measured(self):
        """Every sensor has been read once (or has failed trying)."""
        for comp in self._node.sensors.components:
            if comp.updates < 1 or comp.state == "setup":
                return False
        return True

    async def _until(self, predicate, max_ms):
        start = compat.ticks_ms()
        while not predicate():
            if compat.ticks_diff(compat.ticks_ms(), start) >= max_ms:
                return False
            await asyncio.sleep(POLL_MS / 1000)
        return True

    def _drained(self):
        return self._node.outbox.pending == 0

    def all_off(self):
        """Switch every actuator off through the safety layer; True when all are off."""
        safety = self._node.safety
        outputs = safety.outputs()
        for name in outputs:
            if outputs[name]:
                safety.request(name, 0, SOURCE, 1)
        outputs = safety.outputs()
        return not any(outputs[name] for name in outputs)

    async def task(self):
        """One wake: measure, report, switch off, sleep (this never returns on a device)."""
        node = self._node
        await self._until(self.measured, MEASURE_MAX_MS)
        if await self._until(lambda: node.link.is_up, CONNECT_MAX_MS):
            await self._until(self._drained, DRAIN_MAX_MS)
        self.all_off()
        awake_ms = compat.ticks_diff(compat.ticks_ms(), self.awake_since)
        node.event("boot", "sleep", "start", "cycle %d: %d s; awake %.1f s" % (
            self.cycle + 1, self.sleep_ms // 1000, awake_ms / 1000))
        if node.link.is_up:
            await self._until(self._drained, LAST_WORDS_MAX_MS)
        if self.sleep():
            return  # only where deepsleep() returns (host tests)
        # The safety layer could not switch something off: never sleep with it on.
        node.event("fault", "sleep", "refused", "an actuator is still on: %s"
                   % node.safety.outputs())
        while not self.sleep():
            await asyncio.sleep(RETRY_MS / 1000)

    def sleep(self):
        """Switch everything off and deep-sleep at once (no await: nothing can start between);
        False (awake) if something would not switch off."""
        if not self.all_off():
            return False
        record = {"cycle": self.cycle + 1, "at": self._node.clock.now() or 0,
                  "ms": self.sleep_ms}
        tmp = self._path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(record))
            os.rename(tmp, self._path)
        except OSError:
            pass  # the wake-up then says "clock unknown": not worth staying awake for
        self._board.deepsleep(self.sleep_ms)
        return True
