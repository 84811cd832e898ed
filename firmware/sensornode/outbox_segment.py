# On-flash format of the outbox (the design is in outbox.py): records in segment files, and
# the ack file. Pure bytes and file reads; no state. MicroPython subset.
#
# Record = 18-byte header + payload, little-endian:
#   offset size field
#   0      2    magic   b"\xa7N" (format 1; anything else is corrupt)
#   2      1    kind    0..255, the app's record type (telemetry entry, event ...)
#   3      1    flags   0 (reserved; non-zero is corrupt)
#   4      2    length  payload bytes, 0..min(65535, segment_bytes - 18)
#   6      8    seq     uint64, the app's sequence number (stored, never interpreted)
#   14     4    crc     CRC-32 (zlib's) of header bytes 0..13, then of the payload
# A segment file `<n>.seg` is records back to back, nothing else.
#
# Ack file `ack` = 26 bytes: magic b"NB", segment number (uint64), offset in it of the first
# unacked record (uint32), seq of the last acked record (uint64), CRC-32 of bytes 0..21.
# Replaced atomically (ack.tmp + rename). The seq lets a boot know the newest seq ever written
# when the outbox is drained (no segment left to read it from). The first format, 18 bytes
# with magic b"NA" and no seq, is still read (its seq is None).
import binascii
import os
import struct

HEADER = 18
MAGIC = b"\xa7N"
_HEAD = "<2sBBHQ"  # the 14 bytes the CRC covers first
_ACK = "<2sQIQ"
_ACK_MAGIC = b"NB"
ACK_SIZE = 26
_ACK1 = "<2sQI"
_ACK1_MAGIC = b"NA"
_ACK1_SIZE = 18
MAX_SEQ = (1 << 64) - 1


