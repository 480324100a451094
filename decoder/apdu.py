"""DLMS APDUs a meter pushes: data-notification (0x0F) and its date-time.

Sans-IO. ``parse_notification`` takes a plaintext APDU and returns a
:class:`Notification` whose body is A-XDR decoded by the fast path
(decoder.axdr) or, for what the fast path does not support, by gurux-dlms
(decoder.gurux_adapter). The session reads only the header here
(``notification_header``) and hands the body's bytes to decoder.mapper, which
calls ``decode_body`` when it has to decode a body whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from meterpipe.common.errors import TruncatedError, UnsupportedError
from meterpipe.decoder import axdr

DATA_NOTIFICATION: Final = 0x0F
DEVIATION_UNSPECIFIED: Final = -0x8000


@dataclass(frozen=True, slots=True)
class Notification:
    invoke_id: int
    time: str | None  # ISO-8601 of the notification's date-time, offset when the meter states one
    body: Any  # decoded A-XDR value
    via_gurux: bool = False


def cosem_datetime(raw: bytes) -> str | None:
    """ISO-8601 text of a 12-byte COSEM date-time, or None when unspecified.

    Deviation is the minutes of UTC minus local time (as meters send it: CET is
    -60), so the ISO offset is its negation. With no deviation the time is
    local to the meter and carries no offset.
    """
    if len(raw) != 12:
        return None
    year = (raw[0] << 8) | raw[1]
    month, day, hour, minute, second, hundredths = raw[2], raw[3], raw[5], raw[6], raw[7], raw[8]
    if year in (0, 0xFFFF) or not 1 <= month <= 12 or not 1 <= day <= 31:
        return None
    if hour == 0xFF:
        hour = 0
    if minute == 0xFF:
        minute = 0
    if second == 0xFF:
        second = 0
    micro = hundredths * 10_000 if hundredths < 100 else 0
    deviation = int.from_bytes(raw[9:11], "big", signed=True)
    try:
        if deviation == DEVIATION_UNSPECIFIED or not -840 <= deviation <= 840:
            return datetime(year, month, day, hour, minute, second, micro).isoformat()
        tz = timezone(timedelta(minutes=-deviation))
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).isoformat()
    except ValueError:
        return None


def notification_header(apdu: bytes) -> tuple[int, str | None, int]:
    """(invoke id, date-time as ISO text, position of the body) of a data-notification."""
    if not apdu or apdu[0] != DATA_NOTIFICATION:
        tag = f"0x{apdu[0]:02x}" if apdu else "nothing"
        raise UnsupportedError(f"APDU {tag} is not a data-notification", data=apdu)
    if len(apdu) < 6:
        raise TruncatedError("data-notification cut short", data=apdu)
    invoke_id = int.from_bytes(apdu[1:5], "big")
    pos = 5
    time: str | None = None
    marker = apdu[pos]
    if marker == 0x00:  # date-time absent
        pos += 1
    elif marker == 0x0C:  # OCTET STRING (SIZE(12)) without type tag: the standard form
        time = cosem_datetime(apdu[pos + 1 : pos + 13])
        pos += 13
    elif marker == 0x09 and pos + 1 < len(apdu) and apdu[pos + 1] == 0x0C:  # Kaifa: typed octet-string
        time = cosem_datetime(apdu[pos + 2 : pos + 14])
        pos += 14
    else:
        raise UnsupportedError(f"data-notification date-time field starts with 0x{marker:02x}", data=apdu)
    if pos >= len(apdu):
        raise TruncatedError("data-notification without a body", data=apdu)
    return invoke_id, time, pos


def decode_body(buf: bytes, pos: int = 0) -> tuple[Any, bool]:
    """The A-XDR value filling ``buf[pos:]``, and whether gurux-dlms decoded it
    (for a type the fast path does not support)."""
    try:
        return axdr.parse_all(buf, pos), False
    except UnsupportedError:
        from meterpipe.decoder import gurux_adapter

        return gurux_adapter.parse_all(buf[pos:]), True


def parse_notification(apdu: bytes) -> Notification:
    """Parse a data-notification APDU: ``0F invoke-id(4) date-time body``."""
    invoke_id, time, pos = notification_header(apdu)
    body, via_gurux = decode_body(apdu, pos)
    return Notification(invoke_id, time, body, via_gurux)
