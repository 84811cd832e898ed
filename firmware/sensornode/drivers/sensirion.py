# What Sensirion's chips (SHT4x, SGP40) share on the wire: every 16-bit word is followed by a
# CRC-8 (polynomial 0x31, init 0xFF; datasheet example 0xBEEF -> 0x92).
try:
    from typing import Any
except ImportError:
    pass


def crc8(data: "Any", start: int = 0, end: int = -1) -> int:
    """Sensirion CRC-8 over data[start:end] (end -1: to the end)."""
    if end < 0:
        end = len(data)
    crc = 0xFF
    for i in range(start, end):
        crc ^= data[i]
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc
