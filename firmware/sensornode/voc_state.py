# Keeps the VOC index's learned baseline on flash, so a reboot does not restart 12 hours of
# learning (ESPHome #950). The file is tiny (144 bytes), written atomically (tmp + rename, so a
# power cut leaves the old file or the new one, never half of one), checksummed, and written
# at most once per `interval_s` (default 1 h: ~9000 writes a year, fine for littlefs wear
# levelling). Nothing is saved before the algorithm has learned for `min_learning_s` (3 h,
# Sensirion's advice); a restored baseline counts as 3 h, so it is saved again an interval
# later. A reboot loop writes nothing: the interval starts at the first maybe_save() call.
#
# On load the algorithm keeps the learned mean and spread and runs its 45 s blackout and
# filters again (VocIndex.set_state(..., resume=False)), like Sensirion's set_states().
# Sensirion advises against restoring after more than ~10 min of downtime; pass `now_s` and
# `max_age_s` to enforce an age limit once the wall clock is known (boards without a battery
# backed RTC boot at the epoch: a state from the "future" is then accepted).
import os
import struct

from sensornode.voc_index import STATE_LEN

try:
    from typing import Any, Optional
except ImportError:
    pass

_MAGIC = b"NTVO"
_VERSION = 1
_HEAD = "<4sBBd"  # magic, version, number of values, saved at (unix s, 0 = unknown)
_SIZE = struct.calcsize(_HEAD) + 8 * STATE_LEN + 2


def _fletcher16(data, end):
    a = b = 0
    for i in range(end):
        a = (a + data[i]) % 255
        b = (b + a) % 255
    return (b << 8) | a


def encode(state: "Any", saved_at: float = 0.0) -> bytes:
    """The file's bytes for a VocIndex.get_state() tuple."""
    body = struct.pack(_HEAD, _MAGIC, _VERSION, STATE_LEN, saved_at) \
        + struct.pack("<%dd" % STATE_LEN, *state)
    return body + struct.pack("<H", _fletcher16(body, len(body)))


def decode(data: bytes) -> "Any":
    """(state tuple, saved_at) from a file's bytes; ValueError if they are not a valid file."""
    if len(data) != _SIZE:
        raise ValueError("VOC state file: %d bytes, expected %d" % (len(data), _SIZE))
    magic, version, count, saved_at = struct.unpack_from(_HEAD, data, 0)
    if magic != _MAGIC or version != _VERSION or count != STATE_LEN:
        raise ValueError("VOC state file: unknown format")
    if struct.unpack_from("<H", data, _SIZE - 2)[0] != _fletcher16(data, _SIZE - 2):
        raise ValueError("VOC state file: checksum mismatch")
    state = struct.unpack_from("<%dd" % STATE_LEN, data, struct.calcsize(_HEAD))
    return state, saved_at


class VocStateStore:
    def __init__(self, path: str = "voc_state.bin", interval_s: int = 3600,
                 min_learning_s: float = 10800.0) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s: must be > 0, got %r" % (interval_s,))
        self.path = path
        self.interval_s = interval_s
        self.min_learning_s = min_learning_s
        self._last_ms = None  # type: Optional[int]
        self.saves = 0
        self.last_error = None  # type: Optional[OSError]

    def load(self, algorithm: "Any", now_s: float = 0.0,
             max_age_s: "Optional[float]" = None) -> bool:
        """Restore the saved baseline into `algorithm`. False (algorithm untouched) when
        there is no file, it is damaged, or it is older than max_age_s."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(_SIZE + 1)
            state, saved_at = decode(data)
        except (OSError, ValueError):
            return False
        if max_age_s is not None and saved_at > 0 and now_s > 0 \
                and now_s - saved_at > max_age_s:
            return False
        try:
            algorithm.set_state(state, False)
        except ValueError:
            return False
        return True

    def save(self, algorithm: "Any", now_s: float = 0.0) -> None:
        """Write the algorithm's state now (atomically). Raises OSError (flash full...)."""
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(encode(algorithm.get_state(), now_s))
        sync = getattr(os, "sync", None)
        if sync is not None:
            sync()
        os.rename(tmp, self.path)
        self.saves += 1

    def maybe_save(self, algorithm: "Any", now_ms: int, now_s: float = 0.0) -> bool:
        """Call after each sample with a non-wrapping ms clock (compat.monotonic_ms()).
        Saves when the rate limit and the learning time allow; True if it wrote. A failed
        write is kept in last_error and retried an interval later, never raised."""
        if self._last_ms is None:
            self._last_ms = now_ms
            return False
        if now_ms - self._last_ms < self.interval_s * 1000:
            return False
        if algorithm.learning_s < self.min_learning_s:
            return False
        self._last_ms = now_ms
        try:
            self.save(algorithm, now_s)
        except OSError as exc:
            self.last_error = exc
            return False
        self.last_error = None
        return True

    def clear(self) -> None:
        """Forget the saved baseline (e.g. the sensor was replaced)."""
        for path in (self.path, self.path + ".tmp"):
            try:
                os.remove(path)
            except OSError:
                pass
