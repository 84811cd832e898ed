# Per-node reading sequence numbers that keep increasing across reboots. The gateway dedups by
# (node, seq), so a seq reused after a reboot would silently drop new readings.
# Numbers are reserved on flash a block at a time: one small write per BLOCK readings spares
# the flash; after a reboot the unused rest of a block is skipped, and the birth message
# announces the new start so the gateway does not count the skipped numbers as lost.
import json
import os

from sensornode import compat

BLOCK = 64


class Sequence:
    def __init__(self, path="seq.json", block=BLOCK):
        self._path = path
        self._block = block
        self._next = self._load_reserved()
        self.first = self._next
        self._reserved = self._next
        self._reserve()

    def _load_reserved(self):
        try:
            with open(self._path) as f:
                text = f.read()
        except OSError:
            return 0  # first boot
        try:
            value = json.loads(text)["reserved"]
        except (ValueError, KeyError, TypeError):
            value = None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        # A damaged file must not restart at 0: the gateway would take the new readings for
        # duplicates of old ones. Jump past anything plausible, using the clock as a floor.
        floor = int(compat.unix_time()) * 1000
        print("[node] seq file damaged; continuing from", floor)
        return floor

    def _reserve(self):
        self._reserved = self._next + self._block
        tmp = self._path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps({"reserved": self._reserved}))
        # rename is atomic on LittleFS and on POSIX: a power cut leaves the old or the new block.
        os.rename(tmp, self._path)

    def take(self):
        if self._next >= self._reserved:
            self._reserve()
        value = self._next
        self._next += 1
        return value

    @property
    def next(self):
        return self._next
