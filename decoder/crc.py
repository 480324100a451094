"""Checksums of the link layers: CRC-16/X.25 (HDLC HCS/FCS) and the M-Bus byte sum."""

from __future__ import annotations


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _table()


def crc16_x25(data: bytes | memoryview) -> int:
    """CRC-16/X.25 as HDLC uses it (reflected 0x1021, init and xorout 0xFFFF).

    The result is sent least significant byte first.
    """
    crc = 0xFFFF
    table = _TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def mbus_checksum(data: bytes | memoryview) -> int:
    """M-Bus long-frame checksum: arithmetic sum of C, A, CI and data, modulo 256."""
    return sum(data) & 0xFF
