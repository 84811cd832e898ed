# Per-node reading sequence numbers that keep increasing across reboots. The gateway dedups by
# (node, seq), so a seq reused after a reboot would silently drop new readings; and it reports
# every seq it never received as lost, so a reboot should not leave numbers unused either.
#
# Numbers are reserved on flash a block at a time (one small write per BLOCK readings spares
# the flash): every seq ever taken is below the reserved mark. At boot the outbox tells where
# the last boot really stopped (Outbox.boot_tail: the newest seq written, and whether a power
# cut interrupted a write). Every seq the gateway can have seen was written to the outbox
# first, so the next boot continues right after it: `last` = the newest seq written, plus one
# for a record whose write the cut interrupted (taken, lost: the gateway reports exactly that
# seq); `first` = last + 1. When the outbox cannot tell for sure, or what it says does not fit
# the reserved mark (a wiped outbox, a restored file), the boot starts at the reserved mark
# and `last` is None: the unused rest of the block is skipped, and the birth message says the
# gap below `first` is unexplained rather than lost.
#
# The file also counts boots: the clock tells the stamps of different boots apart by it.
import json
import os

from sensornode import compat

BLOCK = 64


class Sequence:
    def __init__(self, path="seq.json", block=BLOCK, boot_tail=(None, False)):
        """boot_tail: Outbox.boot_tail() of this boot's outbox (None: it cannot tell); the
        default is an empty outbox."""
        self._path = path
        self._block = block
        reserved, boot = self._load()
        self.last = _resume_point(boot_tail, reserved, block)
        if reserved is None:
            if self.last is None:  # the file was lost, not a first boot: as if damaged
                reserved = boot = _floor()
            else:
                reserved = 0
        self.boot = boot + 1
        last = self.last
        self.first = reserved if last is None else last + 1
        self._next = self.first
        self._reserve()

    def _load(self):
        """(reserved mark, boot count) from the file; the reserved mark is None when there is
        no file (a first boot, or the file was lost)."""
        try:
            with open(self._path) as f:
                text = f.read()
        except OSError:
            return None, 0
        try:
            saved = json.loads(text)
            value = saved["reserved"]
            boot = saved.get("boot", value)  # files from before the count: value is unique
            if _count(value) and _count(boot):
                return value, boot
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        floor = _floor()
        return floor, floor

    def _reserve(self):
        self._reserved = self._next + self._block
        tmp = self._path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps({"reserved": self._reserved, "boot": self.boot}))
        # rename is atomic on LittleFS and on POSIX: a power cut leaves the old or the new file.
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


def _floor():
    # A damaged or lost file must not restart at 0: the gateway would take the new readings
    # for duplicates of old ones. Jump past anything plausible, using the clock as a floor.
    floor = int(compat.unix_time()) * 1000
    print("[node] seq file damaged or lost; continuing from", floor)
    return floor


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _resume_point(boot_tail, reserved, block):
    """The last seq the previous boots took, if the outbox and the reserved mark agree on it."""
    if reserved is None:
        # No seq file: a true first boot has an empty outbox; anything else lost the file and
        # must not trust an outbox that may have been drained of higher seqs.
        return -1 if boot_tail == (None, False) else None
    if boot_tail is None or boot_tail[0] is None:
        return None
    written, cut = boot_tail
    last = written + 1 if cut else written
    # Every seq taken is below the mark, and the last reservation was made when the next seq
    # was mark - block: the last one taken is in [mark - block - 1, mark - 1].
    if reserved - block - 1 <= last < reserved:
        return last
    return None
