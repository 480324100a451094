"""Segment and general-block-transfer reassembly: losses, duplicates, reordering,
timeouts, and recovery with the next push (a lost piece never merges two pushes)."""

from __future__ import annotations

from typing import Any

import pytest

from meterpipe.common.errors import MeterpipeError, SequenceError, TruncatedError
from meterpipe.common.link.frames import LinkFrame
from meterpipe.common.schema import LinkLayer
from meterpipe.common.values import Push
from meterpipe.decoder.reassembly import BlockAssembler, SegmentAssembler
from meterpipe.decoder.session import MeterDecoder
from tests.conftest import keys, model_hint, needs_corpus, vector
from tests.decoder.strategies import link_frames

GAP = 3_000_000_000


def notification(value: int) -> bytes:
    """A data-notification with body {1-0:1.8.0, value}: pushes tell apart by value."""
    return bytes.fromhex("0f0000000100" "0202" "09060100010800ff" "06") + value.to_bytes(4, "big")


def gbt(number: int, data: bytes, *, last: bool) -> bytes:
    """One general-block-transfer APDU: E0, control (last-block bit 0x80, window 1), block number, ack 0."""
    return bytes([0xE0, (0x80 if last else 0x00) | 0x01]) + number.to_bytes(2, "big") + b"\x00\x00" + bytes([len(data)]) + data


