"""The wire schema (common/schema.py): every message round-trips, and anything
that is not a meterpipe message is refused with SchemaError only.

Hypothesis properties, one per wire message (frame, reading, status, replay
request, replay reply):

* encode then decode gives an equal value, for generated values with the edge
  cases in: empty lists and maps, meter names of 1 and 64 characters from the
  allowed alphabet, any unicode in the free-text fields (reading names, units,
  meter ids, errors), exponents at the bounds of a COSEM scaler, integers at msgpack's
  bounds (int64 minimum, uint64 maximum: the schema's range for every integer);
* decode of arbitrary bytes, of a valid message with bytes flipped or cut, or
  of a msgpack map of the right type whose fields are replaced by arbitrary
  msgpack values, gives a value of the message's type or SchemaError, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterpipe.common.errors import SchemaError
from meterpipe.common.schema import (
    Frame,
    LinkLayer,
    ReadingsMessage,
    Status,
    check_meter_name,
    decode_frame,
    decode_readings,
    decode_replay_reply,
    decode_replay_request,
    decode_status,
    encode_frame,
    encode_readings,
    encode_replay_reply,
    encode_replay_request,
    encode_status,
    meter_of_topic,
    reading_topic,
    status_topic,
)
from meterpipe.common.values import MAX_EXPONENT, Push, Reading
from tests.decoder.strategies import DERANDOMIZE, examples

PROPERTY = settings(max_examples=examples(300), derandomize=DERANDOMIZE, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- values ---------------------------------------------------------------------------

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # what msgpack carries: the bounds of every integer field
EDGE_INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**32, 2**53 + 1, 2**63 - 1, 2**63, INT64_MIN, UINT64_MAX]
INTS = st.one_of(st.sampled_from(EDGE_INTS), st.integers(INT64_MIN, UINT64_MAX))
NS = st.one_of(st.sampled_from([0, 1_714_564_800_000_000_000, 2**63 - 1]), st.integers(0, 2**63 - 1))
TEXT = st.text(max_size=40)  # any unicode (Hypothesis leaves out lone surrogates: they are not UTF-8)
OPT_TEXT = st.none() | TEXT
METER = st.one_of(st.sampled_from(["a", "house", "M" * 64, "0.flat_2-b"]),
                  st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True))
OBIS = st.from_regex(r"\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(\*\d{1,3})?", fullmatch=True)
EXPONENT = st.one_of(st.sampled_from([0, -1, -3, -9, 3, -MAX_EXPONENT, MAX_EXPONENT]),
                     st.integers(-MAX_EXPONENT, MAX_EXPONENT))


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    obis, name, unit = draw(OBIS), draw(TEXT), draw(OPT_TEXT)
    if draw(st.booleans()):
        return Reading(obis, name, draw(INTS), draw(EXPONENT), unit)
    return Reading(obis, name, draw(TEXT), 0, unit)  # text values (identifiers) carry no exponent


PUSHES = st.builds(
    Push,
    readings=st.lists(readings(), max_size=12).map(tuple),
    meter_id=OPT_TEXT,
    system_title=st.none() | st.binary(max_size=8).map(bytes.hex),
    time=st.none() | st.sampled_from(["2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00Z"]) | TEXT,
    encrypted=st.booleans(),
    authenticated=st.booleans(),
    invocation_counter=st.none() | INTS,
)
FRAMES = st.builds(Frame, meter=METER, seq=INTS, received_ns=NS, link=st.sampled_from(LinkLayer),
                   data=st.binary(max_size=600), dropped=INTS)
READINGS = st.builds(ReadingsMessage, meter=METER, seq=INTS, received_ns=NS, push=PUSHES, frame_seq=INTS)
STATUSES = st.builds(Status, meter=METER, sent_ns=NS, counters=st.dictionaries(TEXT, INTS, max_size=12),
                     last_error=OPT_TEXT, last_error_kind=OPT_TEXT, last_push_ns=st.none() | NS)
SINCE = st.dictionaries(METER | TEXT, NS, max_size=12)
REPLAYED = st.lists(st.binary(max_size=200), max_size=12)


# (decode, strategy of valid values, encode, type of what decode returns), per message type
MESSAGES: dict[str, tuple[Callable[[bytes], Any], st.SearchStrategy[Any], Callable[[Any], bytes], type]] = {
    "frame": (decode_frame, FRAMES, encode_frame, Frame),
    "reading": (decode_readings, READINGS, encode_readings, ReadingsMessage),
    "status": (decode_status, STATUSES, encode_status, Status),
    "replay": (decode_replay_request, SINCE, encode_replay_request, dict),
    "replayed": (decode_replay_reply, REPLAYED, encode_replay_reply, list),
}


@pytest.mark.parametrize("what", sorted(MESSAGES))
@PROPERTY
@given(data=st.data())
def test_every_wire_message_round_trips(what: str, data: st.DataObject) -> None:
    decode, valid, encode, _ = MESSAGES[what]
    value = data.draw(valid, label=what)
    assert decode(encode(value)) == value


@PROPERTY
@given(meter=METER)
def test_topics_carry_the_meter_name(meter: str) -> None:
    assert meter_of_topic(reading_topic(meter)) == meter == meter_of_topic(status_topic(meter))


def test_readings_round_trip_exactly() -> None:
    msg = ReadingsMessage("house", 3, 123, Push((Reading("1-0:32.7.0", "voltage_l1", 2301, -1, "V"),), "LGZ1"), 9)
    assert decode_readings(encode_readings(msg)) == msg


# --- anything else: a value or SchemaError ---------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(), TEXT, st.binary(max_size=20))


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5)


WIRE_VALUES = st.recursive(SCALARS, _containers, max_leaves=20)  # anything msgpack carries


def _decodes_or_refuses(decode: Callable[[bytes], Any], payload: bytes, kind: type) -> None:
    try:
        value = decode(payload)
    except SchemaError:
        return
    assert isinstance(value, kind)


@st.composite
def mangled(draw: st.DrawFn, valid: st.SearchStrategy[Any], encode: Callable[[Any], bytes]) -> bytes:
    """A valid message's bytes with some flipped, cut off or inserted."""
    data = bytearray(encode(draw(valid)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, max(0, len(data) - 1)))
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[i:]
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=9))
    return bytes(data)


