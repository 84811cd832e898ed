# Boot safety: remembers why the node reset, notices a boot loop and then keeps the node in
# safe mode (actuators disabled, still reporting and accepting config) until told otherwise;
# and the watchdog policy: feed machine.WDT only while the main loop really ticks.
#
#   guard = BootGuard("boots.json")
#   event = guard.boot(board.reset_cause(), compat.unix_time())  # first thing at boot
#   publish("boot", event)               # {"reset_cause", "boot", "unexplained", "safe_mode",
#                                        #  "safe_reason"}
#   if guard.safe_mode: safety.disable("safe mode: " + guard.safe_reason)
#   ... main loop: guard.mark_healthy(uptime_s) while the loop is healthy
#   ... before machine.reset() for an update: guard.before_deliberate_reset("update")
#   ... on the gateway's "clear safe mode" command (or a config flag): guard.clear()
#
# Boot loop: a boot is "unexplained" unless it woke from deep sleep, followed a deliberate
# reset (before_deliberate_reset()), or is a power-on more than long_off_s after the previous
# boot (only known when both boots had a set clock). Walking back from this boot, the
# unexplained boots that never became healthy (healthy_after_s of healthy uptime, recorded by
# mark_healthy()) are counted, stopping at a healthy or explained boot or at one more than
# window_s before this one (when both times are known; an unset clock at boot - a board
# without a battery-backed RTC - counts the boot as inside the window: a loop is
# short by nature). max_unexplained such boots in a row put the node into safe mode, which is
# saved and survives further reboots until clear().
#
# Flash: the file (a few hundred bytes of JSON, written tmp + rename like voc_state) is
# written once per boot and once when the boot becomes healthy; a damaged file is started
# afresh (reported as "boot log unreadable").
#
# MicroPython subset: no typing at runtime.
import json
import os

from sensornode.compat import ticks_diff

try:
    from typing import Any, Dict, List, Optional  # noqa: F401  (used in type comments)
except ImportError:
    pass

KEEP_BOOTS = 16
CLOCK_SET_AFTER_S = 1600000000  # a wall clock before 2020-09 was never set
EXPLAINED_CAUSES = ("deepsleep",)


