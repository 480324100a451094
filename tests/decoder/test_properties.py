"""Hypothesis properties of bad input, the h11 contract (STYLE.md sections 4 and 7):

* any bytes, and real captures mangled (bit flips, truncations, splices, lying
  and huge length fields, duplicated frames, worst-case length fields, 1,000
  levels of nesting), through every layer give a result or a MeterpipeError,
  never another exception; the MeterDecoder entry points (feed, feed_frame,
  feed_apdu) return errors and never raise. Each input must finish within
  50 ms and stay under a tracemalloc peak (tests/decoder/fuzzing.py:
  100,000 inputs in a CI run, hence marked slow; ``METERPIPE_FUZZ=quick`` for
  a 5 % smoke run, ``deep`` for 10x);
* results do not depend on how the stream is split into chunks;
* nesting 1,000 levels deep is refused with an error, not a RecursionError.

The wire schema's round trips are in tests/common/test_schema_wire.py; the
10 MB capped-buffer runs and garbage between frames on a real pty in
tests/reliability/test_bad_input.py. ``pytest -s`` prints the number of inputs
and the slowest and largest.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterpipe.common.errors import MeterpipeError
from meterpipe.common.link.frames import (
    DEFAULT_MAX_BUFFER,
    Framer,
    LinkFrame,
    parse_frame,
    parse_hdlc,
    parse_mbus,
)
from meterpipe.common.schema import LinkLayer
from meterpipe.common.values import Push
from meterpipe.decoder import axdr, gurux_adapter
from meterpipe.decoder.apdu import parse_notification
from meterpipe.decoder.mapping import map_body
from meterpipe.decoder.reassembly import BlockAssembler, SegmentAssembler
from meterpipe.decoder.security import decrypt, parse_ciphered
from meterpipe.decoder.session import MeterDecoder
from tests.conftest import keys, model_hint
from tests.decoder import strategies as s
from tests.decoder.fuzzing import (
    APDU_IN,
    FRAME_IN,
    GBT,
    KEYS,
    LINKED,
    LINKED_OR_NONE,
    PLAIN_IN,
    STATS,
    STREAM_IN,
    STREAMS,
    check,
    fuzz_settings,
    hostile,
    mutated,
    never_raises,
    or_random,
)
from tests.decoder.strategies import drain

LINKS = (LinkLayer.AUTO, LinkLayer.HDLC, LinkLayer.MBUS)
KEYS_OR_NONE: list[tuple[bytes | None, bytes | None]] = [(None, None), *KEYS]


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if STATS.inputs:
        print("\n" + STATS.report())


# --- every layer: a result or a MeterpipeError, within time and memory ---------------


def _frame_all_links(data: bytes) -> int:
    frames = 0
    for link in LINKS:
        for cap in (512, DEFAULT_MAX_BUFFER):
            framer = Framer(link, max_buffer=cap)
            framer.feed(data)
            for item in drain(framer):
                if isinstance(item, LinkFrame):
                    assert item.raw in data and item.link in (LinkLayer.HDLC, LinkLayer.MBUS)
                    frames += 1
            assert framer.buffered <= max(len(data), 1)
    return frames


@pytest.mark.slow
@fuzz_settings("framer")
@given(data=STREAM_IN)
def test_framer_gives_frames_or_frame_errors(data: bytes) -> None:
    check("framer", _frame_all_links, data)


def _parse_links(raw: bytes) -> None:
    for parse in (parse_hdlc, parse_mbus):
        result = s.only_meterpipe_errors(parse, raw)
        if isinstance(result, LinkFrame):
            assert result.raw == raw
    for link in LINKS:
        s.only_meterpipe_errors(parse_frame, link, raw)


@pytest.mark.slow
@fuzz_settings("parse_hdlc/mbus/frame")
@given(raw=FRAME_IN)
def test_parse_hdlc_mbus_and_frame_give_frames_or_frame_errors(raw: bytes) -> None:
    check("parse_hdlc/mbus/frame", _parse_links, raw)


def _assemble(pieces: list[bytes]) -> None:
    for caps in ({"max_bytes": 2048}, {}):
        blocks, segments = BlockAssembler(**caps), SegmentAssembler(**caps)
        for i, piece in enumerate(pieces):
            s.only_meterpipe_errors(blocks.add, piece, i * 1_000_000)
            frame = LinkFrame(LinkLayer.HDLC, piece, piece, more=bool(i % 2), first=not i % 3)
            s.only_meterpipe_errors(segments.add, frame, i * 1_000_000)


@pytest.mark.slow
@fuzz_settings("assemblers")
@given(pieces=st.lists(st.one_of(APDU_IN, hostile(st.just(GBT))), min_size=1, max_size=6))
def test_segment_and_block_assemblers_give_apdus_or_errors(pieces: list[bytes]) -> None:
    check("assemblers", _assemble, pieces)


def _cipher(apdu: bytes, which: int) -> None:
    ciphered = parse_ciphered(apdu)
    key, auth = KEYS[which % len(KEYS)]
    for k, a in ((key, auth), (key, None), (None, None)):
        s.only_meterpipe_errors(decrypt, ciphered, k, a)


@pytest.mark.slow
@fuzz_settings("parse_ciphered/decrypt")
@given(apdu=APDU_IN, which=st.integers(0, 50))
def test_parse_ciphered_and_decrypt_give_parts_or_errors(apdu: bytes, which: int) -> None:
    check("parse_ciphered/decrypt", _cipher, apdu, which)


def _plain(apdu: bytes) -> None:
    s.only_meterpipe_errors(axdr.parse_all, apdu)
    note = parse_notification(apdu)
    for model in (None, "kaifa", "e450"):
        s.only_meterpipe_errors(map_body, note.body, model=model)


@pytest.mark.slow
@fuzz_settings("axdr/notification/map_body")
@given(apdu=PLAIN_IN)
def test_axdr_notification_and_mapping_give_values_or_errors(apdu: bytes) -> None:
    check("axdr/notification/map_body", _plain, apdu)


def _body(apdu: bytes) -> bytes:
    return apdu[6:] if apdu[:1] == b"\x0f" and len(apdu) > 6 and apdu[5] == 0 else apdu


@pytest.mark.slow
@fuzz_settings("gurux")
@given(apdu=PLAIN_IN)
def test_gurux_adapter_gives_values_or_errors(apdu: bytes) -> None:
    check("gurux", gurux_adapter.parse_all, _body(apdu))


@settings(max_examples=s.examples(150), deadline=3000, derandomize=s.DERANDOMIZE,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(body=s.nested(max_leaves=30), model=st.sampled_from([None, "kaifa", "e450", "kamstrup"]))
def test_map_body_on_any_decoded_value_gives_readings_or_errors(body: s.Enc, model: str | None) -> None:
    s.only_meterpipe_errors(map_body, body.value, model=model)


def _feed(data: bytes, cuts: list[int], which: int) -> None:
    key, auth = KEYS_OR_NONE[which % len(KEYS_OR_NONE)]
    small = MeterDecoder("m", key=key, auth_key=auth, max_buffer=1024, gap_ns=0)
    default = MeterDecoder("m", key=key, auth_key=auth)
    out: list[Push | MeterpipeError] = []
    for decoder, cap in ((small, 1024), (default, DEFAULT_MAX_BUFFER)):
        last = 0
        for cut in [*sorted(cuts), len(data)]:
            out += never_raises(decoder.feed, data[last:cut], cut * 1_000_000)
            last = max(last, cut)
        assert decoder._framer.buffered <= cap
    out += never_raises(small.feed_apdu, data)
    for o in out:
        if isinstance(o, MeterpipeError):
            assert o.meter == "m" and o.kind


@pytest.mark.slow
@fuzz_settings("MeterDecoder.feed")
@given(data=STREAM_IN, cuts=st.lists(st.integers(0, 700), max_size=6), which=st.integers(0, 50))
def test_meter_decoder_feed_never_raises(data: bytes, cuts: list[int], which: int) -> None:
    check("MeterDecoder.feed", _feed, data, cuts, which)


def _feed_frame(raws: list[bytes], which: int) -> None:
    key, auth = KEYS[which % len(KEYS)]
    decoder = MeterDecoder("m", key=key, auth_key=auth)
    for i, raw in enumerate(raws):
        for link in (*LINKS, LinkLayer.APDU):
            never_raises(decoder.feed_frame, raw, link, i)


@pytest.mark.slow
@fuzz_settings("MeterDecoder.feed_frame")
@given(raws=st.lists(FRAME_IN, min_size=1, max_size=4), which=st.integers(0, 50))
def test_meter_decoder_feed_frame_never_raises(raws: list[bytes], which: int) -> None:
    check("MeterDecoder.feed_frame", _feed_frame, raws, which)


def _feed_apdu(apdu: bytes, which: int) -> None:
    key, auth = KEYS[which % len(KEYS)]
    for k, a, model in ((key, auth, None), (None, None, "kaifa")):
        never_raises(MeterDecoder("m", key=k, auth_key=a, model=model).feed_apdu, apdu, 0)


@pytest.mark.slow
@fuzz_settings("MeterDecoder.feed_apdu")
@given(apdu=st.one_of(APDU_IN, PLAIN_IN), which=st.integers(0, 50))
def test_meter_decoder_feed_apdu_never_raises(apdu: bytes, which: int) -> None:
    check("MeterDecoder.feed_apdu", _feed_apdu, apdu, which)


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
    return [data[a:b] for a, b in itertools.pairwise(edges)]


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
@given(data=mutated(or_random(STREAMS)), cuts=st.lists(st.integers(0, 2000), max_size=8))
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
