"""The wire schema refuses what is not a meterpipe message, with SchemaError only."""

from __future__ import annotations

import msgpack
import pytest

from meterpipe.common.errors import SchemaError
from meterpipe.common.schema import ReadingsMessage, decode_readings, encode_readings
from meterpipe.common.values import Push, Reading


def test_readings_round_trip_exactly() -> None:
    msg = ReadingsMessage("house", 3, 123, Push((Reading("1-0:32.7.0", "voltage_l1", 2301, -1, "V"),), "LGZ1"), 9)
    assert decode_readings(encode_readings(msg)) == msg


def test_a_reading_whose_obis_is_not_text_is_a_schema_error() -> None:
    msg = ReadingsMessage("house", 3, 123, Push((Reading("1-0:32.7.0", "voltage_l1", 2301, -1, "V"),)), 9)
    obj = msgpack.unpackb(encode_readings(msg))
    obj["values"][0][0] = [1, 2]  # unhashable: used to escape as TypeError
    with pytest.raises(SchemaError):
        decode_readings(msgpack.packb(obj))