class BootGuard:
    def __init__(self, path: str = "boots.json", max_unexplained: int = 3,
                 window_s: float = 600.0, healthy_after_s: float = 120.0,
                 long_off_s: float = 600.0) -> None:
        if isinstance(max_unexplained, bool) or not isinstance(max_unexplained, int) \
                or not 2 <= max_unexplained <= KEEP_BOOTS:
            raise ValueError("bootguard.max_unexplained: must be a whole number 2..%d, got %r"
                             % (KEEP_BOOTS, max_unexplained))
        for field, value in (("window_s", window_s), ("healthy_after_s", healthy_after_s),
                             ("long_off_s", long_off_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 < value <= 7 * 86400:
                raise ValueError("bootguard.%s: must be seconds in (0, 604800], got %r"
                                 % (field, value))
        self.path = path
        self.max_unexplained = max_unexplained
        self.window_s = window_s
        self.healthy_after_s = healthy_after_s
        self.long_off_s = long_off_s
        self.boots = []  # type: List[Dict[str, Any]]
        self.safe_mode = False
        self.safe_reason = ""
        self.deliberate = ""
        self.healthy = False
        self.load_error = ""

    # ---- file ----------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            with open(self.path) as f:
                data = json.loads(f.read())
        except OSError:
            return  # first boot
        except ValueError:
            self.load_error = "boot log unreadable"
            return
        if not isinstance(data, dict) or not isinstance(data.get("boots"), list):
            self.load_error = "boot log unreadable"
            return
        self.boots = [b for b in data["boots"] if isinstance(b, dict)][-KEEP_BOOTS:]
        self.safe_mode = bool(data.get("safe_mode"))
        self.safe_reason = str(data.get("safe_reason") or "")
        self.deliberate = str(data.get("deliberate") or "")

    def _save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps({"boots": self.boots, "safe_mode": self.safe_mode,
                                "safe_reason": self.safe_reason,
                                "deliberate": self.deliberate}))
        sync = getattr(os, "sync", None)
        if sync is not None:
            sync()
        os.rename(tmp, self.path)

    # ---- boot ----------------------------------------------------------------------------

    def _explained(self, cause: str, at: float, previous: "Optional[Dict[str, Any]]") -> str:
        if self.deliberate:
            return "deliberate: " + self.deliberate
        if cause in EXPLAINED_CAUSES:
            return cause
        if cause == "power_on" and previous is not None and at and previous.get("at") \
                and at - previous["at"] >= self.long_off_s:
            return "power_on after %d s" % (at - previous["at"])
        return ""

    def boot(self, reset_cause: str, now_s: float) -> "Dict[str, Any]":
        """Record this boot (call once, first thing); returns the event to report."""
        self._load()
        at = now_s if now_s >= CLOCK_SET_AFTER_S else 0
        previous = self.boots[-1] if self.boots else None
        explained = self._explained(reset_cause, at, previous)
        self.deliberate = ""
        entry = {"cause": reset_cause, "at": at, "healthy": False, "explained": explained}
        self.boots.append(entry)
        del self.boots[:-KEEP_BOOTS]
        streak = self.unexplained_streak()
        if streak >= self.max_unexplained and not self.safe_mode:
            self.safe_mode = True
            self.safe_reason = "%d unexplained resets in a row (last: %s) without %d s healthy" \
                % (streak, reset_cause, self.healthy_after_s)
        try:
            self._save()
        except OSError as exc:
            self.load_error = "boot log not saved: %s" % (exc,)
        event = {"reset_cause": reset_cause, "boot": len(self.boots), "unexplained": streak,
                 "explained": explained, "safe_mode": self.safe_mode,
                 "safe_reason": self.safe_reason}
        if self.load_error:
            event["error"] = self.load_error
        return event

    def unexplained_streak(self) -> int:
        """Unexplained, never-healthy boots in a row up to this one (within window_s)."""
        if not self.boots:
            return 0
        newest = self.boots[-1]
        count = 0
        for entry in reversed(self.boots):
            if entry.get("explained") or (entry is not newest and entry.get("healthy")):
                break
            if entry is not newest and entry.get("cleared"):
                break
            if newest.get("at") and entry.get("at") and newest["at"] - entry["at"] > self.window_s:
                break
            count += 1
        return count

    # ---- while running -------------------------------------------------------------------

    def mark_healthy(self, uptime_s: float) -> bool:
        """Call from the main loop while it is healthy; once uptime_s reaches healthy_after_s
        this boot is recorded as healthy (one write). True when it is."""
        if self.healthy or not self.boots:
            return self.healthy
        if uptime_s < self.healthy_after_s:
            return False
        self.healthy = True
        self.boots[-1]["healthy"] = True
        try:
            self._save()
        except OSError:
            pass  # retried never: at worst a later loop counts this boot as unhealthy
        return True

    def before_deliberate_reset(self, reason: str) -> None:
        """Call just before machine.reset() (an update, a config change): the next boot is
        explained, not part of a loop."""
        self.deliberate = reason or "reset"
        self._save()

    def clear(self) -> None:
        """Leave safe mode (a command or config): earlier boots no longer count."""
        self.safe_mode = False
        self.safe_reason = ""
        for entry in self.boots:
            entry["cleared"] = True
        self._save()


class LoopWatchdog:
    """Feed the hardware watchdog only while the main loop ticks. A broker or Wi-Fi outage is
    healthy (the loop keeps ticking while it reconnects): never a reason to reset; a loop that
    stopped (stuck in a driver, an exception in the loop task) is, after stall_s.

        dog = LoopWatchdog(stall_s=30)
        main loop, every iteration:   dog.tick(ticks_ms())
        feeder task, every 1-2 s:     if dog.should_feed(ticks_ms()): wdt.feed()
    """

    def __init__(self, stall_s: float = 30.0, now_ms: int = 0) -> None:
        if isinstance(stall_s, bool) or not isinstance(stall_s, (int, float)) \
                or not 0 < stall_s <= 3600:
            raise ValueError("watchdog.stall_s: must be seconds in (0, 3600], got %r"
                             % (stall_s,))
        self.stall_ms = int(stall_s * 1000)
        self._last_tick = now_ms
        self.stop_reason = ""

    def tick(self, now_ms: int) -> None:
        self._last_tick = now_ms

    def stop_feeding(self, reason: str) -> None:
        """Let the watchdog reset the node (a fault only a reset cures)."""
        self.stop_reason = reason or "stopped"

    def loop_healthy(self, now_ms: int) -> bool:
        return ticks_diff(now_ms, self._last_tick) <= self.stall_ms

    def should_feed(self, now_ms: int) -> bool:
        return not self.stop_reason and self.loop_healthy(now_ms)
