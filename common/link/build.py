"""Build link-layer frames: HDLC type 3 (one frame or segmented) and wired M-Bus long frames.

The inverse of :mod:`meterpipe.common.link.frames`, for the meter simulator and
for tests that need frames with known content. Pure functions of their
arguments: no clock, no randomness, no I/O.
"""

from __future__ import annotations

from typing import Final

from meterpipe.common.link.crc import crc16_x25, mbus_checksum
from meterpipe.common.link.frames import HDLC_FLAG, LLC_HEADERS, MBUS_START, MBUS_STOP

LLC_HEADER: Final = LLC_HEADERS[0]  # E6 E7 00: a response, as meters send it
HDLC_MAX_LENGTH: Final = 0x7FF
_FLAG: Final = bytes([HDLC_FLAG])


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
    return _FLAG + body + crc16_x25(body).to_bytes(2, "little") + _FLAG


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
        frames.append(bytes([MBUS_START, n, n, MBUS_START]) + body + bytes([mbus_checksum(body), MBUS_STOP]))
    return frames
