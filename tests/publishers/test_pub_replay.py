"""A restarted publisher catches up from the decoder's replay buffer (decoder/replay.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import zmq

from meterpipe.common.schema import ReadingsMessage, Status, encode_readings, reading_topic
from meterpipe.decoder.replay import ReplayBuffer
from meterpipe.decoder.service import DecoderService
from meterpipe.publishers.csv_writer import CsvStore
from meterpipe.publishers.mqtt.spool import Spool
from meterpipe.publishers.subscriber import run_subscriber
from tests.publishers.conftest import T0_NS, make_msg


class Recorder:
    def __init__(self, cursor: dict[str, int], stop: threading.Event, want: int) -> None:
        self.cursor = cursor
        self.got: list[ReadingsMessage] = []
        self._stop = stop
        self._want = want

    def on_readings(self, msg: ReadingsMessage) -> None:
        self.got.append(msg)
        if len(self.got) >= self._want:
            self._stop.set()

    def on_status(self, status: Status) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def poll_fds(self) -> list[int]:
        return []

    def replay_cursor(self) -> dict[str, int]:
        return self.cursor


def test_replay_buffer_answers_only_for_named_meters_after_their_cursor() -> None:
    buf = ReplayBuffer(capacity=3)
    for i in range(1, 5):
        buf.add("house", i, b"h%d" % i)
    buf.add("flat", 10, b"f")
    assert buf.since({"house": 2}) == [b"h3", b"h4"]  # h1 and h2 fell out of the 3-slot buffer
    assert buf.since({}) == []
    assert buf.since({"flat": 0, "house": 3}) == [b"h4", b"f"]
    small = ReplayBuffer(capacity=100, max_bytes=10)
    for i in range(1, 5):
        small.add("house", i, b"12345")
    assert small.since({"house": 0}) == [b"12345", b"12345"] and small.size == 10


def test_subscriber_gets_missed_pushes_once_then_live_ones(tmp_path: Path) -> None:
    ctx = zmq.Context()
    readings = f"ipc://{tmp_path}/r"
    pub = ctx.socket(zmq.PUB)
    rep = ctx.socket(zmq.REP)
    pull = ctx.socket(zmq.PULL)
    for s in (pub, rep, pull):
        s.setsockopt(zmq.LINGER, 0)
    pub.bind(readings)
    rep.bind(readings + ".replay")
    pull.bind("inproc://frames")
    service = DecoderService([], pull, pub, replay=rep)
    msgs = [make_msg(seq) for seq in range(1, 6)]
    for m in msgs:  # the decoder published these while the publisher was down
        service.replay.add(m.meter, m.received_ns, encode_readings(m))
    stop_decoder = threading.Event()
    decoder = threading.Thread(target=service.run, args=(stop_decoder.is_set,))
    decoder.start()
    stop = threading.Event()
    # the publisher had stored up to push 2
    handler = Recorder({"house": msgs[1].received_ns}, stop, want=4)
    subscriber = threading.Thread(target=run_subscriber, args=(readings, handler, stop.is_set))
    subscriber.start()
    try:
        import time

        time.sleep(0.5)
        # a live copy of push 5 (already replayed) and a new push 6
        for m in (msgs[4], make_msg(6)):
            pub.send_multipart([reading_topic(m.meter), encode_readings(m)])
        stop.wait(10)
    finally:
        stop.set()
        subscriber.join(10)
        stop_decoder.set()
        decoder.join(10)
        for s in (pub, rep, pull):
            s.close()
        ctx.term()
    assert [m.seq for m in handler.got] == [3, 4, 5, 6]


def test_csv_cursor_is_the_last_row_and_the_spool_cursor_the_last_push(tmp_path: Path) -> None:
    store = CsvStore(tmp_path / "csv")
    for seq in (1, 2, 3):
        store.write(make_msg(seq, received_ns=T0_NS + seq * 1_000_000_000 + 123_456_789))
    store.close()
    cursor = CsvStore(tmp_path / "csv").last_received()
    last = T0_NS + 3_000_000_000 + 123_456_789
    assert last <= cursor["house"] < last + 1_000_000
    spool = Spool(tmp_path / "spool.sqlite", 10**6)
    spool.add([], meter="house", received_ns=5)
    spool.add([], meter="house", received_ns=7)
    spool.add([], meter="flat", received_ns=1)
    spool.close()
    assert Spool(tmp_path / "spool.sqlite", 10**6).cursor() == {"house": 7, "flat": 1}
