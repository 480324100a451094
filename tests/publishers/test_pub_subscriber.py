"""The shared SUB loop: decoding, schema errors, gap and restart detection, stop flag."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from meterpipe.common.schema import ReadingsMessage, Status, encode_status, status_topic
from meterpipe.publishers.subscriber import SeqTracker, SubscriberStats, run_subscriber
from tests.publishers.conftest import Feeder, make_msg, wait_for


class Recorder:
    def __init__(self) -> None:
        self.readings: list[ReadingsMessage] = []
        self.statuses: list[Status] = []
        self.ticks = 0

    def on_readings(self, msg: ReadingsMessage) -> None:
        self.readings.append(msg)

    def on_status(self, status: Status) -> None:
        self.statuses.append(status)

    def tick(self, now: float) -> None:
        self.ticks += 1

    def poll_fds(self) -> list[int]:
        return []

    def replay_cursor(self) -> dict[str, int]:
        return {}


def test_seq_tracker_gaps_and_restarts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    stats = SubscriberStats()
    t = SeqTracker(stats)
    assert t.observe("house", 5) == 0  # first seen: no gap
    assert t.observe("house", 6) == 0
    assert t.observe("house", 9) == 2
    assert t.observe("flat", 1) == 0
    assert t.observe("house", 1) == 0  # decoder restart
    assert t.observe("house", 2) == 0
    assert (stats.gaps, stats.missing, stats.restarts) == (1, 2, 1)
    assert "2 push(es) lost between seq 6 and 9" in caplog.text
    assert "decoder restarted" in caplog.text


def test_loop_delivers_counts_bad_messages_and_stops(feeder: Feeder, tmp_path: Path) -> None:
    rec = Recorder()
    stop = threading.Event()
    result: list[SubscriberStats] = []
    th = threading.Thread(target=lambda: result.append(
        run_subscriber(feeder.endpoint, rec, stop.is_set, poll_ms=50)))
    th.start()
    try:
        seq = 0

        def connected() -> bool:
            nonlocal seq
            seq += 1
            feeder.send(make_msg(seq))
            return bool(rec.readings)

        wait_for(connected, 5, "the subscriber to connect")
        first = rec.readings[0].seq
        feeder.send_raw([b"reading/house", b"not msgpack"])
        feeder.send_raw([b"reading/house"])
        feeder.send(make_msg(seq + 3))  # two lost
        feeder.send_raw([status_topic("house"), encode_status(Status("house", 1, {"frames_ok": 3}, "x", "auth"))])
        wait_for(lambda: len(rec.statuses) == 1, 5, "the status message")
    finally:
        stop.set()
        th.join(5)
    assert not th.is_alive()
    stats = result[0]
    assert [m.seq for m in rec.readings][-1] == seq + 3
    assert rec.statuses[0].counters == {"frames_ok": 3}
    assert stats.schema_errors == 2
    assert stats.missing == 2
    assert stats.received == seq - first + 2
    assert rec.ticks > 0


def test_stop_is_seen_within_poll_timeout(feeder: Feeder) -> None:
    stop = threading.Event()
    th = threading.Thread(target=run_subscriber, args=(feeder.endpoint, Recorder(), stop.is_set))
    th.start()
    time.sleep(0.1)
    stop.set()
    th.join(2)
    assert not th.is_alive()
