"""The simulator's I/O, driven in-process: the pacing loop with a fake sink, records, links."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from meterpipe.common.process import StopFlag
from meterpipe.simulator.meter import MeterSimulator, ReplayMeter
from meterpipe.simulator.sinks import make_link, record_line, transmit, write_frames


class FakeSink:
    """Takes at most ``room`` bytes per write (None: everything)."""

    def __init__(self, room: int | None = None) -> None:
        self.room = room
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> int:
        taken = data if self.room is None else data[: self.room]
        self.data += taken
        return len(taken)

    def close(self) -> None:
        self.closed = True


def test_transmit_writes_count_pushes_and_records_each() -> None:
    sink, record = FakeSink(), io.StringIO()
    sent = transmit(MeterSimulator("e360", seed=1), sink, StopFlag(), label="e360", interval_s=0.01,
                    count=3, record=record)
    assert sent == 3
    assert record.getvalue().endswith("\n")
    records = [json.loads(line) for line in record.getvalue().splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert bytes(sink.data) == b"".join(bytes.fromhex(r["hex"]) for r in records)
    assert {r["model"] for r in records} == {"e360"}


def test_transmit_counts_what_the_sink_drops(caplog: pytest.LogCaptureFixture) -> None:
    capture = bytes(range(10))
    with caplog.at_level(logging.INFO, logger="meterpipe.simulator.sinks"):
        sent = transmit(ReplayMeter(capture), FakeSink(room=4), StopFlag(), label="replay", interval_s=0.01, count=2)
    assert sent == 2
    assert "replay: 6 bytes not written (nobody reading?), 12 dropped so far" in caplog.text
    assert "replay: stopped after 2 pushes, 12 bytes dropped" in caplog.text


def test_transmit_stops_on_the_flag() -> None:
    stop = StopFlag()
    stop.set()
    assert transmit(ReplayMeter(b"x"), FakeSink(), stop, label="replay", interval_s=0.01) == 0


def test_write_frames_stops_between_frames_when_asked() -> None:
    stop, sink = StopFlag(), FakeSink()
    assert write_frames(sink, [b"ab", b"cd"], None, stop) == 0 and bytes(sink.data) == b"abcd"
    stop.set()
    assert write_frames(sink, [b"ef", b"gh"], None, stop) == 0 and bytes(sink.data) == b"abcdef"


def test_replay_meter_sends_its_capture_unchanged() -> None:
    push = ReplayMeter(b"\x7e\xa0").push(datetime(2026, 5, 4, 7, 30, 0, 123456))
    assert push.data == b"\x7e\xa0" and push.frames == (b"\x7e\xa0",)
    assert push.values == {} and push.invocation_counter is None and push.time.microsecond == 0


def test_record_line_renders_scaled_values_as_decimal_text() -> None:
    sim = MeterSimulator("omnipower", key=bytes(16), seed=2)
    push = sim.push(datetime(2026, 5, 4, 7, 30, 0))
    record = json.loads(record_line("omnipower", 7, push))
    assert record["seq"] == 7 and record["invocation_counter"] == push.invocation_counter
    assert record["hex"] == push.data.hex()
    value, exponent, unit = push.values["1-1:1.8.0"]  # energy in 10 Wh steps
    assert exponent == 1 and record["values"]["1-1:1.8.0"] == {"value": int(value) * 10, "unit": unit}
    value, exponent, unit = push.values["1-1:31.7.0"]  # current in 0.01 A
    assert exponent == -2 and Decimal(record["values"]["1-1:31.7.0"]["value"]) == Decimal(int(value)).scaleb(-2)


def test_make_link_replaces_a_link_and_refuses_a_directory(tmp_path: Path) -> None:
    link = tmp_path / "meter0"
    make_link(link, "/dev/pts/98")
    make_link(link, "/dev/pts/99")
    assert link.readlink() == Path("/dev/pts/99")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meter0"]
    with pytest.raises(IsADirectoryError, match="is a directory"):
        make_link(tmp_path, "/dev/pts/99")
