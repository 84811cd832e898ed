# Flash outbox: every reading and event stays on flash until the broker has PUBACKed it, so
# outages and power cuts lose nothing (ESPHome FR #733). MicroPython subset; runs on LittleFS,
# FAT and POSIX (the emulated board) alike. Record format: outbox_segment.py.
#
# Files in `directory`: append-only segments `<n>.seg` (n only ever grows, also across boots:
# the next n is above every segment and the ack file's), plus `ack`.
# - append()/append_many() encode their records into one buffer and write it with ONE write
#   call and a flush (LittleFS: a sync), so a power cut tears at most the write in progress.
#   A write that would take the current segment past segment_bytes goes to a new segment.
#   Flash wear: on LittleFS each flush of a file past the inline size (~128 B) copies its
#   last block, one erase per append call whatever its size (measured on the emulated flash:
#   ~1 erase per append() vs 0.125 per record with append_many of 10): batch a cycle.
# - Opening scans each segment from its ack position, record by record through a 128-byte
#   scratch buffer: cost linear in the bytes held, no segment is ever loaded whole, RAM ~100
#   bytes per segment (64-bit port). The first short, torn or corrupt record (bad magic,
#   flags, length or CRC) ends its segment: it and everything after it there are never
#   returned, the segment takes no more appends, and `torn` / `skipped_bytes` count it. The
#   newest segment, if it ends cleanly, takes further appends. peek() checks each CRC again
#   and treats a bad record found later (flash decay) the same way: corrupt data is never
#   returned. Read handles are opened per peek (LittleFS: an open handle does not see data
#   appended after it was opened).
# - peek(max_records, max_bytes) returns the oldest unacked records without removing them;
#   ack(count) retires the first `count` (not yet retired) records of the last peek once the
#   broker PUBACKed them. The position is kept in RAM; a segment whose records are all acked
#   is deleted at once (also the one being appended to: a drained outbox holds no files).
#   Progress inside a segment is saved to `ack` (ack.tmp + rename) once `ack_every` records
#   have been acked there since the last save, and by close().
# - Bounded: before a write that would take the segment files past max_bytes, whole oldest
#   segments are deleted (never the one being written); their unacked records are counted
#   in `dropped` and the newest dropped seq in `dropped_last_seq`, for the app to report
#   (counted since open, not persisted). Keep max_bytes >= 4 * segment_bytes so a drop is a
#   small part of the backlog. One task owns an Outbox (no locking).
#
# Guarantees. Storage is exactly-once: each appended record is on flash once, read back in
# append order, never altered. Delivery is at-least-once: after a reboot (or crash) without
# close(), up to ack_every - 1 records acked since the last save come back from peek() again,
# always the most recently acked ones (the gateway dedups by (node, seq)). Lost can be only:
# the records of the write cut by a power cut (the last append, or the part of the last
# append_many after its last complete record; on LittleFS all of that write or none of it),
# records dropped by the bound (counted), and records behind a corrupt one in the same segment
# (counted in torn/skipped_bytes). If append raises OSError its records may or may not be
# stored; a later boot may find them. Failed deletes or ack saves are counted in `errors` and
# only widen what is sent again.
import errno
import os

from sensornode.outbox_segment import (
    CLEAN,
    CUT,
    HEADER,
    MAX_SEQ,
    classify_tail,
    encode_into,
    list_segments,
    load_ack,
    read_record,
    save_ack,
    scan,
)

# A segment in RAM: [n, first unacked offset, end of good records, unacked count, file size,
# last seq]. Every listed segment holds at least one unacked record.
_N, _START, _END, _COUNT, _SIZE, _LAST = 0, 1, 2, 3, 4, 5
_SCRATCH = 128


