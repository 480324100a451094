"""The fast CRC-16/X.25 (binascii + bit reversal) equals the definition."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meterpipe.common.link.crc import crc16_x25, crc16_x25_reference, mbus_checksum


def test_check_value_of_the_catalogue() -> None:
    # CRC-16/IBM-SDLC (X.25) check value from the CRC catalogue
    assert crc16_x25(b"123456789") == 0x906E == crc16_x25_reference(b"123456789")


@settings(max_examples=300, derandomize=True)
@given(st.binary(max_size=2100))
def test_fast_crc_equals_the_bitwise_definition(data: bytes) -> None:
    assert crc16_x25(data) == crc16_x25_reference(data)
    assert crc16_x25(memoryview(data)) == crc16_x25(bytearray(data))


def test_mbus_checksum_is_the_byte_sum() -> None:
    assert mbus_checksum(bytes([0x53, 0xFF, 0x00, 0x01, 0x67])) == (0x53 + 0xFF + 0x01 + 0x67) & 0xFF
