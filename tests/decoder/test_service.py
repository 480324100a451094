"""The decoder process loop over real ZeroMQ sockets (inproc), fed corpus frames."""

from __future__ import annotations

import threading
from typing import Any

import zmq

from meterpipe.common.config import MeterConfig
from meterpipe.common.schema import (
    Frame,
    LinkLayer,
    decode_readings,
    decode_status,
    encode_frame,
)
from meterpipe.decoder.service import DecoderService
from tests.conftest import keys, needs_corpus, vector
from tests.support import inproc_decoder_sockets

pytestmark = needs_corpus


def _run(meters: list[MeterConfig], frames: list[bytes]) -> list[tuple[bytes, Any]]:
    ctx = zmq.Context()
    pull, pub, push, sub = inproc_decoder_sockets(ctx, b"")
    clock = iter(range(10**18, 10**19, 10**9))
    service = DecoderService(meters, pull, pub, clock=lambda: next(clock), status_interval_ns=10**12)
    done = threading.Event()
    thread = threading.Thread(target=service.run, args=(done.is_set,))
    thread.start()
    try:
        for f in frames:
            push.send(f)
        got = []
        while sub.poll(1000):
            topic, payload = sub.recv_multipart()
            got.append((topic, payload))
        return got
    finally:
        done.set()
        thread.join()
        for s in (pull, pub, push, sub):
            s.close()
        ctx.term()


def test_frames_from_two_meters_come_out_as_readings_and_status() -> None:
    e570 = vector("sdc-lg-e570-ch-enc-gbt")
    kam = vector("dlmsp-kamstrup-omnipower-enc")
    k1, _ = keys(e570)
    k2, a2 = keys(kam)
    meters = [
        MeterConfig(name="house", port="x", key=k1, model="e570"),
        MeterConfig(name="flat", port="y", key=k2, auth_key=a2, model="omnipower"),
    ]
    frames = []
    for seq, h in enumerate(e570["frames_hex"], start=1):
        frames.append(encode_frame(Frame("house", seq, 10**18 + seq, LinkLayer.HDLC, bytes.fromhex(h))))
    frames.append(encode_frame(Frame("flat", 1, 10**18, LinkLayer.HDLC, bytes.fromhex(kam["frames_hex"][0]))))
    # a corrupted copy of the Kamstrup frame, and garbage that is not a frame message at all
    bad = bytearray.fromhex(kam["frames_hex"][0])
    bad[100] ^= 0xFF
    frames.append(encode_frame(Frame("flat", 2, 10**18, LinkLayer.HDLC, bytes(bad))))
    frames.append(b"not msgpack")
    got = _run(meters, frames)
    readings = [decode_readings(p) for t, p in got if t.startswith(b"reading/")]
    assert [(r.meter, r.seq) for r in readings] == [("house", 1), ("flat", 1)]
    assert readings[0].push.system_title == e570["system_title"]
    assert readings[0].frame_seq == len(e570["frames_hex"])
    statuses = [decode_status(p) for t, p in got if t == b"status/flat"]
    last = statuses[-1]
    assert last.counters["checksum_errors"] == 1 and last.counters["pushes_out"] == 1
    assert last.counters["frames_ok"] == 1  # the good Kamstrup frame; the corrupted one is not ok
    assert last.last_error_kind == "checksum"
    assert k2 is not None and k2.hex() not in (last.last_error or "").lower()
