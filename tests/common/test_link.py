"""Link layer: HDLC and M-Bus framing, checksums, resynchronisation, the buffer cap."""

from __future__ import annotations

import pytest

from meterpipe.common.errors import (
    BufferOverflowError,
    ChecksumError,
    FrameError,
    MeterpipeError,
)
from meterpipe.common.link.crc import crc16_x25, mbus_checksum
from meterpipe.common.link.frames import (
    NEED_DATA,
    Framer,
    LinkFrame,
    parse_frame,
    parse_hdlc,
    parse_mbus,
)
from meterpipe.common.schema import LinkLayer
from meterpipe.common.values import Push
from meterpipe.decoder.session import MeterDecoder
from tests.conftest import needs_corpus, vector
from tests.decoder.strategies import drain, link_frames

# A whole data-notification: no date-time, body {1-0:1.8.0, 4660}
APDU = bytes.fromhex("0f0000000100" "0202" "09060100010800ff" "0600001234")
LLC = b"\xe6\xe7\x00"


def hdlc(info: bytes, *, segmented: bool = False, dest: bytes = b"\x03", src: bytes = b"\x21", control: int = 0x13) -> bytes:
    """An HDLC frame as meters send it: flag, format, addresses, control, HCS, info, FCS, flag."""
    length = 2 + len(dest) + len(src) + 1 + (2 + len(info) if info else 0) + 2
    header = bytes([0xA8 if segmented else 0xA0 | (length >> 8), length & 0xFF]) + dest + src + bytes([control])
    if info:
        header += crc16_x25(header).to_bytes(2, "little") + info
    return b"\x7e" + header + crc16_x25(header).to_bytes(2, "little") + b"\x7e"


def mbus(data: bytes, *, ci: int, c: int = 0x53, a: int = 0xFF) -> bytes:
    """A wired M-Bus long frame."""
    body = bytes([c, a, ci]) + data
    return bytes([0x68, len(body), len(body), 0x68]) + body + bytes([mbus_checksum(body), 0x16])


def test_crc16_x25_and_mbus_checksum_known_answers() -> None:
    assert crc16_x25(b"123456789") == 0x906E  # the CRC-16/X-25 check value
    assert crc16_x25(b"") == 0x0000
    assert mbus_checksum(b"\xff\x02") == 0x01


def test_hdlc_frame_round_trip_and_fields() -> None:
    raw = hdlc(LLC + APDU)
    frame = parse_hdlc(raw)
    assert frame == LinkFrame(LinkLayer.HDLC, raw, APDU, more=False, first=True)
    continuation = parse_hdlc(hdlc(b"\x01\x02\x03", segmented=True))
    assert (continuation.payload, continuation.more, continuation.first) == (b"\x01\x02\x03", True, False)


@pytest.mark.parametrize("dest", [b"\x03", b"\x02\x23", b"\x00\x02\x00\x23"])
def test_hdlc_addresses_of_one_two_and_four_bytes(dest: bytes) -> None:
    assert parse_hdlc(hdlc(LLC + APDU, dest=dest)).payload == APDU


def test_hdlc_frame_without_information_field() -> None:
    frame = parse_hdlc(hdlc(b""))
    assert frame.payload == b""


def test_frames_sharing_flags_are_all_found() -> None:
    a, b, c = hdlc(LLC + APDU), hdlc(LLC + APDU[:-1] + b"\x35"), hdlc(LLC + APDU[:-1] + b"\x36")
    stream = a + b[1:] + c[1:]  # 7E ... 7E ... 7E ... 7E
    framer = Framer()
    framer.feed(stream)
    frames = drain(framer)
    assert [f.raw for f in frames if isinstance(f, LinkFrame)] == [a, b, c]
    assert framer.skipped == 0


def test_frames_with_double_flags_between_them() -> None:
    a, b = hdlc(LLC + APDU), hdlc(LLC + APDU)
    framer = Framer(LinkLayer.HDLC)
    framer.feed(a + b)  # 7E ... 7E 7E ... 7E
    assert [f.raw for f in drain(framer) if isinstance(f, LinkFrame)] == [a, b]


