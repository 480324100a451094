"""The reader's bounded queue: order kept, oldest dropped and counted, states logged once."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest
import zmq

from meterpipe.common.schema import Frame, LinkLayer, decode_frame
from meterpipe.reader.outbox import Outbox


class FakePushSocket:
    """Stands in for a PUSH socket whose peer can be made to go away."""

    def __init__(self) -> None:
        self.writable = True
        self.sent: list[Frame] = []

    def send(self, data: Any, flags: int = 0) -> None:
        assert flags == zmq.NOBLOCK, "the outbox must never block on the socket"
        if not self.writable:
            raise zmq.Again()
        self.sent.append(decode_frame(data))

    def poll(self, timeout: int | None = None, flags: int = zmq.POLLIN) -> int:
        assert flags == zmq.POLLOUT
        return zmq.POLLOUT if self.writable else 0


def frame(seq: int) -> Frame:
    return Frame(meter="house", seq=seq, received_ns=1_700_000_000_000_000_000 + seq,
                 link=LinkLayer.HDLC, data=b"\x7e\xa0" + seq.to_bytes(2, "big") + b"\x7e")


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "meterpipe.reader.outbox"]


def test_sends_at_once_when_the_decoder_is_there() -> None:
    sock = FakePushSocket()
    box = Outbox(sock, capacity=10, meter="house")
    for seq in (1, 2, 3):
        box.put(frame(seq))
    assert [f.seq for f in sock.sent] == [1, 2, 3]
    assert [f.data for f in sock.sent] == [frame(s).data for s in (1, 2, 3)]
    assert box.pending == 0 and box.dropped == 0
    assert all(f.dropped == 0 for f in sock.sent)


def test_queues_while_away_and_sends_in_order_when_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meterpipe.reader")
    sock = FakePushSocket()
    box = Outbox(sock, capacity=100, meter="house")
    box.put(frame(1))
    sock.writable = False
    for seq in range(2, 8):
        box.put(frame(seq))
    assert box.pending == 6 and box.flush() == 0
    sock.writable = True
    box.put(frame(8))  # a new frame goes after the queued ones
    assert [f.seq for f in sock.sent] == list(range(1, 9))
    assert box.pending == 0 and box.dropped == 0
    logs = messages(caplog)
    assert sum("decoder away, queuing" in m for m in logs) == 1
    assert sum("decoder back, 7 queued frames sent" in m for m in logs) == 1
    assert not any("dropping" in m for m in logs)


def test_full_queue_drops_the_oldest_and_counts_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meterpipe.reader")
    sock = FakePushSocket()
    sock.writable = False
    box = Outbox(sock, capacity=10, meter="house")
    for seq in range(1, 51):
        box.put(frame(seq))
    assert box.pending == 10 and box.dropped == 40
    sock.writable = True
    assert box.flush(timeout_ms=10) == 10
    assert [f.seq for f in sock.sent] == list(range(41, 51))
    # The count travels with every frame that leaves after the drops.
    assert {f.dropped for f in sock.sent} == {40}
    logs = messages(caplog)
    assert sum("queue full, dropping oldest" in m for m in logs) == 1
    assert sum("decoder away" in m for m in logs) == 1
    assert sum("decoder back, 10 queued frames sent" in m for m in logs) == 1


def test_second_outage_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meterpipe.reader")
    sock = FakePushSocket()
    box = Outbox(sock, capacity=2, meter="house")
    seqs = itertools.count(1)
    for _ in range(2):
        sock.writable = False
        for _ in range(3):
            box.put(frame(next(seqs)))
        sock.writable = True
        box.flush()
    logs = messages(caplog)
    assert sum("decoder away" in m for m in logs) == 2
    assert sum("queue full" in m for m in logs) == 2
    assert sum("decoder back" in m for m in logs) == 2
    assert [f.seq for f in sock.sent] == [2, 3, 5, 6]
    assert [f.dropped for f in sock.sent] == [1, 1, 2, 2]


def test_drain_gives_up_at_its_deadline() -> None:
    sock = FakePushSocket()
    sock.writable = False
    box = Outbox(sock, capacity=10, meter="house")
    box.put(frame(1))
    box.put(frame(2))
    ticks = itertools.count(0.0, 0.25)  # a clock that advances a quarter second per look
    assert box.drain(1.0, monotonic=lambda: next(ticks)) == 2
    sock.writable = True
    assert box.drain(1.0, monotonic=lambda: next(ticks)) == 0
    assert [f.seq for f in sock.sent] == [1, 2]


def test_real_push_socket_queues_until_pull_binds(tmp_path: Any) -> None:
    from meterpipe.reader.service import connect_frames_socket

    endpoint = f"ipc://{tmp_path}/frames"
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = connect_frames_socket(ctx, endpoint)
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    try:
        box = Outbox(push, capacity=5, meter="house")
        for seq in range(1, 9):
            box.put(frame(seq))
        assert box.pending == 5 and box.dropped == 3  # nobody there: nothing hidden in zmq
        pull.bind(endpoint)
        assert box.drain(3.0) == 0
        got = []
        while pull.poll(1000):
            got.append(decode_frame(pull.recv()))
            if len(got) == 5:
                break
        assert [f.seq for f in got] == [4, 5, 6, 7, 8]
        assert {f.dropped for f in got} == {3}
    finally:
        push.close(linger=0)
        pull.close()
        ctx.term()


def test_capacity_must_hold_a_frame() -> None:
    with pytest.raises(ValueError):
        Outbox(FakePushSocket(), capacity=0, meter="house")
