"""Build the bytes a meter sends: A-XDR values, DataNotification APDUs and link frames.

The inverse of the decoder's parsers, used by the meter simulator and by tests
that need frames with known content. Pure functions of their arguments: no
clock, no randomness, no I/O.

Layers, innermost first:

* A-XDR values (:func:`u32`, :func:`octet_string`, :func:`structure`, ...), each
  returned as its tagged encoding;
* the DataNotification APDU (``0F <invoke id> 0C <date-time> <value>``);
* general-block-transfer blocks (``E0 <ctrl> <block> <ack> <len> <data>``);
* HDLC frames (one frame, or segmented with the 0x08 bit of the format byte)
  and wired M-Bus long frames carrying DLMS (``68 L L 68 C A CI STSAP DTSAP``).

Checksums come from :mod:`meterpipe.decoder.crc`, ciphering from
:mod:`meterpipe.decoder.security`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

from meterpipe.decoder.crc import crc16_x25, mbus_checksum
from meterpipe.decoder.axdr import encode_length

HDLC_FLAG: Final = b"\x7e"
LLC_HEADER: Final = b"\xe6\xe7\x00"
HDLC_MAX_LENGTH: Final = 0x7FF
DATA_NOTIFICATION: Final = 0x0F
GBT_TAG: Final = 0xE0
GBT_LAST: Final = 0x80
GBT_STREAMING: Final = 0x40
DEVIATION_UNSPECIFIED: Final = -0x8000

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
        ctrl = GBT_STREAMING | (GBT_LAST if last else 0)
        head = bytes([GBT_TAG, ctrl]) + number.to_bytes(2, "big") + b"\x00\x00"
        blocks.append(head + encode_length(len(chunk)) + chunk)
        if last:
            return blocks
        number += 1
        size = next(size_iter, size)
        if size <= 0:
            raise ValueError("GBT block size must be positive")


# --- HDLC -------------------------------------------------------------------


def hdlc_frame(
    info: bytes,
    *,
    destination: bytes,
    source: bytes,
    control: int = 0x13,
    segmented: bool = False,
) -> bytes:
    """One HDLC frame type 3 (format 0xA0, or 0xA8 with the segmentation bit).

    ``destination``/``source`` are the encoded address bytes (last one odd), as
    the meter sends them (``CE FF`` / ``03`` for an L+G E450).
    """
    for name, addr in (("destination", destination), ("source", source)):
        if not 1 <= len(addr) <= 4 or not addr[-1] & 1 or any(b & 1 for b in addr[:-1]):
            raise ValueError(f"invalid HDLC {name} address {addr.hex()}")
    if not info:
        raise ValueError("the simulator sends frames with an information field")
    header_len = 2 + len(destination) + len(source) + 1
    length = header_len + 2 + len(info) + 2
    if length > HDLC_MAX_LENGTH:
        raise ValueError(f"HDLC frame of {length} bytes exceeds the 11-bit length field")
    fmt = 0xA000 | (0x0800 if segmented else 0) | length
    head = fmt.to_bytes(2, "big") + destination + source + bytes([control])
    body = head + crc16_x25(head).to_bytes(2, "little") + info
    return HDLC_FLAG + body + crc16_x25(body).to_bytes(2, "little") + HDLC_FLAG


def hdlc_segments(
    apdu: bytes,
    *,
    destination: bytes,
    source: bytes,
    max_info: int,
    control: int = 0x13,
    segment_control: int | None = None,
) -> list[bytes]:
    """An APDU behind the LLC header, cut into HDLC frames of at most ``max_info`` bytes.

    All but the last frame carry the segmentation bit (format 0xA8) and
    ``segment_control`` (default: ``control``); the LLC header opens the first only.
    """
    if max_info <= len(LLC_HEADER):
        raise ValueError("HDLC information field too small for the LLC header")
    info = LLC_HEADER + apdu
    chunks = [info[i : i + max_info] for i in range(0, len(info), max_info)]
    seg_ctrl = control if segment_control is None else segment_control
    return [
        hdlc_frame(
            chunk,
            destination=destination,
            source=source,
            control=control if i == len(chunks) - 1 else seg_ctrl,
            segmented=i < len(chunks) - 1,
        )
        for i, chunk in enumerate(chunks)
    ]


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


# --- wired M-Bus --------------------------------------------------------------

MBUS_MAX_DATA: Final = 245  # L = 250: C, A, CI, STSAP, DTSAP + 245 bytes


def mbus_frames(
    apdu: bytes,
    *,
    control: int = 0x53,
    address: int = 0xFF,
    stsap: int = 0x01,
    dtsap: int = 0x67,
    max_data: int = MBUS_MAX_DATA,
) -> list[bytes]:
    """An APDU in wired M-Bus long frames with the DLMS transport layer.

    CI = segment number (0..15) plus 0x10 on the last segment, as the Austrian
    Kaifa/Sagemcom meters send it.
    """
    if not 0 < max_data <= MBUS_MAX_DATA:
        raise ValueError(f"M-Bus data per frame must be 1..{MBUS_MAX_DATA} bytes")
    chunks = [apdu[i : i + max_data] for i in range(0, len(apdu), max_data)] or [b""]
    if len(chunks) > 16:
        raise ValueError("an M-Bus DLMS push has at most 16 segments")
    frames = []
    for i, chunk in enumerate(chunks):
        ci = i | (0x10 if i == len(chunks) - 1 else 0)
        body = bytes([control, address, ci, stsap, dtsap]) + chunk
        n = len(body)
        frames.append(bytes([0x68, n, n, 0x68]) + body + bytes([mbus_checksum(body), 0x16]))
    return frames