def test_fcs_error_is_checksum_and_framer_carries_on() -> None:
    good = hdlc(LLC + APDU)
    bad = bytearray(good)
    bad[-5] ^= 0x04  # an information byte: only the FCS covers it
    with pytest.raises(ChecksumError, match=r"frame check sequence \(FCS\) mismatch") as info:
        parse_hdlc(bytes(bad))
    assert "HCS" not in str(info.value)
    framer = Framer()
    framer.feed(bytes(bad) + good)
    out = drain(framer)
    assert [type(o) for o in out] == [ChecksumError, LinkFrame]
    assert isinstance(out[0], ChecksumError) and out[0].kind == "checksum"
    assert isinstance(out[1], LinkFrame) and out[1].raw == good


def test_damaged_header_is_checksum_error_naming_the_hcs() -> None:
    # The FCS covers the header too, so line noise in the header breaks both;
    # the error says the header was hit (the framer checks the HCS only then).
    good = hdlc(LLC + APDU)
    bad = bytearray(good)
    bad[5] ^= 0x10  # control byte
    with pytest.raises(ChecksumError, match="HCS") as info:
        parse_hdlc(bytes(bad))
    assert info.value.kind == "checksum"
    framer = Framer()
    framer.feed(bytes(bad) + good)
    assert [type(o) for o in drain(framer)] == [ChecksumError, LinkFrame]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x7e\xa0\x07\x03\x21\x13\x7e",  # too short
        hdlc(LLC + APDU)[:-1] + b"\x00",  # no closing flag
        b"\x7e\xa0\x20" + hdlc(LLC + APDU)[3:],  # lying length
        b"\x7e\xa0\x0a\x02\x02\x02\x02\x02\x13\x00\x00\x7e",  # address without end bit
    ],
)
def test_malformed_hdlc_is_frame_error(raw: bytes) -> None:
    with pytest.raises(FrameError):
        parse_hdlc(raw)


def test_incomplete_frame_is_need_data_not_an_error() -> None:
    raw = hdlc(LLC + APDU)
    framer = Framer()
    for i in range(len(raw) - 1):
        framer.feed(raw[i : i + 1])
        assert framer.next_frame() is NEED_DATA
    framer.feed(raw[-1:])
    frame = framer.next_frame()
    assert isinstance(frame, LinkFrame) and frame.raw == raw


def test_garbage_is_skipped_and_counted() -> None:
    junk = b"\x00\x11\x22\x33\x7e\x01\x02\x68\x05"
    framer = Framer()
    framer.feed(junk + hdlc(LLC + APDU))
    frames = [f for f in drain(framer) if isinstance(f, LinkFrame)]
    assert len(frames) == 1 and framer.skipped == len(junk)


_HEADER = bytes([0xA7, 0xFF, 0x03, 0x03, 0x13])
NEVER_ENDING = b"\x7e" + _HEADER + crc16_x25(_HEADER).to_bytes(2, "little") + bytes(100)


def test_false_start_is_dropped_without_waiting_for_its_declared_length() -> None:
    framer = Framer()
    good = hdlc(LLC + APDU)
    framer.feed(b"\x7e\xa7\xff\x03\x03\x13\x00\x00" + good)  # header with a wrong HCS, then a frame
    assert [f.raw for f in drain(framer) if isinstance(f, LinkFrame)] == [good]


def test_buffer_cap_raises_overflow_then_recovers() -> None:
    framer = Framer(max_buffer=64)
    framer.feed(NEVER_ENDING)  # a valid header declaring 2,047 bytes, never completed
    out = drain(framer)
    assert len(out) == 1 and isinstance(out[0], BufferOverflowError) and out[0].kind == "truncated"
    assert framer.buffered == 0
    good = hdlc(LLC + APDU)
    framer.feed(good)
    assert [f.raw for f in drain(framer) if isinstance(f, LinkFrame)] == [good]


def test_meter_decoder_reports_overflow_and_decodes_the_next_push() -> None:
    decoder = MeterDecoder("m", max_buffer=64)
    out = decoder.feed(NEVER_ENDING)
    assert [o.kind for o in out if isinstance(o, MeterpipeError)] == ["truncated"]
    (push,) = decoder.feed(hdlc(LLC + APDU))
    assert isinstance(push, Push) and push.readings[0].value == 0x1234