@st.composite
def refilled(draw: st.DrawFn, what: str, valid: st.SearchStrategy[Any], encode: Callable[[Any], bytes]) -> bytes:
    """A message of the right type and version with fields dropped, added or given arbitrary values,
    down into the list of readings."""
    obj = msgpack.unpackb(encode(draw(valid)), raw=False)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(obj)) | TEXT)
        if key in ("v", "t") and draw(st.booleans()):
            continue  # mostly keep the header: the fields behind it are what is under test
        op = draw(st.sampled_from(["replace", "drop", "nested"]))
        if op == "drop":
            obj.pop(key, None)
        elif op == "nested" and isinstance(obj.get(key), list) and obj[key]:
            items = obj[key]
            j = draw(st.integers(0, len(items) - 1))
            if isinstance(items[j], list) and items[j]:  # one field of one reading
                items[j][draw(st.integers(0, len(items[j]) - 1))] = draw(WIRE_VALUES)
            else:
                items[j] = draw(WIRE_VALUES)
        else:
            obj[key] = draw(WIRE_VALUES)
    return bytes(msgpack.packb(obj, use_bin_type=True))


@pytest.mark.parametrize("what", sorted(MESSAGES))
@PROPERTY
@given(data=st.data())
def test_decode_of_anything_gives_a_message_or_schema_error(what: str, data: st.DataObject) -> None:
    decode, valid, encode, kind = MESSAGES[what]
    payload = data.draw(st.one_of(
        st.binary(max_size=300),
        mangled(valid, encode),
        refilled(what, valid, encode),
        WIRE_VALUES.map(lambda v: bytes(msgpack.packb(v, use_bin_type=True))),
    ), label="payload")
    _decodes_or_refuses(decode, payload, kind)


def test_a_reading_whose_obis_is_not_text_is_a_schema_error() -> None:
    msg = ReadingsMessage("house", 3, 123, Push((Reading("1-0:32.7.0", "voltage_l1", 2301, -1, "V"),)), 9)
    obj = msgpack.unpackb(encode_readings(msg))
    obj["values"][0][0] = [1, 2]  # unhashable: used to escape as TypeError
    with pytest.raises(SchemaError):
        decode_readings(msgpack.packb(obj))


# --- the holes the round-trip property found (issue 9) ---------------------------------


def test_a_meter_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(SchemaError):
        check_meter_name("house\n")


@pytest.mark.parametrize("exponent", [MAX_EXPONENT + 1, -(2**63), True])
def test_an_exponent_that_would_make_unbounded_text_is_refused(exponent: int) -> None:
    """2**63 as a decimal exponent made Reading.text() build a number of 2**63 digits."""
    with pytest.raises(SchemaError):
        Reading("1-0:1.8.0", "active_energy_import", 1, exponent, "Wh")


def test_a_boolean_is_neither_a_schema_version_nor_a_counter() -> None:
    status = Status("house", sent_ns=1, counters={"bytes": 1})
    payload = encode_status(status)
    assert decode_status(payload) == status
    obj = msgpack.unpackb(payload)
    for forged in ({**obj, "v": True}, {**obj, "counters": {"bytes": True}}):
        with pytest.raises(SchemaError):
            decode_status(msgpack.packb(forged))


def test_an_integer_beyond_64_bits_is_a_schema_error_on_encode() -> None:
    with pytest.raises(SchemaError):
        encode_status(Status("house", sent_ns=2**64, counters={}))
