# Boot safety of a running node: says why it (re)started, keeps it in safe mode after a boot
# loop (actuators disabled, still reporting and taking commands) until the gateway clears it,
# and feeds the hardware watchdog only while the node's control loop really ticks - a broker
# or Wi-Fi outage keeps the loop ticking, so it never causes a reset.
#
#   Node.__init__, last:    self.boot_safety = BootSafety(self, board, root)
#   Node.run():             a task for boot_safety.task() (the feeder)
#   control loop, each tick that went through:  boot_safety.loop_tick()
#
# Policy (sensornode.bootguard): max_unexplained (3) unexplained resets in a row, none of them
# healthy for healthy_after_s (120 s), mean a boot loop. Deep-sleep wake-ups are explained.
#
# MicroPython subset: no typing at runtime.
import asyncio

from sensornode import compat
from sensornode.bootguard import BootGuard, LoopWatchdog

BOOTS_FILE = "boots.json"
# Every port takes this timeout (the RP2040's watchdog tops out at 8388 ms).
WDT_TIMEOUT_MS = 8000
FEED_EVERY_MS = 1000
# The control loop ticks at least every 200 ms; silent this long it is stuck or dead, and the
# node is better reset than left with nothing enforcing its actuators' limits.
LOOP_STALL_S = 10


def describe(event):
    """The detail of the boot event: why this boot happened and what the guard made of it."""
    parts = []
    if event.get("explained"):
        parts.append(event["explained"])
    else:
        parts.append("%d unexplained in a row" % event.get("unexplained", 0))
    if event.get("safe_mode"):
        parts.append("safe mode: " + event.get("safe_reason", ""))
    if event.get("error"):
        parts.append(event["error"])
    return "; ".join(parts)


class BootSafety:
    def __init__(self, node, board, root="", guard=None, stall_s=LOOP_STALL_S,
                 wdt_timeout_ms=WDT_TIMEOUT_MS):
        """Records this boot (at once: the first boot of a loop may not live long) and puts
        node.safety in safe mode when the guard says so."""
        self._node = node
        self._board = board
        self.guard = guard or BootGuard(root + BOOTS_FILE)
        self.reset_cause = board.reset_cause()
        # 0 while the clock is unknown: the guard then counts the boot as inside its window.
        event = self.guard.boot(self.reset_cause, node.clock.now() or 0)
        self.boot_event = event
        node.event("boot", "reset", self.reset_cause, describe(event))
        if self.guard.safe_mode:
            node.safety.disable("safe mode: " + self.guard.safe_reason)
        node.on_clear_safe_mode = self.clear_safe_mode
        self.dog = LoopWatchdog(stall_s, compat.ticks_ms())
        self.wdt_timeout_ms = wdt_timeout_ms
        self.wdt = None
        self.feeds = 0
        self.starving = ""  # why the feeder stopped feeding; "" while it feeds

    @property
    def safe_mode(self):
        return self.guard.safe_mode

    def loop_tick(self, now_ms=None):
        """The control loop made it through one tick: the node is healthy."""
        self.dog.tick(compat.ticks_ms() if now_ms is None else now_ms)
        if not self.guard.healthy:
            self.guard.mark_healthy(compat.monotonic_ms() / 1000)

    def clear_safe_mode(self, cmd):
        """The "clear_safe_mode" command (Node.on_clear_safe_mode): (ok, detail)."""
        source = "cmd " + cmd["id"]
        if not self.guard.safe_mode:
            return True, "not in safe mode"
        was = self.guard.safe_reason
        try:
            self.guard.clear()
        except OSError as exc:
            return False, "error: boot log not saved (%s); still in safe mode" % (exc,)
        self._node.safety.enable(source)  # its event says who cleared it and what it was
        return True, "safe mode cleared (was: %s)" % was

    def feed_once(self, now_ms=None):
        """One feeder step: True if the watchdog was fed."""
        now = compat.ticks_ms() if now_ms is None else now_ms
        wdt = self.wdt
        if wdt is None:
            return False  # not started yet: task() starts it
        if self.dog.should_feed(now):
            wdt.feed()
            self.feeds += 1
            self.starving = ""
            return True
        if not self.starving:
            self.starving = self.dog.stop_reason or (
                "control loop silent for over %d s" % (self.dog.stall_ms // 1000))
            # On flash before the reset: the gateway learns after the reboot why it happened.
            self._node.event("fault", "watchdog", "starving",
                             self.starving + "; the watchdog resets the node")
        return False

    async def task(self):
        """The feeder: starts the hardware watchdog (it cannot be stopped again) and feeds it
        while the control loop ticks."""
        self.wdt = self._board.watchdog(self.wdt_timeout_ms)
        while True:
            try:
                self.feed_once()
            except Exception as exc:  # a passing fault (MemoryError) must not end the feeder
                print("[node] watchdog feeder:", repr(exc))  # a lasting one: the watchdog bites
            await asyncio.sleep(FEED_EVERY_MS / 1000)
