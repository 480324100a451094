"""Bad input beyond single Hypothesis examples (issue 6 part 2); the property suite
over every decoder layer (100,000 generated and mutated inputs, each timed and
memory-checked) is tests/decoder/test_properties.py, with its inputs and budgets
in tests/decoder/fuzzing.py.

* capped buffers: 10 MB of garbage and of lying lengths (HDLC frames declaring
  2047 bytes, M-Bus L = 255, segmented pushes and GBT blocks that never end)
  fed to a MeterDecoder never make it hold more than its framer's and
  reassemblers' caps, nor allocate more than ``PEAK_BYTES``;
* garbage between valid frames on a real pty through the real reader service
  and decoder service: every valid push still decodes.
"""

from __future__ import annotations

import os
import random
import threading
import time
import tracemalloc
import tty
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meterpipe.common.link import build as link_build
from meterpipe.common.link.frames import DEFAULT_MAX_BUFFER
from meterpipe.common.schema import LinkLayer
from meterpipe.common.values import Push
from meterpipe.decoder.reassembly import MAX_APDU
from meterpipe.decoder.session import MeterDecoder
from tests.decoder.fuzzing import PEAK_BYTES, never_raises

pytestmark = pytest.mark.slow


# --- capped buffers: 10 MB of garbage and of lying lengths ------------------------------

TEN_MB = 10 * 1024 * 1024
CHUNK = 4096