def test_framer_refuses_link_kinds_it_does_not_cut() -> None:
    with pytest.raises(ValueError):
        Framer(LinkLayer.APDU)


# --- M-Bus ---------------------------------------------------------------------------


def test_mbus_dlms_transport_segments_carry_numbers_and_fin() -> None:
    first = parse_mbus(mbus(b"\x01\x67" + APDU[:8], ci=0x00))
    last = parse_mbus(mbus(b"\x01\x67" + APDU[8:], ci=0x11))
    assert (first.payload, first.first, first.more) == (APDU[:8], True, True)
    assert (last.payload, last.first, last.more) == (APDU[8:], False, False)
    whole = parse_mbus(mbus(b"\x01\x67" + APDU, ci=0x10))
    assert (whole.payload, whole.first, whole.more) == (APDU, True, False)


def test_mbus_53_ff_segments_join_into_one_push() -> None:
    stream = mbus(b"\x01\x67" + APDU[:5], ci=0x00) + mbus(b"\x01\x67" + APDU[5:12], ci=0x01) + mbus(b"\x01\x67" + APDU[12:], ci=0x12)
    for framer_link in (LinkLayer.AUTO, LinkLayer.MBUS):
        (push,) = MeterDecoder("m", link=framer_link).feed(stream)
        assert isinstance(push, Push) and push.readings[0].value == 0x1234


def test_mbus_checksum_error_then_next_frame() -> None:
    good = mbus(b"\x01\x67" + APDU, ci=0x10)
    bad = bytearray(good)
    bad[10] ^= 0x01
    with pytest.raises(ChecksumError, match="M-Bus checksum"):
        parse_mbus(bytes(bad))
    out = MeterDecoder("m").feed(bytes(bad) + good)
    assert [o.kind if isinstance(o, MeterpipeError) else "push" for o in out] == ["checksum", "push"]


@pytest.mark.parametrize(
    "raw",
    [
        b"\x68\x05\x06\x68\x53\xff\x00\x01\x67\x00\x16",  # L fields differ
        mbus(b"\x01\x67" + APDU, ci=0x10)[:-1] + b"\x17",  # no stop byte
        mbus(b"", ci=0x10),  # DLMS transport without STSAP/DTSAP
    ],
)
def test_malformed_mbus_is_frame_error(raw: bytes) -> None:
    with pytest.raises(FrameError):
        parse_mbus(raw)


def test_parse_frame_dispatches_on_link_kind() -> None:
    assert parse_frame(LinkLayer.AUTO, hdlc(LLC + APDU)).link is LinkLayer.HDLC
    assert parse_frame(LinkLayer.AUTO, mbus(b"\x01\x67" + APDU, ci=0x10)).link is LinkLayer.MBUS
    assert parse_frame(LinkLayer.APDU, APDU) == LinkFrame(LinkLayer.APDU, APDU, APDU)


@needs_corpus
@pytest.mark.corpus
def test_corpus_mbus_capture_has_numbered_segments() -> None:
    frames = link_frames(vector("dlmsp-kaifa-ma309-at-netznoe-mbus-enc"))
    assert [(f.raw[4:6], f.raw[6], f.first, f.more) for f in frames] == [
        (b"\x53\xff", 0x00, True, True),
        (b"\x53\xff", 0x11, False, False),
    ]


@needs_corpus
@pytest.mark.corpus
def test_corpus_frames_joined_by_shared_flags_decode_the_same() -> None:
    v = vector("dlmsp-lg-e450-enc-gbt-1")
    frames = [f.raw for f in link_frames(v)]
    shared = frames[0] + b"".join(f[1:] for f in frames[1:])
    from tests.conftest import keys

    key, auth = keys(v)
    whole = MeterDecoder("m", key=key, auth_key=auth).feed(bytes.fromhex(v["bytes_hex"]))
    assert MeterDecoder("m", key=key, auth_key=auth).feed(shared) == whole
    assert isinstance(whole[0], Push)
