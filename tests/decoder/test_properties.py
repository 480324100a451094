"""Hypothesis properties of the decoder (the h11 contract, STYLE.md section 4):

* any bytes, and real captures mangled (bit flips, truncations, splices, lying
  and huge length fields, duplicated frames), through every layer give a result
  or a MeterpipeError, never another exception, and quickly (deadline);
  MeterDecoder.feed raises nothing at all;
* results do not depend on how the stream is split into chunks;
* nesting 1,000 levels deep is refused with an error, not a RecursionError.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meterpipe.common.errors import MeterpipeError
from meterpipe.common.schema import LinkLayer
from meterpipe.common.values import Push
from meterpipe.decoder import axdr, gurux_adapter
from meterpipe.decoder.apdu import parse_notification
from meterpipe.common.link.frames import Framer, LinkFrame, parse_hdlc, parse_mbus
from meterpipe.decoder.mapping import map_body
from meterpipe.decoder.reassembly import BlockAssembler, SegmentAssembler
from meterpipe.decoder.security import parse_ciphered
from meterpipe.decoder.session import MeterDecoder

from tests.conftest import DLMS_VECTORS, keys, model_hint
from tests.decoder import strategies as s
from tests.decoder.strategies import drain

ROBUST = settings(
    max_examples=s.examples(150),
    deadline=3000,
    derandomize=s.DERANDOMIZE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

LINKED = [v for v in DLMS_VECTORS if v["transport"] in ("hdlc", "mbus")]
LINKED_OR_NONE: list[dict[str, Any] | None] = [*LINKED] or [None]
STREAMS = [bytes.fromhex(v["bytes_hex"]) for v in LINKED]
FRAMES = [f.raw for v in LINKED for f in s.link_frames(v)]
APDUS = [a for v in DLMS_VECTORS if not v["expect"].get("error") for a in s.apdus(v)]
PLAIN = [
    p
    for v in DLMS_VECTORS
    if not v["expect"].get("error") and (v.get("key") or not v.get("encrypted"))
    for p in s.plaintexts(v, *keys(v))
]


def _or_random(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    """A corpus sample, or random bytes when the corpus is absent."""
    return st.sampled_from(samples) if samples else st.binary(min_size=1, max_size=300)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A real capture (or piece of one) mangled the ways a serial line and an attacker do."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=20))
        n = len(data)
        op = draw(st.sampled_from(["flip", "truncate", "cut_head", "splice", "insert", "lie", "huge", "dup"]))
        i = draw(st.integers(0, n - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "cut_head":
            del data[:i]
        elif op == "splice":  # the tail of another capture from here on
            other = draw(base)
            data[i:] = other[draw(st.integers(0, max(0, len(other) - 1))) :]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "lie":  # a length-ish byte says something else
            data[i] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0xFF, max(0, data[i] - 1), min(255, data[i] + 1)]))
        elif op == "huge":  # a long-form length claiming gigabytes
            data[i : i + 1] = draw(st.sampled_from([b"\x84\xff\xff\xff\xff", b"\x83\xff\xff\xff", b"\x82\xff\xff", b"\x80", b"\x85\x01\x00\x00\x00\x00"]))
        else:  # a duplicated stretch (frame, block, member)
            j = draw(st.integers(i, n))
            data[j:j] = data[i:j]
    return bytes(data)


ANY_STREAM = st.one_of(st.binary(max_size=600), mutated(_or_random(STREAMS)))
ANY_FRAME = st.one_of(st.binary(max_size=300), mutated(_or_random(FRAMES)))
ANY_APDU = st.one_of(st.binary(max_size=600), mutated(_or_random(APDUS)))
ANY_PLAIN = st.one_of(st.binary(max_size=600), mutated(_or_random(PLAIN)), st.binary(max_size=300).map(lambda b: b"\x0f\x00\x00\x00\x01\x00" + b))


# --- every layer: a result or a MeterpipeError -------------------------------------


@pytest.mark.parametrize("link", [LinkLayer.AUTO, LinkLayer.HDLC, LinkLayer.MBUS])
@ROBUST
@given(data=ANY_STREAM)
def test_framer_gives_frames_or_frame_errors(link: LinkLayer, data: bytes) -> None:
    framer = Framer(link, max_buffer=512)
    framer.feed(data)
    for item in drain(framer):
        if isinstance(item, LinkFrame):
            assert item.raw in data and item.link in (LinkLayer.HDLC, LinkLayer.MBUS)
    assert framer.buffered <= max(len(data), 1)


@ROBUST
@given(raw=ANY_FRAME)
def test_parse_hdlc_and_parse_mbus_give_frames_or_frame_errors(raw: bytes) -> None:
    for parse in (parse_hdlc, parse_mbus):
        result = s.only_meterpipe_errors(parse, raw)
        if isinstance(result, LinkFrame):
            assert result.raw == raw


@ROBUST
@given(blocks=st.lists(ANY_APDU, max_size=5), gbt=st.lists(mutated(st.just(b"\xe0\x40\x00\x01\x00\x00\x05\x0f\x00\x00\x00\x01")), max_size=4))
def test_assemblers_give_apdus_or_errors(blocks: list[bytes], gbt: list[bytes]) -> None:
    assembler = BlockAssembler(max_bytes=2048)
    segments = SegmentAssembler(max_bytes=2048)
    for i, block in enumerate(blocks + gbt):
        s.only_meterpipe_errors(assembler.add, block, i)
        frame = LinkFrame(LinkLayer.HDLC, block, block, more=bool(i % 2), first=not i % 3)
        s.only_meterpipe_errors(segments.add, frame, i)


@ROBUST
@given(apdu=ANY_APDU)
def test_parse_ciphered_gives_parts_or_errors(apdu: bytes) -> None:
    s.only_meterpipe_errors(parse_ciphered, apdu)


@ROBUST
@given(apdu=ANY_PLAIN)
def test_axdr_notification_and_mapping_give_values_or_errors(apdu: bytes) -> None:
    s.only_meterpipe_errors(axdr.parse_all, apdu)
    note = s.only_meterpipe_errors(parse_notification, apdu)
    if not isinstance(note, MeterpipeError):
        s.only_meterpipe_errors(map_body, note.body)
        s.only_meterpipe_errors(map_body, note.body, model="kaifa")


@ROBUST
@given(body=s.nested(max_leaves=30), model=st.sampled_from([None, "kaifa", "e450", "kamstrup"]))
def test_map_body_on_any_decoded_value_gives_readings_or_errors(body: s.Enc, model: str | None) -> None:
    s.only_meterpipe_errors(map_body, body.value, model=model)


@ROBUST
@given(data=ANY_STREAM, split=st.lists(st.integers(0, 600), max_size=6), which=st.sampled_from(LINKED_OR_NONE))
def test_meter_decoder_feed_never_raises(data: bytes, split: list[int], which: dict[str, Any] | None) -> None:
    key, auth = keys(which) if which else (None, None)
    decoder = MeterDecoder("m", key=key, auth_key=auth, max_buffer=1024, gap_ns=0)
    out: list[Push | MeterpipeError] = []
    last = 0
    for cut in sorted(split) + [len(data)]:
        out += decoder.feed(data[last:cut], now_ns=cut)
        last = max(last, cut)
    out += decoder.feed_apdu(data)
    for o in out:
        assert isinstance(o, (Push, MeterpipeError))
        if isinstance(o, MeterpipeError):
            assert o.meter == "m" and o.kind


# --- 1,000 levels of nesting --------------------------------------------------------

DEEP = [b"\x01\x01" * 1000 + b"\x00", b"\x02\x01" * 1000 + b"\x00", b"\x02\x02\x13\x00" + b"\x01\x01" * 1000 + b"\x00"]


@pytest.mark.parametrize("body", DEEP, ids=["arrays", "structures", "behind-an-unsupported-type"])
def test_deep_nesting_is_refused_with_an_error(body: bytes) -> None:
    with pytest.raises(MeterpipeError):
        axdr.parse_all(body)
    with pytest.raises(MeterpipeError):
        gurux_adapter.parse_all(body)
    apdu = b"\x0f\x00\x00\x00\x01\x00" + body
    with pytest.raises(MeterpipeError):
        parse_notification(apdu)
    (err,) = MeterDecoder("m").feed_apdu(apdu)
    assert isinstance(err, MeterpipeError) and err.kind in ("unsupported", "truncated")
    assert "nest" in str(err)


def test_nesting_up_to_the_limit_still_decodes() -> None:
    depth = axdr.MAX_DEPTH
    body = b"\x01\x01" * depth + b"\x11\x05"
    value = axdr.parse_all(body)
    for _ in range(depth):
        (value,) = value
    assert value == 5


# --- chunking independence ------------------------------------------------------------


def _outcomes(v: dict[str, Any], chunks: list[bytes]) -> tuple[list[Push], list[tuple[str, str]]]:
    key, auth = keys(v)
    decoder = MeterDecoder("m", key=key, auth_key=auth, model=model_hint(v))
    out: list[Push | MeterpipeError] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return [o for o in out if isinstance(o, Push)], [(o.kind, str(o)) for o in out if isinstance(o, MeterpipeError)]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


@pytest.mark.parametrize("v", LINKED, ids=lambda v: v["id"])
@pytest.mark.parametrize("size", [1, 2, 3, 5, 17, 64, 255])
def test_corpus_capture_in_fixed_chunks_gives_the_same_outcomes(v: dict[str, Any], size: int) -> None:
    data = bytes.fromhex(v["bytes_hex"])
    whole = _outcomes(v, [data])
    assert _outcomes(v, [data[i : i + size] for i in range(0, len(data), size)]) == whole


@settings(max_examples=s.examples(120), deadline=3000, derandomize=s.DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(LINKED_OR_NONE), cuts=st.lists(st.integers(0, 2000), max_size=12), repeat=st.integers(1, 2))
def test_random_split_points_give_the_same_outcomes(which: dict[str, Any] | None, cuts: list[int], repeat: int) -> None:
    if which is None:
        pytest.skip("corpus absent")
    data = bytes.fromhex(which["bytes_hex"]) * repeat  # twice: a replay in the stream, same either way
    assert _outcomes(which, _split(data, cuts)) == _outcomes(which, [data])


@settings(max_examples=s.examples(80), deadline=3000, derandomize=s.DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated(_or_random(STREAMS)), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_mangled_streams_split_anywhere_give_the_same_outcomes(data: bytes, cuts: list[int]) -> None:
    decoder_whole = MeterDecoder("m")
    decoder_split = MeterDecoder("m")
    whole = decoder_whole.feed(data)
    split: list[Push | MeterpipeError] = []
    for chunk in _split(data, cuts):
        split += decoder_split.feed(chunk)
    def key(o: Push | MeterpipeError) -> Any:
        return o if isinstance(o, Push) else (o.kind, str(o))
    assert [key(o) for o in split] == [key(o) for o in whole]
