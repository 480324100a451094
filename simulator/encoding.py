"""Build the bytes a meter sends: A-XDR values, DataNotification APDUs and GBT blocks.

The inverse of the decoder's parsers, used by the meter simulator and by tests
that need pushes with known content. Pure functions of their arguments: no
clock, no randomness, no I/O.

Layers, innermost first:

* A-XDR values (:func:`u32`, :func:`octet_string`, :func:`structure`, ...), each
  returned as its tagged encoding;
* the DataNotification APDU (``0F <invoke id> 0C <date-time> <value>``);
* general-block-transfer blocks (``E0 <ctrl> <block> <ack> <len> <data>``), and
  those blocks in HDLC frames.

HDLC and M-Bus frames come from :mod:`meterpipe.common.link.build`; the protocol
constants from the decoder modules that read them; ciphering from
:mod:`meterpipe.decoder.security`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

from meterpipe.common.link.build import LLC_HEADER, hdlc_frame
from meterpipe.decoder.apdu import DATA_NOTIFICATION, DEVIATION_UNSPECIFIED
from meterpipe.decoder.axdr import encode_length
from meterpipe.decoder.reassembly import GBT_LAST_BLOCK, GBT_TAG

GBT_STREAMING: Final = 0x40

# --- A-XDR ------------------------------------------------------------------


def _fixed(tag: int, value: int, size: int, signed: bool) -> bytes:
    try:
        return bytes([tag]) + value.to_bytes(size, "big", signed=signed)
    except OverflowError as exc:
        raise ValueError(f"value {value} does not fit A-XDR type 0x{tag:02x}") from exc


def i8(value: int) -> bytes:
    return _fixed(0x0F, value, 1, True)


def i16(value: int) -> bytes:
    return _fixed(0x10, value, 2, True)


def i32(value: int) -> bytes:
    return _fixed(0x05, value, 4, True)


def i64(value: int) -> bytes:
    return _fixed(0x14, value, 8, True)


def u8(value: int) -> bytes:
    return _fixed(0x11, value, 1, False)


def u16(value: int) -> bytes:
    return _fixed(0x12, value, 2, False)


def u32(value: int) -> bytes:
    return _fixed(0x06, value, 4, False)


def u64(value: int) -> bytes:
    return _fixed(0x15, value, 8, False)


INTEGER_ENCODERS: Final = {
    0x0F: i8,
    0x10: i16,
    0x05: i32,
    0x14: i64,
    0x11: u8,
    0x12: u16,
    0x06: u32,
    0x15: u64,
}


def integer(tag: int, value: int) -> bytes:
    """An integer A-XDR value of the type named by ``tag`` (0x06 double-long-unsigned ...)."""
    try:
        encoder = INTEGER_ENCODERS[tag]
    except KeyError as exc:
        raise ValueError(f"0x{tag:02x} is not an integer A-XDR type") from exc
    return encoder(value)


def octet_string(value: bytes) -> bytes:
    return b"\x09" + encode_length(len(value)) + value


def visible_string(value: str) -> bytes:
    raw = value.encode("ascii")
    return b"\x0a" + encode_length(len(raw)) + raw


def structure(items: Sequence[bytes]) -> bytes:
    """A structure of already-encoded members."""
    return b"\x02" + encode_length(len(items)) + b"".join(items)


def array(items: Sequence[bytes]) -> bytes:
    """An array of already-encoded elements."""
    return b"\x01" + encode_length(len(items)) + b"".join(items)


@functools.lru_cache(maxsize=1024)  # a few codes, encoded at every push
def obis_bytes(code: str) -> bytes:
    """``"1-0:1.8.0"`` (or ``"1-0:1.8.0*255"``) -> the 6 bytes of the logical name."""
    text, _, f = code.partition("*")
    try:
        ab, _, cde = text.partition(":")
        a, b = ab.split("-")
        c, d, e = cde.split(".")
        parts = [int(x) for x in (a, b, c, d, e, f or "255")]
    except ValueError as exc:
        raise ValueError(f"invalid OBIS code {code!r}") from exc
    if not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"invalid OBIS code {code!r}")
    return bytes(parts)


def cosem_datetime(
    when: datetime,
    *,
    deviation: int | None = DEVIATION_UNSPECIFIED,
    status: int | None = None,
    hundredths: int | None = None,
) -> bytes:
    """The 12 bytes of a COSEM date-time for the wall clock of ``when``.

    ``deviation`` is in minutes as COSEM counts it (local time to UTC: -120 for
    UTC+2); ``None`` derives it from an aware ``when`` (unspecified for a naive
    one). ``status`` defaults to 0x80 (daylight saving active) when ``when`` says
    so, else 0. ``hundredths`` None sends 0xFF (not specified).
    """
    if deviation is None:
        offset = when.utcoffset()
        deviation = DEVIATION_UNSPECIFIED if offset is None else -int(offset.total_seconds() // 60)
    if status is None:
        dst = when.dst()
        status = 0x80 if dst else 0x00
    return (
        when.year.to_bytes(2, "big")
        + bytes(
            [
                when.month,
                when.day,
                when.isoweekday(),
                when.hour,
                when.minute,
                when.second,
                0xFF if hundredths is None else hundredths,
            ]
        )
        + deviation.to_bytes(2, "big", signed=True)
        + bytes([status])
    )


# --- APDUs ------------------------------------------------------------------


def data_notification(invoke_id: int, date_time: bytes | None, body: bytes) -> bytes:
    """``0F <long-invoke-id-and-priority> <date-time: 0C + 12 bytes, or 00> <notification-body>``."""
    if date_time is not None and len(date_time) != 12:
        raise ValueError("a COSEM date-time has 12 bytes")
    head = bytes([DATA_NOTIFICATION]) + invoke_id.to_bytes(4, "big")
    stamp = b"\x00" if date_time is None else b"\x0c" + date_time
    return head + stamp + body


def gbt_blocks(apdu: bytes, sizes: Iterable[int]) -> list[bytes]:
    """Cut ``apdu`` into general-block-transfer blocks, streaming, numbered from 1.

    ``sizes`` gives the data length of each block in turn (the last size repeats);
    the final block has the last-block bit (ctrl 0xC0, the others 0x40).
    """
    size_iter = iter(sizes)
    size = next(size_iter, 0)
    if size <= 0:
        raise ValueError("GBT block size must be positive")
    blocks: list[bytes] = []
    pos, number = 0, 1
    while True:
        chunk = apdu[pos : pos + size]
        pos += len(chunk)
        last = pos >= len(apdu)
        ctrl = GBT_STREAMING | (GBT_LAST_BLOCK if last else 0)
        head = bytes([GBT_TAG, ctrl]) + number.to_bytes(2, "big") + b"\x00\x00"
        blocks.append(head + encode_length(len(chunk)) + chunk)
        if last:
            return blocks
        number += 1
        size = next(size_iter, size)
        if size <= 0:
            raise ValueError("GBT block size must be positive")


# --- link frames (builders in meterpipe.common.link.build) -------------------


def hdlc_gbt_frames(
    apdu: bytes,
    *,
    destination: bytes,
    source: bytes,
    block_sizes: Sequence[int],
    control: int = 0x13,
) -> list[bytes]:
    """An APDU as GBT blocks, one unsegmented HDLC frame each, LLC header in the first."""
    blocks = gbt_blocks(apdu, block_sizes)
    return [
        hdlc_frame(
            (LLC_HEADER if i == 0 else b"") + block,
            destination=destination,
            source=source,
            control=control,
        )
        for i, block in enumerate(blocks)
    ]