def _make_table():
    table = []
    for i in range(16):
        crc = i
        for _ in range(4):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc32_sw(data, crc=0):
    """zlib's CRC-32, a nibble at a time (16-entry table): for ports built without
    binascii.crc32 (it needs MICROPY_PY_DEFLATE; ESP32 and RP2 have it)."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 15] ^ (crc >> 4)
        crc = _TABLE[(crc ^ (byte >> 4)) & 15] ^ (crc >> 4)
    return crc ^ 0xFFFFFFFF


crc32 = getattr(binascii, "crc32", None) or crc32_sw


def record_size(payload):
    return HEADER + len(payload)


def encode_into(buf, pos, kind, seq, payload):
    """Write one record into bytearray `buf` at `pos`; returns the offset after it."""
    end = pos + HEADER + len(payload)
    struct.pack_into(_HEAD, buf, pos, MAGIC, kind, 0, len(payload), seq)
    buf[pos + HEADER:end] = payload
    view = memoryview(buf)
    crc = crc32(view[pos + HEADER:end], crc32(view[pos:pos + 14]))
    struct.pack_into("<I", buf, pos + 14, crc)
    return end


def parse_header(head, max_payload):
    """(kind, length, seq, crc) from a record header, or None if it cannot be one."""
    if len(head) < HEADER:
        return None
    magic, kind, flags, length, seq = struct.unpack_from(_HEAD, head, 0)
    if magic != MAGIC or flags != 0 or length > max_payload:
        return None
    return kind, length, seq, struct.unpack_from("<I", head, 14)[0]


def read_record(f, max_payload):
    """The next record from file `f` as (kind, seq, payload bytes); None if what is there is
    short, torn or corrupt."""
    head = f.read(HEADER)
    fields = parse_header(head, max_payload)
    if fields is None:
        return None
    kind, length, seq, crc = fields
    payload = f.read(length)
    if len(payload) != length or crc32(payload, crc32(memoryview(head)[:14])) != crc:
        return None
    return kind, seq, payload


def scan(f, start, size, max_payload, scratch):
    """Check the records of a segment file of `size` bytes from offset `start`, reading
    through `scratch` (a bytearray of at least HEADER bytes; no other allocation per record).
    Returns (end, count, last_seq): the offset after the last good record, how many good
    records, the seq of the last one (None if none). Stops at the first short or bad record."""
    view = memoryview(scratch)
    chunk = len(scratch)
    f.seek(start)
    off = start
    count = 0
    last_seq = None
    # Every record is at least HEADER bytes, so this bound is never the one that stops a scan.
    for _ in range(size // HEADER + 1):
        if size - off < HEADER or f.readinto(view[:HEADER]) != HEADER:
            break
        fields = parse_header(scratch, max_payload)
        if fields is None or off + HEADER + fields[1] > size:
            break
        length = fields[1]
        crc = crc32(view[:14])
        left = length
        for _ in range(length // chunk + 1):
            if left == 0:
                break
            step = left if left < chunk else chunk
            if f.readinto(view[:step]) != step:
                break
            crc = crc32(view[:step], crc)
            left -= step
        if left or crc != fields[3]:
            break
        off += HEADER + length
        count += 1
        last_seq = fields[2]
    return off, count, last_seq


CLEAN, CUT, DAMAGED = "clean", "cut", "damaged"


def classify_tail(f, end, size, max_payload, scratch):
    """What follows the good records of a segment file (`end` < `size` bytes): (CUT, seq or
    None) if it can only be one record whose write a power cut interrupted (too short for a
    header, or a header whose record would end past the end of the file; seq from that header
    if complete), else (DAMAGED, None): a complete but bad record, possibly with good ones
    after it whose seqs nobody can tell. (CLEAN, None) when there is nothing after `end`."""
    left = size - end
    if left <= 0:
        return CLEAN, None
    if left < HEADER:
        return CUT, None
    f.seek(end)
    view = memoryview(scratch)
    if f.readinto(view[:HEADER]) != HEADER:
        return DAMAGED, None
    fields = parse_header(scratch, max_payload)
    if fields is None or HEADER + fields[1] <= left:
        return DAMAGED, None
    # A bad length field can make a decayed record look cut off, with good (maybe already
    # sent) records hidden behind it: a cut record holds no complete record inside.
    rest = f.read(left - HEADER)
    if _holds_a_record(rest, max_payload):
        return DAMAGED, None
    return CUT, fields[2]


def _holds_a_record(data, max_payload):
    view = memoryview(data)
    pos = data.find(MAGIC)
    for _ in range(len(data)):
        if pos < 0:
            return False
        fields = parse_header(view[pos:pos + HEADER], max_payload)
        if fields is not None:
            end = pos + HEADER + fields[1]
            if end <= len(data) and crc32(view[pos + HEADER:end],
                                          crc32(view[pos:pos + 14])) == fields[3]:
                return True
        pos = data.find(MAGIC, pos + 1)
    return False


def encode_ack(segment, offset, seq):
    head = struct.pack(_ACK, _ACK_MAGIC, segment, offset, seq)
    return head + struct.pack("<I", crc32(head))


def decode_ack(data):
    """(segment, offset, last acked seq or None) from an ack file's bytes, or None if they are
    not a valid one."""
    if len(data) == ACK_SIZE:
        magic, segment, offset, seq = struct.unpack_from(_ACK, data, 0)
        if magic == _ACK_MAGIC and struct.unpack_from("<I", data, 22)[0] == crc32(data[:22]):
            return segment, offset, seq
    elif len(data) == _ACK1_SIZE:
        magic, segment, offset = struct.unpack_from(_ACK1, data, 0)
        if magic == _ACK1_MAGIC and struct.unpack_from("<I", data, 14)[0] == crc32(data[:14]):
            return segment, offset, None
    return None


def load_ack(path):
    """(segment, offset, seq) from the ack file, or None if it is missing or damaged."""
    try:
        with open(path, "rb") as f:
            return decode_ack(f.read(ACK_SIZE + 1))
    except OSError:
        return None


def save_ack(path, segment, offset, seq):
    """Replace the ack file atomically (a power cut leaves the old one or the new one)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(encode_ack(segment, offset, seq))
    os.rename(tmp, path)


def list_segments(directory):
    """Sorted numbers of the segment files in `directory`; removes a cut ack save."""
    nums = []
    for name in os.listdir(directory):
        if name.endswith(".seg") and name[:-4].isdigit():
            nums.append(int(name[:-4]))
        elif name == "ack.tmp":
            os.remove(directory + "/ack.tmp")
    nums.sort()
    return nums