class Outbox:
    def __init__(self, directory="outbox", max_bytes=65536, segment_bytes=4096, ack_every=16):
        if segment_bytes <= HEADER or max_bytes < segment_bytes:
            raise ValueError("outbox: need %d < segment_bytes <= max_bytes" % HEADER)
        if ack_every < 1:
            raise ValueError("outbox: ack_every must be >= 1")
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.ack_every = ack_every
        self.max_payload = min(segment_bytes - HEADER, 0xFFFF)
        self._ack_path = directory + "/ack"
        self._segs = []  # oldest first
        self._cur = None  # the segment appends go to (the last one), or None: a new one
        self._f = None  # its open append handle
        self._next_n = 0
        self._peeked = []  # (segment, start, end, seq) of each record of the last peek
        self._unsaved = 0  # records acked in the first segment since `ack` was written
        self._pending = 0
        self._pending_bytes = 0
        self._bytes = 0  # segment file bytes on flash
        self.dropped_last_seq = None
        self._acked_seq = None  # seq of the last record acked
        # What the files said at open (see boot_tail): the newest seq known to be written,
        # and how the newest segment file ended.
        self.written_seq = None
        self.tail = CLEAN
        self.tail_seq = None
        self.last_error = None
        # Counters since open (see stats).
        self.dropped = self.torn = self.skipped_bytes = 0
        self.appended = self.acked = self.ack_saves = self.errors = 0
        self._open()

    def _path(self, n):
        return "%s/%d.seg" % (self.directory, n)

    def _open(self):
        try:
            os.mkdir(self.directory)
        except OSError:
            pass  # exists
        nums = list_segments(self.directory)
        ack = load_ack(self._ack_path)
        self._next_n = max(nums[-1] if nums else -1, ack[0] if ack else -1) + 1
        if ack is not None:
            self.written_seq = self._acked_seq = ack[2]
        scratch = bytearray(_SCRATCH)
        for n in nums:
            path = self._path(n)
            if ack is not None and n < ack[0]:
                self._remove(path)  # acked (its removal did not happen)
                continue
            try:
                size = os.stat(path)[6]
                start = ack[1] if ack is not None and n == ack[0] else 0
                if start > size:
                    start = 0  # an ack file that does not fit: resend rather than skip
                with open(path, "rb") as f:
                    end, count, last = scan(f, start, size, self.max_payload, scratch)
                    if n == nums[-1]:
                        self.tail, self.tail_seq = classify_tail(
                            f, end, size, self.max_payload, scratch)
            except OSError as exc:
                self._error(exc)
                if n == nums[-1]:
                    self.tail = None  # unknown
                continue
            if last is not None and (self.written_seq is None or last > self.written_seq):
                self.written_seq = last
            if end < size:
                self.torn += 1
                self.skipped_bytes += size - end
            if count == 0:
                self._remove(path)
                continue
            self._segs.append([n, start, end, count, size, last])
            self._pending += count
            self._pending_bytes += end - start
            self._bytes += size
        if self._segs:
            last = self._segs[-1]
            if last[_END] == last[_SIZE] < self.segment_bytes:
                self._cur = last
        # Over the bound (max_bytes was lowered): drop the oldest, keep the newest.
        for _ in range(len(self._segs) - 1):
            if self._bytes <= self.max_bytes:
                break
            self._drop_oldest()

    # -- appending ------------------------------------------------------------------------

    def append(self, kind, seq, payload):
        """Store one record (payload: bytes, or str stored as UTF-8). ValueError for a bad
        kind/seq/size; OSError if the flash write fails."""
        self.append_many(((kind, seq, payload),))

    def append_many(self, records):
        """Store (kind, seq, payload) records in order, with one write call per segment they
        land in (one, unless the batch crosses a segment boundary). All are checked first."""
        recs = []
        for kind, seq, payload in records:
            if isinstance(payload, str):
                payload = payload.encode()
            if not (isinstance(kind, int) and 0 <= kind <= 255):
                raise ValueError("outbox: kind must be 0..255, got %r" % (kind,))
            if not (isinstance(seq, int) and 0 <= seq <= MAX_SEQ):
                raise ValueError("outbox: seq must be a uint64, got %r" % (seq,))
            if len(payload) > self.max_payload:
                raise ValueError("outbox: payload of %d bytes, max %d"
                                 % (len(payload), self.max_payload))
            recs.append((kind, seq, payload))
        i = 0
        for _ in range(len(recs)):  # each pass writes at least one record
            if i == len(recs):
                break
            cur = self._cur
            room = self.segment_bytes - (cur[_SIZE] if cur is not None else 0)
            if HEADER + len(recs[i][2]) > room:
                self._seal()
                room = self.segment_bytes
            j = i
            size = 0
            while j < len(recs) and size + HEADER + len(recs[j][2]) <= room:
                size += HEADER + len(recs[j][2])
                j += 1
            self._write(recs, i, j, size)
            i = j

    def _write(self, recs, i, j, size):
        buf = bytearray(size)
        pos = 0
        for k in range(i, j):
            kind, seq, payload = recs[k]
            pos = encode_into(buf, pos, kind, seq, payload)
        for _ in range(len(self._segs)):
            if self._bytes + size <= self.max_bytes or self._segs[0] is self._cur:
                break
            self._drop_oldest()
        seg = self._cur
        n = self._next_n if seg is None else seg[_N]
        try:
            if self._f is None:
                self._f = open(self._path(n), "ab")  # noqa: SIM115 - kept open for appends
            written = self._f.write(buf)
            if written is not None and written != size:
                raise OSError(5)  # EIO: a short write
            self._f.flush()
        except OSError as exc:
            self._write_failed(seg, n)
            self._error(exc)
            raise
        if seg is None:
            self._next_n = n + 1
            seg = [n, 0, 0, 0, 0, None]
            self._segs.append(seg)
            self._cur = seg
        seg[_END] += size
        seg[_SIZE] += size
        seg[_COUNT] += j - i
        seg[_LAST] = recs[j - 1][1]
        self._pending += j - i
        self._pending_bytes += size
        self._bytes += size
        self.appended += j - i

    def _write_failed(self, seg, n):
        self._seal()  # whatever that write left in the file is never appended after
        path = self._path(n)
        if seg is None:
            self._next_n = n + 1
            try:
                os.remove(path)  # a new segment: none of its records were reported stored
            except OSError:
                pass  # never created
            return
        try:
            size = os.stat(path)[6]
        except OSError:
            return
        self._bytes += size - seg[_SIZE]
        seg[_SIZE] = size

    def _seal(self):
        """Appends go to a new segment from now on."""
        if self._f is not None:
            f = self._f
            self._f = None
            try:
                f.close()
            except OSError as exc:
                self._error(exc)
        self._cur = None

    # -- reading and acking ---------------------------------------------------------------

    def peek(self, max_records=16, max_bytes=4096):
        """Up to max_records oldest unacked records as [(kind, seq, payload bytes)], oldest
        first, with at most max_bytes of payload (but always one record if any is pending).
        Nothing is removed; ack() does that."""
        out = []
        marks = []
        used = 0
        full = False
        torn = self.torn
        for seg in self._segs:
            if full or len(out) >= max_records:
                break
            off = seg[_START]
            good = 0
            try:
                with open(self._path(seg[_N]), "rb") as f:
                    f.seek(off)
                    for _ in range(seg[_COUNT]):
                        if len(out) >= max_records:
                            break
                        rec = read_record(f, self.max_payload)
                        if rec is None:
                            self._corrupt(seg, off, good)
                            break
                        if out and used + len(rec[2]) > max_bytes:
                            full = True
                            break
                        out.append(rec)
                        end = off + HEADER + len(rec[2])
                        marks.append((seg, off, end, rec[1]))
                        used += len(rec[2])
                        off = end
                        good += 1
            except OSError as exc:
                self._error(exc)
                if not exc.args or exc.args[0] != errno.ENOENT:
                    break  # try again at the next peek
                self._corrupt(seg, off, good)  # the file is gone
        for seg in [s for s in self._segs if s[_COUNT] == 0] if self.torn != torn else ():
            if seg is self._segs[0]:
                self._unsaved = 0  # the acked position follows from the files again
            self._segs.remove(seg)
            self._delete(seg)
        self._peeked = marks
        return out

    def _corrupt(self, seg, off, good):
        """Records of `seg` from offset `off` (after `good` good ones) cannot be read."""
        self.torn += 1
        self.skipped_bytes += seg[_END] - off
        self._pending -= seg[_COUNT] - good
        self._pending_bytes -= seg[_END] - off
        seg[_COUNT] = good
        seg[_END] = off
        if seg is self._cur:
            self._seal()

    def ack(self, count):
        """The broker has PUBACKed the first `count` records of the last peek: retire them.
        Returns how many were retired (fewer if the bound dropped some in the meantime)."""
        if not 0 <= count <= len(self._peeked):
            raise ValueError("outbox: ack(%r) but %d peeked" % (count, len(self._peeked)))
        done = 0
        for k in range(count):
            seg, start, end, seq = self._peeked[k]
            if not self._segs or self._segs[0] is not seg or seg[_START] != start:
                continue  # dropped (or acked) since the peek
            self._acked_seq = seq
            seg[_START] = end
            seg[_COUNT] -= 1
            self._pending -= 1
            self._pending_bytes -= end - start
            self._unsaved += 1
            done += 1
            if seg[_COUNT] == 0:
                if len(self._segs) == 1:
                    # Drained: with no segment left, only the ack file can tell the next boot
                    # the newest seq written (saved before the delete: a cut in between leaves
                    # an ack position at the end of a file that is then removed).
                    self._save_ack()
                self._segs.pop(0)
                self._delete(seg)
                self._unsaved = 0  # the next segment starts at 0: nothing to save
        self._peeked = self._peeked[count:]
        self.acked += done
        if self._unsaved >= self.ack_every:
            self._save_ack()
        return done

    def _save_ack(self):
        # Only called with acked records in the first segment (_unsaved > 0 implies it).
        seg = self._segs[0]
        try:
            save_ack(self._ack_path, seg[_N], seg[_START], self._acked_seq)
        except OSError as exc:
            self._error(exc)  # the window of records sent again after a reboot grows
            return
        self._unsaved = 0
        self.ack_saves += 1

    def _delete(self, seg):
        """Remove a segment that is no longer listed (all acked, dropped or unreadable)."""
        if seg is self._cur:
            self._seal()
        self._remove(self._path(seg[_N]))
        self._bytes -= seg[_SIZE]

    def _drop_oldest(self):
        seg = self._segs.pop(0)
        if seg[_COUNT]:
            self.dropped += seg[_COUNT]
            self.dropped_last_seq = seg[_LAST]
        self._pending -= seg[_COUNT]
        self._pending_bytes -= seg[_END] - seg[_START]
        self._unsaved = 0
        self._delete(seg)

    def _remove(self, path):
        try:
            os.remove(path)
        except OSError as exc:
            self._error(exc)

    def _error(self, exc):
        self.errors += 1
        self.last_error = exc

    # -- state ----------------------------------------------------------------------------

    def boot_tail(self):
        """What the files found at open say about the records appended before this boot:
        (newest seq written, cut), where cut is True if the last write was cut off by a power
        cut (its records are lost), False if it was not; None instead of the pair when that
        cannot be told for sure (a damaged record at the end, an unreadable file, or a cut
        record whose header names a seq that does not follow the newest written one)."""
        written, cut_seq = self.written_seq, self.tail_seq
        if self.tail == CLEAN:
            return written, False
        if self.tail != CUT:
            return None
        if written is None:
            return None if cut_seq is None else (cut_seq - 1, True)
        if cut_seq is not None and cut_seq != written + 1:
            return None
        return written, True

    @property
    def pending(self):
        """Records not yet acked."""
        return self._pending

    @property
    def pending_bytes(self):
        """Flash bytes (headers included) of the records not yet acked."""
        return self._pending_bytes

    @property
    def stats(self):
        return {"pending": self._pending, "pending_bytes": self._pending_bytes,
                "bytes": self._bytes, "segments": len(self._segs), "appended": self.appended,
                "acked": self.acked, "dropped": self.dropped,
                "dropped_last_seq": self.dropped_last_seq, "torn": self.torn,
                "skipped_bytes": self.skipped_bytes, "ack_saves": self.ack_saves,
                "errors": self.errors}

    def close(self):
        """Save the ack position and close the append file (the outbox stays usable)."""
        if self._unsaved and self._segs:
            self._save_ack()
        self._seal()