def blocks(value: int, count: int = 3) -> list[bytes]:
    apdu = notification(value)
    size = -(-len(apdu) // count)
    parts = [apdu[i * size : (i + 1) * size] for i in range(count)]
    return [gbt(i + 1, p, last=i == count - 1) for i, p in enumerate(parts)]


def values(out: list[Push | MeterpipeError]) -> list[Any]:
    """Each outcome as the push's register value or the error's kind."""
    return [o.readings[0].value if isinstance(o, Push) else o.kind for o in out]


def feed_all(decoder: MeterDecoder, apdus: list[bytes], times: list[int] | None = None) -> list[Push | MeterpipeError]:
    out: list[Push | MeterpipeError] = []
    for i, apdu in enumerate(apdus):
        out += decoder.feed_apdu(apdu, now_ns=times[i] if times else i)
    return out


# --- general block transfer -------------------------------------------------------------


def test_gbt_blocks_join_into_one_push() -> None:
    assert values(feed_all(MeterDecoder("m"), blocks(1))) == [1]


def test_gbt_duplicate_block_is_sequence_then_next_push_decodes() -> None:
    b = blocks(1)
    out = feed_all(MeterDecoder("m"), [b[0], b[1], b[1], b[2], *blocks(2)])
    assert values(out) == ["sequence", "sequence", 2]
    assert "duplicated" in str(out[0])


def test_gbt_out_of_order_blocks_are_sequence_then_next_push_decodes() -> None:
    b = blocks(1, 4)
    out = feed_all(MeterDecoder("m"), [b[0], b[2], b[1], b[3], *blocks(2, 4)])
    assert values(out) == ["sequence", "sequence", "sequence", 2]
    assert "arrived early" in str(out[0])


def test_gbt_lost_block_never_merges_two_pushes() -> None:
    b1, b2 = blocks(1), blocks(2)
    # push 1 loses its last block; push 2 starts: push 1 is abandoned, push 2 is whole
    out = feed_all(MeterDecoder("m"), [b1[0], b1[1], *b2])
    assert values(out) == ["sequence", 2]
    assert "a new push started" in str(out[0])


def test_gbt_block_too_late_is_sequence_then_next_push_decodes() -> None:
    b = blocks(1)
    out = feed_all(MeterDecoder("m", gap_ns=GAP), [b[0], b[1], b[2], *blocks(2)], times=[0, GAP + 1, GAP + 2, GAP + 3, GAP + 4, GAP + 5])
    assert values(out) == ["sequence", "sequence", 2]
    assert "came too late" in str(out[0])


def test_gbt_blocks_within_the_gap_are_fine() -> None:
    out = feed_all(MeterDecoder("m", gap_ns=GAP), blocks(1), times=[0, GAP, 2 * GAP])
    assert values(out) == [1]


def test_block_assembler_reports_abandoned_push_alongside_the_new_one() -> None:
    assembler = BlockAssembler(gap_ns=GAP)
    b1, b2 = blocks(1), blocks(2)
    assert assembler.add(b1[0], 0) == (None, None)
    apdu, abandoned = assembler.add(b2[0], 1)
    assert apdu is None and isinstance(abandoned, SequenceError)
    assert assembler.add(b2[1], 2) == (None, None)
    assert assembler.add(b2[2], 3) == (notification(2), None)
    assert not assembler.pending


@pytest.mark.parametrize(
    "block",
    [b"\xe0\x81\x00\x01\x00", b"\xe0\x81\x00\x01\x00\x00\x09\x0f\x00", b"\xe0\x81\x00\x01\x00\x00\x84\xff\xff\xff\xff"],
    ids=["header-cut", "data-cut", "huge-length"],
)
def test_gbt_block_cut_short_is_truncated(block: bytes) -> None:
    with pytest.raises(TruncatedError):
        BlockAssembler().add(block, 0)


def test_gbt_push_over_the_size_cap_is_dropped_then_recovers() -> None:
    assembler = BlockAssembler(max_bytes=100)
    with pytest.raises(TruncatedError):
        for i in range(1, 10):
            assembler.add(gbt(i, bytes(20), last=False), i)
    assert not assembler.pending
    b = blocks(7)
    assert [assembler.add(x, 20 + i)[0] for i, x in enumerate(b)][-1] == notification(7)


# --- HDLC / M-Bus segments ----------------------------------------------------------------


def segments(value: int, count: int = 3) -> list[LinkFrame]:
    apdu = notification(value)
    size = -(-len(apdu) // count)
    parts = [apdu[i * size : (i + 1) * size] for i in range(count)]
    return [LinkFrame(LinkLayer.HDLC, p, p, more=i < count - 1, first=i == 0) for i, p in enumerate(parts)]


def run(assembler: SegmentAssembler, frames: list[LinkFrame], times: list[int] | None = None) -> list[Any]:
    out: list[Any] = []
    for i, frame in enumerate(frames):
        try:
            apdu, abandoned = assembler.add(frame, times[i] if times else i)
        except SequenceError as exc:
            out.append("sequence:" + str(exc))
            continue
        if abandoned is not None:
            out.append("sequence:" + str(abandoned))
        if apdu is not None:
            out.append(apdu)
    return out


def test_segments_join() -> None:
    assert run(SegmentAssembler(), segments(1)) == [notification(1)]


def test_lost_last_segment_abandons_the_push_when_the_next_starts() -> None:
    s1, s2 = segments(1), segments(2)
    out = run(SegmentAssembler(), [s1[0], s1[1], *s2])
    assert len(out) == 2 and out[0].startswith("sequence:") and "new push started" in out[0]
    assert out[1] == notification(2)


def test_lost_first_segment_is_an_orphan() -> None:
    s1, s2 = segments(1), segments(2)
    out = run(SegmentAssembler(), [s1[1], s1[2], *s2])
    # each orphan is reported (nothing is glued to the next push)
    assert [o[:9] if isinstance(o, str) else o for o in out] == ["sequence:", "sequence:", notification(2)]
    assert "first segment was lost" in out[0]


def test_segment_too_late_resets() -> None:
    s1, s2 = segments(1), segments(2)
    out = run(SegmentAssembler(gap_ns=GAP), [s1[0], s1[1], s1[2], *s2], times=[0, GAP + 1, GAP + 2, GAP + 3, GAP + 4, GAP + 5])
    assert out[0].startswith("sequence:") and "came too late" in out[0]
    assert out[-1] == notification(2) and notification(1) not in out


def test_segment_size_cap_then_recovery() -> None:
    assembler = SegmentAssembler(max_bytes=64)
    big = [LinkFrame(LinkLayer.HDLC, b"", bytes(30), more=True, first=i == 0) for i in range(3)]
    with pytest.raises(TruncatedError):
        run(assembler, big)
    assert run(assembler, segments(3)) == [notification(3)]


def test_timeout_reset_through_meter_decoder_with_hdlc_frames() -> None:
    from tests.common.test_link import hdlc

    apdu = notification(5)
    first = hdlc(b"\xe6\xe7\x00" + apdu[:10], segmented=True)
    last = hdlc(apdu[10:])
    decoder = MeterDecoder("m", gap_ns=GAP)
    assert decoder.feed(first, now_ns=0) == []
    out = decoder.feed(last, now_ns=GAP + 1)
    assert values(out) == ["sequence"]
    assert values(decoder.feed(first + last, now_ns=2 * GAP)) == [5]


# --- real segmented captures -------------------------------------------------------------


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("vid", ["sdc-iskra-am550-ch-unenc-hdlcseg", "dlmsp-iskra-am550-hdlcseg"])
def test_corpus_hdlc_push_with_lost_middle_segment_never_merges_two_pushes(vid: str) -> None:
    v = vector(vid)
    frames = [f.raw for f in link_frames(v)]
    assert len(frames) >= 3
    decoder = MeterDecoder("m", model=model_hint(v))
    (clean,) = decoder.feed(b"".join(frames))
    assert isinstance(clean, Push)
    # push A loses a middle segment, push B (the same capture again) arrives whole:
    # A is rejected, B decodes to exactly the clean push, nothing else comes out.
    damaged = frames[:1] + frames[2:]
    out = MeterDecoder("m", model=model_hint(v)).feed(b"".join(damaged) + b"".join(frames))
    assert [o for o in out if isinstance(o, Push)] == [clean]
    assert out[-1] == clean and all(isinstance(o, MeterpipeError) for o in out[:-1]) and out[:-1]
    # push A loses its last segment: abandoned as a sequence error when B starts
    out = MeterDecoder("m", model=model_hint(v)).feed(b"".join(frames[:-1]) + b"".join(frames))
    assert values(out)[:-1] == ["sequence"] and out[-1] == clean


@needs_corpus
@pytest.mark.corpus
def test_corpus_gbt_capture_with_a_lost_block_then_the_whole_push() -> None:
    v = vector("dlmsp-lg-e450-enc-gbt-1")
    key, auth = keys(v)
    frames = [f.raw for f in link_frames(v)]
    (clean,) = MeterDecoder("m", key=key, auth_key=auth).feed(b"".join(frames))
    decoder = MeterDecoder("m", key=key, auth_key=auth)
    out = decoder.feed(frames[0] + frames[2] + b"".join(frames))
    assert [o.kind if isinstance(o, MeterpipeError) else o for o in out] == ["sequence", clean]
