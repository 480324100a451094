"""Test-only helpers: Hypothesis strategies for A-XDR push bodies, and the
corpus pushes cut down to their plaintext APDUs by the decoder's own layers.

The A-XDR encoder here is written from IEC 62056-6-2 independently of
decoder/axdr.py: every generated value comes with its encoding *and* the value
the decoder must return, so generated bodies test axdr against this oracle and
against gurux-dlms (tests/decoder/test_differential.py).

Value ranges are those meters send (printable visible strings, valid calendar
fields in date/time values); gurux-dlms rewrites or refuses others (see the
notes in test_differential.py).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from meterpipe.common.errors import MeterpipeError
from meterpipe.common.link.frames import NEED_DATA, Framer, LinkFrame, parse_frame
from meterpipe.common.schema import LinkLayer
from meterpipe.decoder.apdu import cosem_datetime
from meterpipe.decoder.axdr import (
    BitString,
    DateBytes,
    DateTimeBytes,
    Structure,
    TimeBytes,
)
from meterpipe.decoder.reassembly import GBT_TAG, BlockAssembler, SegmentAssembler
from meterpipe.decoder.security import CIPHERED_TAGS, decrypt, parse_ciphered

# Default: a fixed, reproducible budget (derandomized) that keeps the suite fast.
# METERPIPE_FUZZ_SCALE=50 multiplies every example count and draws fresh random
# examples: a manual fuzzing session, not a CI run.
FUZZ_SCALE = max(1, int(os.environ.get("METERPIPE_FUZZ_SCALE", "1")))
DERANDOMIZE = FUZZ_SCALE == 1


def examples(n: int) -> int:
    return n * FUZZ_SCALE


# --- A-XDR encoding (independent of decoder code) ---------------------------------


def enc_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    size = (n.bit_length() + 7) // 8
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


@dataclass(frozen=True)
class Enc:
    """An encoded A-XDR value and what the decoder must make of it."""

    raw: bytes
    value: Any


def structure(members: list[Enc]) -> Enc:
    return Enc(b"\x02" + enc_length(len(members)) + b"".join(m.raw for m in members), Structure(m.value for m in members))


def array(members: list[Enc]) -> Enc:
    return Enc(b"\x01" + enc_length(len(members)) + b"".join(m.raw for m in members), [m.value for m in members])


def octet_string(data: bytes) -> Enc:
    return Enc(b"\x09" + enc_length(len(data)) + data, bytes(data))


def _fixed(tag: int, fmt: str, value: Any) -> Enc:
    return Enc(bytes([tag]) + struct.pack(fmt, value), value)


def _ints(tag: int, fmt: str, lo: int, hi: int) -> st.SearchStrategy[Enc]:
    return st.integers(lo, hi).map(lambda v: _fixed(tag, fmt, v))


def _bitstring(bits: str) -> Enc:
    padded = bits + "0" * (-len(bits) % 8)
    data = bytes(int(padded[i : i + 8], 2) for i in range(0, len(padded), 8))
    return Enc(b"\x04" + enc_length(len(bits)) + data, BitString(bits))


def _visible(text: str) -> Enc:
    data = text.encode("ascii")
    return Enc(b"\x0a" + enc_length(len(data)) + data, text)


def _float32(v: float) -> Enc:
    raw = struct.pack(">f", v)
    return Enc(b"\x17" + raw, struct.unpack(">f", raw)[0])


@st.composite
def datetime_bytes(draw: st.DrawFn) -> bytes:
    """12 bytes of a COSEM date-time as meters send them (fields valid or 0xFF)."""
    year = draw(st.one_of(st.integers(1990, 2100), st.just(0xFFFF)))
    month = draw(st.one_of(st.integers(1, 12), st.just(0xFF)))
    day = draw(st.one_of(st.integers(1, 28), st.just(0xFF)))
    weekday = draw(st.one_of(st.integers(1, 7), st.just(0xFF)))
    hour = draw(st.one_of(st.integers(0, 23), st.just(0xFF)))
    minute = draw(st.one_of(st.integers(0, 59), st.just(0xFF)))
    second = draw(st.one_of(st.integers(0, 59), st.just(0xFF)))
    hundredths = draw(st.one_of(st.integers(0, 99), st.just(0xFF)))
    deviation = draw(st.one_of(st.sampled_from([-120, -60, 0, 60, 120]), st.just(-0x8000)))
    status = draw(st.sampled_from([0x00, 0x80, 0xFF, 0x08]))
    return (
        year.to_bytes(2, "big")
        + bytes([month, day, weekday, hour, minute, second, hundredths])
        + deviation.to_bytes(2, "big", signed=True)
        + bytes([status])
    )


@st.composite
def _date(draw: st.DrawFn) -> Enc:
    year = draw(st.integers(1990, 2100))
    raw = year.to_bytes(2, "big") + bytes([draw(st.integers(1, 12)), draw(st.integers(1, 28)), draw(st.integers(1, 7) | st.just(0xFF))])
    return Enc(b"\x1a" + raw, DateBytes(raw))


@st.composite
def _time(draw: st.DrawFn) -> Enc:
    raw = bytes([draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59)), draw(st.integers(0, 99) | st.just(0xFF))])
    return Enc(b"\x1b" + raw, TimeBytes(raw))


_PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)

# Every data type both parsers support, except utf8-string (gurux returns it as hex text).
LEAVES: st.SearchStrategy[Enc] = st.one_of(
    st.just(Enc(b"\x00", None)),
    st.booleans().map(lambda b: Enc(b"\x03" + (b"\x01" if b else b"\x00"), b)),
    st.text("01", max_size=40).map(_bitstring),
    _ints(0x05, ">i", -(2**31), 2**31 - 1),
    _ints(0x06, ">I", 0, 2**32 - 1),
    st.binary(max_size=300).map(octet_string),
    _PRINTABLE.map(_visible),
    st.integers(0, 0x99).map(lambda v: Enc(bytes([0x0D, v]), v)),
    _ints(0x0F, ">b", -128, 127),
    _ints(0x10, ">h", -(2**15), 2**15 - 1),
    _ints(0x11, ">B", 0, 255),
    _ints(0x12, ">H", 0, 2**16 - 1),
    _ints(0x14, ">q", -(2**63), 2**63 - 1),
    _ints(0x15, ">Q", 0, 2**64 - 1),
    _ints(0x16, ">B", 0, 255),
    st.floats(width=32, allow_nan=False).map(_float32),
    st.floats(allow_nan=False).map(lambda v: _fixed(0x18, ">d", v)),
    datetime_bytes().map(lambda raw: Enc(b"\x19" + raw, DateTimeBytes(raw))),
    _date(),
    _time(),
)


def nested(max_leaves: int = 40) -> st.SearchStrategy[Enc]:
    """Arrays and structures of any supported types, nested."""
    return st.recursive(
        LEAVES,
        lambda children: st.one_of(
            st.lists(children, max_size=6).map(structure),
            st.lists(children, max_size=6).map(array),
        ),
        max_leaves=max_leaves,
    )


CLOCK = bytes([0, 0, 1, 0, 0, 255])
OBIS = (
    st.tuples(st.sampled_from([0, 1]), st.integers(0, 2), st.integers(0, 99), st.integers(0, 9), st.integers(0, 9))
    .map(lambda t: bytes(t) + b"\xff")
    # a clock (0-b:1.0.0, any channel b) becomes the push time, not a reading
    .filter(lambda code: not (code[0] == 0 and code[2:5] == CLOCK[2:5]))
)

_REGISTER_VALUE = st.one_of(
    _ints(0x06, ">I", 0, 2**32 - 1),
    _ints(0x12, ">H", 0, 2**16 - 1),
    _ints(0x10, ">h", -(2**15), 2**15 - 1),
    _ints(0x05, ">i", -(2**31), 2**31 - 1),
    _ints(0x15, ">Q", 0, 2**64 - 1),
    # a 6-byte value would read as the next OBIS code in an untyped list
    st.binary(min_size=1, max_size=16).filter(lambda b: len(b) != 6).map(octet_string),
)
_SCALER_UNIT = st.tuples(_ints(0x0F, ">b", -6, 6), _ints(0x16, ">B", 1, 60)).map(lambda t: structure(list(t)))


@dataclass(frozen=True)
class Shaped:
    """A generated push body and the number of readings it must map to."""

    body: Enc
    readings: int


@st.composite
def obis_tagged_body(draw: st.DrawFn) -> Shaped:
    """Aidon / Kaifa-AT / Kamstrup shape: OBIS, value, optional {scaler, unit}."""
    entries = []
    for _ in range(draw(st.integers(1, 12))):
        parts = [octet_string(draw(OBIS)), draw(_REGISTER_VALUE)]
        if draw(st.booleans()):
            parts.append(draw(_SCALER_UNIT))
        entries.append(parts)
    if draw(st.booleans()):  # nested: one structure per entry, inside an array
        body = array([structure(p) for p in entries])
    else:  # flat
        body = structure([m for p in entries for m in p])
    readings = len(entries)
    if draw(st.booleans()):  # list identifier and time in front
        head = [_visible(draw(_PRINTABLE)), octet_string(draw(datetime_bytes()))]
        body = structure([*head, body])
        readings += 1  # the list identifier is a reading too
    return Shaped(body, readings)


@st.composite
def push_list_body(draw: st.DrawFn) -> Shaped:
    """IDIS / L+G / Iskraemeco shape: the push object list, then one value per entry."""
    n = draw(st.integers(1, 10))
    definitions, values = [], []
    definitions.append(structure([_fixed(0x12, ">H", 40), octet_string(bytes([0, 0, 25, 9, 0, 255])), _fixed(0x0F, ">b", 2), _fixed(0x12, ">H", 0)]))
    for _ in range(n):
        class_id = draw(st.sampled_from([1, 3, 4, 8]))
        attribute = draw(st.sampled_from([2, 2, 3]))
        definitions.append(
            structure([_fixed(0x12, ">H", class_id), octet_string(draw(OBIS)), _fixed(0x0F, ">b", attribute), _fixed(0x12, ">H", 0)])
        )
        values.append(draw(_SCALER_UNIT) if attribute == 3 else draw(_REGISTER_VALUE))
    # definition 0 describes member 0: the push object list itself (class 40, attribute 2)
    readings = sum(1 for v in values if not isinstance(v.value, Structure))
    return Shaped(structure([array(definitions), *values]), readings)


SHAPES: st.SearchStrategy[Shaped] = st.one_of(obis_tagged_body(), push_list_body())
BODIES: st.SearchStrategy[Enc] = st.one_of(nested(), SHAPES.map(lambda shaped: shaped.body))


@st.composite
def notification(draw: st.DrawFn, body: st.SearchStrategy[Enc] = BODIES) -> tuple[bytes, int, Enc]:
    """A data-notification APDU: (bytes, offset of the body, the body)."""
    invoke = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    stamp = draw(st.sampled_from(["none", "plain", "typed"]))
    head = b"\x0f" + invoke
    if stamp == "none":
        head += b"\x00"
    elif stamp == "plain":
        head += b"\x0c" + draw(datetime_bytes())
    else:
        head += b"\x09\x0c" + draw(datetime_bytes())
    b = draw(body)
    return head + b.raw, len(head), b


# --- comparing decoded values ----------------------------------------------------


def normal(value: Any) -> Any:
    """A strictly typed, comparable form of a decoded value (bool is not int, list is not Structure)."""
    if isinstance(value, Structure):
        return ("structure", tuple(normal(v) for v in value))
    if isinstance(value, list):
        return ("array", tuple(normal(v) for v in value))
    if isinstance(value, DateTimeBytes):
        return ("date-time", cosem_datetime(value))
    if isinstance(value, DateBytes):
        return ("date", bytes(value[:4]))
    if isinstance(value, TimeBytes):
        return ("time", bytes(value[:3]), value[3] == 0xFF)
    if isinstance(value, BitString):
        return ("bit-string", str(value))
    if isinstance(value, float):
        return ("float", struct.pack(">d", value) if not math.isnan(value) else "nan")
    return (type(value).__name__, value)


# --- corpus pushes through the decoder's own layers ------------------------------


def notification_body_offset(apdu: bytes) -> int:
    """Where the A-XDR body of a data-notification starts (as apdu.parse_notification reads it)."""
    marker = apdu[5]
    if marker == 0x00:
        return 6
    if marker == 0x0C:
        return 18
    if marker == 0x09 and apdu[6] == 0x0C:
        return 19
    raise AssertionError(f"unexpected date-time marker 0x{marker:02x}")


def link_frames(v: dict[str, Any]) -> list[LinkFrame]:
    """The capture's frames, cut by the decoder's Framer."""
    data = bytes.fromhex(v["bytes_hex"])
    if v["transport"] == "apdu":
        return [parse_frame(LinkLayer.APDU, data)]
    framer = Framer()
    framer.feed(data)
    frames: list[LinkFrame] = []
    while (frame := framer.next_frame()) is not NEED_DATA:
        assert isinstance(frame, LinkFrame)
        frames.append(frame)
    return frames


def apdus(v: dict[str, Any]) -> list[bytes]:
    """Whole APDUs of a capture after segment and GBT reassembly (still ciphered).

    Pushes that a capture leaves unfinished are dropped, as the session drops them."""
    segments, blocks = SegmentAssembler(), BlockAssembler()
    out: list[bytes] = []
    for frame in link_frames(v):
        if frame.link is LinkLayer.APDU:
            apdu: bytes | None = frame.payload
        else:
            apdu, _ = segments.add(frame, 0)
        if apdu is None:
            continue
        if apdu[0] == GBT_TAG:
            # a capture may open with a push whose blocks were cut off (abandoned: ignored here)
            apdu, _ = blocks.add(apdu, 0)
            if apdu is None:
                continue
        out.append(apdu)
    return out


def plaintexts(v: dict[str, Any], key: bytes | None, auth_key: bytes | None) -> list[bytes]:
    """Plaintext data-notification APDUs of a capture (decrypted with the vector's keys)."""
    out = []
    for apdu in apdus(v):
        if apdu[0] in CIPHERED_TAGS:
            apdu, _ = decrypt(parse_ciphered(apdu), key, auth_key)
        out.append(apdu)
    return out


def only_meterpipe_errors(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call fn; a MeterpipeError is an allowed outcome (returned), anything else propagates."""
    try:
        return fn(*args, **kwargs)
    except MeterpipeError as exc:
        return exc


def drain(framer: Framer | Any, limit: int = 100_000) -> list[LinkFrame | MeterpipeError]:
    """Every frame and error a frame cutter gives before it asks for more data."""
    out: list[LinkFrame | MeterpipeError] = []
    for _ in range(limit):
        try:
            frame = framer.next_frame()
        except MeterpipeError as exc:
            out.append(exc)
            continue
        if frame is NEED_DATA:
            return out
        assert isinstance(frame, LinkFrame)
        out.append(frame)
    raise AssertionError("the framer never asked for more data")
