"""The fast A-XDR parser: every supported type, length forms, and what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from meterpipe.common.errors import DecodeError, MeterpipeError, TruncatedError, UnsupportedError
from meterpipe.decoder import axdr
from meterpipe.decoder.apdu import cosem_datetime, parse_notification
from meterpipe.decoder.axdr import BitString, DateBytes, DateTimeBytes, Structure, TimeBytes
from tests.decoder import strategies as s


@pytest.mark.parametrize(
    ("raw", "value", "kind"),
    [
        ("00", None, type(None)),
        ("0301", True, bool),
        ("0300", False, bool),
        ("0405a8", "10101", BitString),
        ("05fffffffe", -2, int),
        ("06ffffffff", 2**32 - 1, int),
        ("0903010203", b"\x01\x02\x03", bytes),
        ("0a03414243", "ABC", str),
        ("0c02c3a9", "é", str),
        ("0d42", 0x42, int),
        ("0f80", -128, int),
        ("108000", -32768, int),
        ("11ff", 255, int),
        ("12ffff", 65535, int),
        ("14ffffffffffffffff", -1, int),
        ("15ffffffffffffffff", 2**64 - 1, int),
        ("1605", 5, int),
        ("173fc00000", 1.5, float),
        ("183ff8000000000000", 1.5, float),
        ("1907e6010203040506ff800000", bytes.fromhex("07e6010203040506ff800000"), DateTimeBytes),
        ("1a07e60102ff", bytes.fromhex("07e60102ff"), DateBytes),
        ("1b01020304", bytes.fromhex("01020304"), TimeBytes),
        ("0100", [], list),
        ("0200", [], Structure),
    ],
)
def test_each_type_decodes_to_its_python_type(raw: str, value: object, kind: type) -> None:
    decoded = axdr.parse_all(bytes.fromhex(raw))
    assert decoded == value and type(decoded) is kind


@pytest.mark.parametrize("prefix", [b"\x81\xc8", b"\x82\x00\xc8", b"\x84\x00\x00\x00\xc8"])
def test_long_length_forms(prefix: bytes) -> None:
    assert axdr.parse_all(b"\x09" + prefix + bytes(200)) == bytes(200)


def test_nested_structure_and_array_members_inline_and_not() -> None:
    raw = bytes.fromhex("0203" "1105" "0902aabb" "0102" "0203" "0c0141" "00" "0a0142" "0100")
    assert axdr.parse_all(raw) == Structure([5, b"\xaa\xbb", [Structure(["A", None, "B"]), []]])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x06\x00\x00",  # fixed-size value cut short
        b"\x09\x05abc",  # string cut short
        b"\x09\x84\xff\xff\xff\xff",  # octet-string claiming 4 GiB
        b"\x01\x84\xff\xff\xff\xff\x00",  # array claiming 4 billion members: refused before any loop
        b"\x02\x03\x11\x01",  # structure missing members
        b"\x09\x85\x00\x00\x00\x00\x01",  # five length bytes
        b"\x09\x80",  # indefinite length
        b"\x04\x10\xff",  # bit-string cut short
        b"\x19\x07\xe6",  # date-time cut short
        b"\x11\x01\x00",  # a byte after the value
    ],
)
def test_cut_or_lying_input_is_truncated(raw: bytes) -> None:
    with pytest.raises(TruncatedError):
        axdr.parse_all(raw)


@pytest.mark.parametrize("tag", [0x13, 0x07, 0x08, 0x0B, 0x0E, 0x1C, 0x20, 0xFF])
def test_unknown_types_are_unsupported_for_the_gurux_fallback(tag: int) -> None:
    with pytest.raises(UnsupportedError):
        axdr.parse_all(bytes([tag, 0, 0, 0]))


def test_invalid_utf8_string_is_a_decode_error_not_unicode_error() -> None:
    """Regression (found by test_properties with METERPIPE_FUZZ_SCALE=40): the
    utf8-string bytes 00 00 00 00 00 80 raised UnicodeDecodeError out of the parser."""
    raw = b"\x0c\x06\x00\x00\x00\x00\x00\x80"
    with pytest.raises(DecodeError, match="UTF-8"):
        axdr.parse_all(raw)
    with pytest.raises(MeterpipeError):
        parse_notification(b"\x0f\x00\x00\x00\x01\x00" + raw)


def test_nesting_beyond_the_limit_is_refused_not_handed_to_gurux() -> None:
    body = b"\x02\x01" * (axdr.MAX_DEPTH + 1) + b"\x00"
    with pytest.raises(DecodeError, match="nesting") as info:
        axdr.parse_all(body)
    assert not isinstance(info.value, UnsupportedError)  # UnsupportedError would trigger the fallback


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("07e6010203040506ff800000", "2022-01-02T04:05:06"),  # deviation unspecified: local time
        ("07e6010203040506 0a ffc4 00".replace(" ", ""), "2022-01-02T04:05:06.100000+01:00"),  # CET: -60
        ("07e60102ff0405060aff8800", "2022-01-02T04:05:06.100000+02:00"),
        ("ffffffffffffffffffffffff", None),
        ("07e60d0203040506ff800000", None),  # month 13
        ("07e6021e03040506ff800000", None),  # 30 February
    ],
)
def test_cosem_datetime(raw: str, iso: str | None) -> None:
    assert cosem_datetime(bytes.fromhex(raw)) == iso


@settings(max_examples=s.examples(200), deadline=2000, derandomize=s.DERANDOMIZE)
@given(s.nested())
def test_generated_values_decode_as_encoded(body: s.Enc) -> None:
    assert s.normal(axdr.parse_all(body.raw)) == s.normal(body.value)
    # parse_data stops exactly at the end of the value, wherever it sits
    value, end = axdr.parse_data(b"\xaa" + body.raw + b"\xbb", 1)
    assert end == len(body.raw) + 1 and s.normal(value) == s.normal(body.value)
