"""A small, fast A-XDR decoder for the COSEM data types a push carries.

Sans-IO and table-free: ``parse_data(buf, pos)`` returns ``(value, next_pos)``.
Python types out:

    null-data            None
    array / structure    list (array) / Structure (a list subclass)
    boolean              bool
    bit-string           BitString (str of '0'/'1')
    integers, enum, bcd  int
    octet-string         bytes (date-time values included: see decoder.cosem_time)
    visible/utf8-string  str
    float32/64           float
    date-time/date/time  bytes of the fixed-length encoding, wrapped in DateTimeBytes etc.

Anything it does not know (compact-array, deprecated types) raises
UnsupportedError, and the caller falls back to gurux-dlms
(decoder.gurux_adapter), which the differential tests hold this module to.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from meterpipe.common.errors import DecodeError, TruncatedError, UnsupportedError

MAX_DEPTH: Final = 32  # pushes nest 2-4 levels; deeper input is refused, never recursed into


class Structure(list[Any]):
    """An A-XDR structure (a list of heterogeneous members)."""

    __slots__ = ()


class BitString(str):
    """An A-XDR bit-string, as text of '0' and '1' (most significant bit first)."""

    __slots__ = ()


class DateTimeBytes(bytes):
    """The 12 bytes of a typed date-time (tag 0x19)."""


class DateBytes(bytes):
    """The 5 bytes of a typed date (tag 0x1A)."""


class TimeBytes(bytes):
    """The 4 bytes of a typed time (tag 0x1B)."""


_FIXED: Final = {
    0x05: struct.Struct(">i"),
    0x06: struct.Struct(">I"),
    0x0F: struct.Struct(">b"),
    0x10: struct.Struct(">h"),
    0x11: struct.Struct(">B"),
    0x12: struct.Struct(">H"),
    0x14: struct.Struct(">q"),
    0x15: struct.Struct(">Q"),
    0x16: struct.Struct(">B"),
    0x17: struct.Struct(">f"),
    0x18: struct.Struct(">d"),
}
_FIXED_BYTES: Final = {0x19: (12, DateTimeBytes), 0x1A: (5, DateBytes), 0x1B: (4, TimeBytes)}


def read_length(buf: bytes, pos: int) -> tuple[int, int]:
    """A-XDR length at ``buf[pos]`` (one byte, or 0x8N and N bytes): (length, position after it)."""
    if pos >= len(buf):
        raise TruncatedError("A-XDR length missing", data=buf)
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count == 0 or count > 4 or pos + 1 + count > len(buf):
        raise TruncatedError(f"A-XDR length field with {count} length bytes cut short or lying", data=buf)
    return int.from_bytes(buf[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def encode_length(n: int) -> bytes:
    """The A-XDR encoding of a length (the meter side: simulator and tests)."""
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82]) + n.to_bytes(2, "big")


_LEAVES: Final = {tag: (st.size, st.unpack_from) for tag, st in _FIXED.items()}


def parse_data(buf: bytes, pos: int = 0, depth: int = 0) -> tuple[Any, int]:
    """Decode one A-XDR ``Data`` value at ``buf[pos]`` (``buf`` must be bytes)."""
    n = len(buf)
    if pos >= n:
        raise TruncatedError("A-XDR value missing", data=buf)
    tag = buf[pos]
    pos += 1
    leaf = _LEAVES.get(tag)
    if leaf is not None:
        size, unpack = leaf
        if pos + size > n:
            raise TruncatedError(f"A-XDR value of type {tag} cut short", data=buf)
        return unpack(buf, pos)[0], pos + size
    if tag == 0x01 or tag == 0x02:
        if depth >= MAX_DEPTH:
            # DecodeError, not UnsupportedError: the gurux fallback must not recurse into it
            raise DecodeError(f"A-XDR nesting deeper than {MAX_DEPTH} levels refused", data=buf)
        count, pos = read_length(buf, pos)
        if count > n - pos:  # each member takes at least one byte
            raise TruncatedError(f"A-XDR {'array' if tag == 1 else 'structure'} of {count} members cut short", data=buf)
        items: list[Any] = Structure() if tag == 0x02 else []
        append = items.append
        leaves = _LEAVES
        for _ in range(count):
            # The members of a push are mostly numbers and short octet-strings:
            # decode those inline (a function call per leaf costs more than the leaf).
            if pos >= n:
                raise TruncatedError("A-XDR member missing", data=buf)
            member = buf[pos]
            leaf = leaves.get(member)
            if leaf is not None:
                size, unpack = leaf
                end = pos + 1 + size
                if end > n:
                    raise TruncatedError(f"A-XDR value of type {member} cut short", data=buf)
                append(unpack(buf, pos + 1)[0])
                pos = end
            elif member == 0x09 and pos + 1 < n and buf[pos + 1] < 0x80:
                end = pos + 2 + buf[pos + 1]
                if end > n:
                    raise TruncatedError("A-XDR string cut short", data=buf)
                append(buf[pos + 2 : end])
                pos = end
            else:
                value, pos = parse_data(buf, pos, depth + 1)
                append(value)
        return items, pos
    if tag == 0x09 or tag == 0x0A or tag == 0x0C:
        size, pos = read_length(buf, pos)
        end = pos + size
        if end > len(buf):
            raise TruncatedError("A-XDR string cut short", data=buf)
        raw = buf[pos:end]
        if tag == 0x09:
            return bytes(raw), end
        if tag == 0x0A:
            return raw.decode("latin-1"), end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError as exc:
            raise DecodeError("A-XDR utf8-string is not valid UTF-8", data=buf) from exc
    if tag == 0x00:
        return None, pos
    if tag == 0x03:
        if pos >= len(buf):
            raise TruncatedError("A-XDR boolean cut short", data=buf)
        return buf[pos] != 0, pos + 1
    if tag == 0x0D:
        if pos >= len(buf):
            raise TruncatedError("A-XDR bcd cut short", data=buf)
        return buf[pos], pos + 1
    if tag == 0x04:
        bits, pos = read_length(buf, pos)
        end = pos + (bits + 7) // 8
        if end > len(buf):
            raise TruncatedError("A-XDR bit-string cut short", data=buf)
        text = "".join(f"{b:08b}" for b in buf[pos:end])[:bits]
        return BitString(text), end
    fixed_bytes = _FIXED_BYTES.get(tag)
    if fixed_bytes is not None:
        size, cls = fixed_bytes
        end = pos + size
        if end > len(buf):
            raise TruncatedError("A-XDR date/time cut short", data=buf)
        return cls(buf[pos:end]), end
    raise UnsupportedError(f"A-XDR data type 0x{tag:02x} is not supported by the fast path", data=buf)


def parse_all(buf: bytes, pos: int = 0) -> Any:
    """Decode exactly one value that must fill ``buf[pos:]``."""
    value, end = parse_data(bytes(buf), pos)
    if end != len(buf):
        raise TruncatedError(f"{len(buf) - end} bytes after the notification body", data=buf[end:])
    return value