def _garbage(rng: random.Random) -> Iterator[bytes]:
    for _ in range(TEN_MB // CHUNK):
        yield rng.randbytes(CHUNK)


def _lying_starts(rng: random.Random, start: bytes, longest: int, end: bytes) -> Iterator[bytes]:
    """Frame starts, each followed by up to ``longest`` random bytes that never hold ``end``."""
    for _ in range(TEN_MB // CHUNK):
        out = bytearray()
        while len(out) < CHUNK:
            out += start + rng.randbytes(rng.randrange(1, longest)).replace(end, b"\x00")
        yield bytes(out[:CHUNK])


def _lying_hdlc(rng: random.Random) -> Iterator[bytes]:
    """HDLC headers declaring the 11-bit maximum (2047 bytes) that never close where they say."""
    return _lying_starts(rng, b"\x7e\xa7\xff", 3000, b"\x7e")


def _lying_mbus(rng: random.Random) -> Iterator[bytes]:
    """M-Bus long-frame starts with L = 255 and wrong stop bytes."""
    return _lying_starts(rng, b"\x68\xff\xff\x68", 600, b"\x16")


def _endless_segments(rng: random.Random) -> Iterator[bytes]:
    """Valid HDLC frames (checksums right) of one segmented push that never ends."""
    first = link_build.hdlc_frame(link_build.LLC_HEADER + b"\x0f" + rng.randbytes(200), segmented=True, destination=b"\x03", source=b"\x21")
    more = link_build.hdlc_frame(rng.randbytes(1000), segmented=True, destination=b"\x03", source=b"\x21")
    yield first
    for _ in range(TEN_MB // len(more)):
        yield more


def _endless_blocks(rng: random.Random) -> Iterator[bytes]:
    """Valid HDLC frames carrying GBT blocks 1, 2, 3 ... of a push whose last block never comes."""
    for number in range(1, TEN_MB // 950 + 2):
        block = bytes([0xE0, 0x40]) + number.to_bytes(2, "big") + b"\x00\x00" + b"\x82\x03\xb6" + rng.randbytes(950)
        yield link_build.hdlc_frame((link_build.LLC_HEADER if number == 1 else b"") + block, destination=b"\x03", source=b"\x21")


@pytest.mark.parametrize("source", [_garbage, _lying_hdlc, _lying_mbus, _endless_segments, _endless_blocks],
                         ids=lambda f: f.__name__.strip("_"))
def test_ten_megabytes_never_grow_the_decoders_buffers(source: Callable[[random.Random], Iterator[bytes]]) -> None:
    decoder = MeterDecoder("m", link=LinkLayer.AUTO)
    fed = errors = 0
    worst = 0.0
    tracemalloc.start()
    try:
        for i, chunk in enumerate(source(random.Random(6))):
            t0 = time.perf_counter()
            out = never_raises(decoder.feed, chunk, i * 10_000_000)  # 10 ms apart: never stale
            worst = max(worst, time.perf_counter() - t0)
            fed += len(chunk)
            errors += len(out)
            assert not any(isinstance(o, Push) for o in out)
            assert decoder._framer.buffered <= DEFAULT_MAX_BUFFER
            assert decoder._segments._size <= MAX_APDU and decoder._blocks._size <= MAX_APDU
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fed >= TEN_MB - 2048
    print(f"\n{source.__name__}: {fed} bytes, {errors} errors, slowest chunk {worst * 1000:.1f} ms "
          f"(tracemalloc on), peak {peak} bytes")
    # the decoder holds at most the framer's 16 KiB and a 64 KiB partial push, plus one chunk in flight
    assert peak <= PEAK_BYTES


# --- garbage between valid frames, through the real reader and decoder -------------------

GARBAGE_KEY = bytes(range(16))
GARBAGE_AUTH = bytes(range(0xD0, 0xE0))


def _noise(rng: random.Random, frames: tuple[bytes, ...]) -> bytes:
    """Line noise: random bytes, broken copies of real frames, lone frame starts."""
    out = bytearray()
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(5)
        frame = rng.choice(frames)
        if kind == 0:
            out += rng.randbytes(rng.randrange(1, 200))
        elif kind == 1:  # a frame with a flipped bit: its checksum fails
            bad = bytearray(frame)
            bad[rng.randrange(1, len(bad) - 1)] ^= 1 << rng.randrange(8)
            out += bad
        elif kind == 2:  # a frame cut short
            out += frame[: rng.randrange(1, len(frame) - 1)]
        elif kind == 3:
            out += rng.choice([b"\x7e", b"\x7e\xa0", b"\x7e\xa7\xff", b"\x68\xff\xff\x68", b"\x68"])
        else:
            out += bytes(rng.choice([0x7E, 0x68, 0x16, 0xA0, 0x00, 0xFF]) for _ in range(rng.randrange(1, 30)))
    return bytes(out)


def test_garbage_between_valid_frames_on_a_pty_through_reader_and_decoder(rundir: Path) -> None:
    from datetime import datetime, timedelta

    import zmq

    from meterpipe.common.config import MeterConfig
    from meterpipe.common.schema import READING_TOPIC, decode_readings
    from meterpipe.decoder.service import DecoderService
    from meterpipe.reader.port import open_serial
    from meterpipe.reader.service import ReaderService, connect_frames_socket
    from meterpipe.simulator.meter import MeterSimulator
    from tests.integration.harness import _comparable, as_values

    master, slave = os.openpty()
    tty.setraw(slave)
    meter = MeterConfig(name="m", port=os.ttyname(slave), baudrate=115200, link=LinkLayer.HDLC,
                        key=GARBAGE_KEY, auth_key=GARBAGE_AUTH, model="e450")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull, pub, sub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    for sock in (pull, pub, sub):
        sock.setsockopt(zmq.LINGER, 0)
    pull.bind(f"ipc://{rundir}/frames")
    pub.bind(f"ipc://{rundir}/readings")
    sub.setsockopt(zmq.SUBSCRIBE, READING_TOPIC)
    sub.connect(f"ipc://{rundir}/readings")
    push = connect_frames_socket(ctx, f"ipc://{rundir}/frames")
    stop = threading.Event()
    decoder = DecoderService([meter], pull, pub)
    reader = ReaderService(meter, push, lambda: open_serial(meter))
    threads = [threading.Thread(target=svc.run, args=(stop.is_set,), daemon=True) for svc in (decoder, reader)]
    for t in threads:
        t.start()
    rng = random.Random(2024)
    sim = MeterSimulator("e450", key=GARBAGE_KEY, auth_key=GARBAGE_AUTH, seed=3)
    t0 = datetime(2024, 5, 1, 12, 0, 0)
    sent: list[dict[str, Any]] = []
    got: list[Any] = []
    try:
        deadline = time.monotonic() + 10
        while not reader.port.is_open:
            assert time.monotonic() < deadline, "the reader did not open the pty"
            time.sleep(0.05)
        time.sleep(0.5)  # the subscriber's connection is up
        for i in range(60):
            p = sim.push(t0 + timedelta(seconds=10 * i))
            sent.append({obis: _comparable(v if isinstance(v, str) else Decimal(v).scaleb(e))
                         for obis, (v, e, _) in p.values.items()})
            for frame in p.frames:
                os.write(master, _noise(rng, p.frames))
                os.write(master, frame)
            time.sleep(0.02)  # the pty holds 4 KiB; the reader drains it every read
        os.write(master, _noise(rng, p.frames))
        deadline = time.monotonic() + 20
        while len(got) < len(sent) and time.monotonic() < deadline:
            if sub.poll(200):
                got.append(decode_readings(sub.recv_multipart()[1]))
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for sock in (pull, pub, sub, push):
            sock.close(0)
        ctx.term()
        os.close(master)
        os.close(slave)
    decoded = [as_values(m) for m in got]
    missing = [i for i, want in enumerate(sent)
               if not any(all(d.get(k) == v for k, v in want.items()) for d in decoded)]
    print(f"\n{len(sent)} valid pushes between garbage on a pty: {len(got)} decoded, "
          f"reader frame errors {reader.frame_errors}, skipped {reader._framer.skipped} bytes")
    assert not missing, f"valid pushes {missing} were lost in the garbage"
    assert len(got) == len(sent)
