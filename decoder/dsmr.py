"""DSMR / P1 telegrams (Netherlands, Belgium, Luxembourg, Sweden, ...), sans-IO.

A telegram is ASCII::

    /ISK5\\2M550T-1012            identification
                                 (empty line)
    1-0:1.8.1(002130.115*kWh)    OBIS(value*unit), or OBIS(text)
    0-1:24.2.1(200426223001S)(00109.238*m3)   M-Bus value with its time
    !56DD                        CRC-16/ARC of everything from '/' to '!', in hex

DSMR 2 and 3 meters (and some Iskraemeco AM551) end with a bare '!': such
telegrams are accepted without a check; a CRC that is present must match.
Values keep the meter's own units and exact decimals (``002130.115*kWh`` is
2130115e-3 kWh); values without a unit stay text (``0001``, identifiers).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Final

from meterpipe.common.errors import FrameError
from meterpipe.common.link.p1 import check_telegram
from meterpipe.common.values import Push, Reading
from meterpipe.decoder.obis import reading_name

_LINE: Final = re.compile(r"^(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})((?:\([^()]*\))+)$")
_GROUP: Final = re.compile(r"\(([^()]*)\)")
_NUMBER: Final = re.compile(r"^([-+]?)(\d*)(?:\.(\d*))?$")
_TIME: Final = re.compile(r"^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})([SW])$")
_LOCAL_TIME: Final = re.compile(r"^(\d{4})(\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})$")  # NES meters


def _value(text: str) -> tuple[int | str, int, str | None]:
    number, star, unit = text.partition("*")
    m = _NUMBER.match(number)
    if not star or m is None or not (m.group(2) or m.group(3)):
        return text, 0, None
    sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    mantissa = int(whole + frac or "0")
    return (-mantissa if sign == "-" else mantissa), -len(frac), unit or None


def dsmr_time(text: str) -> str | None:
    """``200426223325S`` -> ``2020-04-26T22:33:25+02:00`` (S summer, W winter: CET)."""
    m = _TIME.match(text)
    if m is None:
        local = _LOCAL_TIME.match(text)
        if local is None:
            return None
        try:
            year, month, day, hour, minute, second = (int(x) for x in local.groups())
            return datetime(year, month, day, hour, minute, second).isoformat()
        except ValueError:
            return None
    yy, mo, dd, hh, mi, ss, season = m.groups()
    offset = timezone(timedelta(hours=2 if season == "S" else 1))
    try:
        return datetime(2000 + int(yy), int(mo), int(dd), int(hh), int(mi), int(ss), tzinfo=offset).isoformat()
    except ValueError:
        return None


def _identifier(text: str) -> str:
    """Equipment identifiers are often hex-encoded ASCII: show the ASCII."""
    if len(text) % 2 == 0 and re.fullmatch(r"[0-9A-Fa-f]+", text or "x"):
        decoded = bytes.fromhex(text)
        if all(32 <= b < 127 for b in decoded):
            return decoded.decode("ascii")
    return text


def parse_telegram(raw: bytes) -> Push:
    """Readings of one whole telegram, CRC checked."""
    check_telegram(raw)
    text = raw.decode("ascii", "replace")
    lines = text.splitlines()
    if not lines or not lines[0].startswith("/"):
        raise FrameError("not a P1 telegram", data=raw[:24])
    readings: list[Reading] = []
    time: str | None = None
    ids: dict[tuple[int, int, int], str] = {}
    for line in lines[1:]:
        m = _LINE.match(line.strip())
        if m is None:
            continue
        a, b, c, d, e = (int(x) for x in m.groups()[:5])
        if max(a, b, c, d, e) > 255:
            continue  # not an OBIS code (line noise in a telegram without CRC)
        groups = _GROUP.findall(m.group(6))
        code = bytes((a, b, c, d, e, 255))
        obis = f"{a}-{b}:{c}.{d}.{e}"
        if len(groups) == 1:
            value, exponent, unit = _value(groups[0])
        elif len(groups) == 2 and "*" in groups[1]:  # M-Bus: (capture time)(value*unit)
            value, exponent, unit = _value(groups[1])
        else:
            continue  # logs (power failures, monthly peaks): not a reading
        if (a, c, d, e) == (0, 1, 0, 0) and isinstance(value, str):
            time = dsmr_time(value)
        if a == 0 and (c, d) == (96, 1) and isinstance(value, str):
            ids[(b, d, e)] = value
        readings.append(Reading(obis, reading_name(code), value, exponent, unit))
    meter_id = ids.get((0, 1, 1)) or ids.get((0, 1, 0))
    return Push(
        readings=tuple(readings),
        meter_id=_identifier(meter_id) if meter_id else lines[0][1:].strip() or None,
        time=time,
    )
