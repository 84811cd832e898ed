# Node clock: Unix time from the gateway's time messages (nt/<site>/time) and the monotonic
# millisecond counter, so readings buffered while offline carry correct times. MicroPython
# subset (docs/protocol.md, "time", describes the message and this clock).
#
# Each time message gives a sample offset = gateway time - monotonic ms at receipt. The message
# took some transit time d >= 0 (QoS 0, one way, no round trip to measure), so every sample is
# d too small: the clock keeps the largest sample of the last `window` messages, the one that
# was least delayed. Its time then lags the gateway's by that message's transit (ms on a LAN,
# more if every message in the window was held up), plus the node crystal's drift since that
# sample (50 ppm over 8 x 60 s is 24 ms). A gateway clock stepped backwards takes effect once
# the samples from before the step have left the window; forwards at once.
#
# Before the first message, the board's RTC stands in if it is plausible (the unix port's is
# the host clock; a cold-booted ESP32 without NTP counts from 2000 and is not). Without either,
# stamp() gives a pending stamp (boot, monotonic ms) that resolve() turns into Unix time once
# the clock is synced. Monotonic ms start again at each boot, so a pending stamp carries its
# boot id (pass the boot's first seq: unique, and it only grows): a stamp of an earlier boot
# resolves only if that boot synced before it ended and the clock was given a `path` to note
# each boot's offset in; otherwise resolve() returns None and the reading has no known time.
#
# Arithmetic is in integer ms: a single-precision float (ESP32, RP2 ports) holds Unix time only
# to about +-64 s, so there Unix seconds are returned as whole ints.
import json
import os

from sensornode import protocol
from sensornode.compat import monotonic_ms, unix_time

RTC_PLAUSIBLE_S = 1600000000  # 2020-09-13: an RTC earlier than this was never set
WINDOW = 8  # time messages the least-delayed sample is chosen from
_KEEP_BOOTS = 4  # boots whose offsets a clock file keeps
_DOUBLE = float(1795300000123) == 1795300000123  # floats hold Unix ms exactly


def seconds(ms):
    """Unix ms as Unix seconds: ms resolution with double floats, whole seconds without."""
    return ms / 1000 if _DOUBLE else ms // 1000


class Clock:
    def __init__(self, boot=0, window=WINDOW, path=None, monotonic=monotonic_ms, rtc=unix_time,
                 set_rtc=None):
        self.boot = boot
        self.offset_ms = None  # Unix ms - monotonic ms, from the gateway; None until synced
        self.interval_s = None  # how often the gateway says it sends the time
        self.synced_at_ms = None  # monotonic ms of the last time message
        self._window = window
        self._samples = []  # offsets of the last `window` messages, oldest first
        self._path = path
        self._mono = monotonic
        self._rtc = rtc
        self._set_rtc = set_rtc  # e.g. a board's RTC setter, so a soft reboot keeps the time
        self._boots = _load(path) if path else {}

    @property
    def synced(self):
        """True once a time message from the gateway has been taken."""
        return self.offset_ms is not None

    def handle(self, payload):
        """Take a time message's payload; ProtocolError if it is not one. Call it as soon as
        the message arrives: any wait before counts as transit."""
        received_ms = self._mono()
        msg = protocol.decode_time(payload)
        return self.update(msg["ts_ms"], msg["interval_s"], received_ms)

    def update(self, ts_ms, interval_s=None, received_ms=None):
        """Learn from one time message: the gateway's Unix ms `ts_ms`, received at monotonic
        `received_ms` (now by default). Returns the offset in use."""
        if received_ms is None:
            received_ms = self._mono()
        first = self.offset_ms is None
        samples = self._samples
        samples.append(ts_ms - received_ms)
        if len(samples) > self._window:
            samples.pop(0)
        self.offset_ms = max(samples)
        self.interval_s = interval_s
        self.synced_at_ms = received_ms
        if first and self._path:
            self._boots[self.boot] = self.offset_ms
            keep = sorted(self._boots)[-_KEEP_BOOTS:]
            self._boots = {boot: self._boots[boot] for boot in keep}
            _save(self._path, self._boots)
        if self._set_rtc is not None:
            now_ms = self._mono() + self.offset_ms
            if abs(self._rtc() * 1000 - now_ms) > 1000:
                self._set_rtc(seconds(now_ms))
        return self.offset_ms

    def _offset(self):
        if self.offset_ms is not None:
            return self.offset_ms
        rtc = self._rtc()
        if rtc >= RTC_PLAUSIBLE_S:
            return round(rtc * 1000) - self._mono()
        return None

    def now_ms(self):
        """Unix time in integer ms, or None when neither synced nor the RTC is plausible."""
        offset = self._offset()
        return None if offset is None else self._mono() + offset

    def now(self):
        """Unix time in seconds, or None (see now_ms)."""
        ms = self.now_ms()
        return None if ms is None else seconds(ms)

    def stamp(self):
        """A reading's time: Unix seconds when known now, else a pending (boot, monotonic ms)
        for resolve() once synced. Pending stamps survive JSON as lists."""
        mono = self._mono()
        offset = self._offset()
        if offset is None:
            return (self.boot, mono)
        return seconds(mono + offset)

    def resolve(self, stamp):
        """Unix seconds for a stamp() result, or None while that is not known (yet)."""
        if isinstance(stamp, (int, float)):
            return stamp
        boot, mono = stamp
        offset = self._offset() if boot == self.boot else self._boots.get(boot)
        return None if offset is None else seconds(mono + offset)

    @staticmethod
    def pending(stamp):
        return not isinstance(stamp, (int, float))


def _load(path):
    try:
        with open(path) as f:
            saved = json.loads(f.read())
        return {int(boot): int(offset) for boot, offset in saved.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}  # none yet, or damaged: stamps of earlier boots stay unresolved


def _save(path, boots):
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps({str(boot): offset for boot, offset in boots.items()}))
        os.rename(tmp, path)  # atomic: a power cut leaves the old or the new file
    except OSError as exc:
        print("[clock] cannot save the boot offset:", exc)
