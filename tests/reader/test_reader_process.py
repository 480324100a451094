"""The reader end to end: a pty in, Frame messages out on a real ZeroMQ PULL socket.

The service runs in a thread with a real serial port (a pty slave opened through
pyserial) and a real PUSH socket over ipc:// in tmp_path; the process-level tests
run ``python -m meterpipe.reader.main`` with a temporary config file.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import zmq

from meterpipe.common.config import MeterConfig
from meterpipe.common.link.crc import crc16_x25
from meterpipe.common.link.frames import parse_frame
from meterpipe.common.schema import Frame, LinkLayer, decode_frame
from meterpipe.reader.port import SerialLike, open_serial
from meterpipe.reader.service import FrameErrorLog, ReaderService, connect_frames_socket
from tests.conftest import CORPUS, corpus_path

GARBAGE = b"\x00\x11noise\x7e\x00\xff\x68\x01\x02"  # incl. bytes that look like frame starts


def hdlc_frame(payload: bytes) -> bytes:
    """A valid HDLC frame (with HCS and FCS) carrying ``payload`` after the LLC header."""
    info = b"\xe6\xe7\x00" + payload
    length = 9 + len(info)
    header = bytes([0xA0 | (length >> 8), length & 0xFF, 0x03, 0x13, 0x13])
    body = header + crc16_x25(header).to_bytes(2, "little") + info
    return b"\x7e" + body + crc16_x25(body).to_bytes(2, "little") + b"\x7e"


def numbered(n: int) -> bytes:
    return hdlc_frame(b"\x0f" + n.to_bytes(4, "big") + b"meterpipe test push")


def corpus_frames() -> list[tuple[LinkLayer, bytes]]:
    if not CORPUS:
        pytest.skip(f"real-capture corpus not found at {corpus_path()} (set METERPIPE_CORPUS)")
    return [
        (LinkLayer(v["transport"]), bytes.fromhex(h))
        for v in CORPUS
        if v["transport"] in ("hdlc", "mbus")
        for h in v["frames_hex"]
    ]


def wait_for(condition: Callable[[], bool], timeout: float = 4.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Pty:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    p.close()


class Sockets:
    """A context whose sockets are all closed at the end of the test."""

    def __init__(self) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.opened: list[zmq.Socket[bytes]] = []

    def pull(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.PULL)
        self.opened.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        return sock

    def push(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = connect_frames_socket(self.ctx, endpoint)
        self.opened.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.opened:
            sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def zctx() -> Iterator[Sockets]:
    sockets = Sockets()
    yield sockets
    sockets.close()


def pull_socket(zctx: Sockets, endpoint: str) -> zmq.Socket[bytes]:
    return zctx.pull(endpoint)


def receive(sock: zmq.Socket[bytes], count: int, timeout_ms: int = 4000) -> list[Frame]:
    frames: list[Frame] = []
    while len(frames) < count and sock.poll(timeout_ms):
        frames.append(decode_frame(sock.recv()))
    return frames


@contextmanager
def running(service: ReaderService) -> Iterator[ReaderService]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run(stop.is_set)
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="reader", daemon=True)
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(5)
        assert not thread.is_alive(), "reader loop did not stop"
    assert not errors, errors


def make_service(zctx: Sockets, endpoint: str, meter: MeterConfig) -> ReaderService:
    push = zctx.push(endpoint)

    def open_port() -> SerialLike:
        return open_serial(meter)

    return ReaderService(meter, push, open_port)


@pytest.mark.corpus
def test_corpus_frames_and_garbage_arrive_exactly(pty: Pty, zctx: Sockets, tmp_path: Path) -> None:
    frames = corpus_frames()
    endpoint = f"ipc://{tmp_path}/frames"
    pull = pull_socket(zctx, endpoint)
    meter = MeterConfig(name="house", port=pty.path, baudrate=115200, link=LinkLayer.AUTO)
    service = make_service(zctx, endpoint, meter)
    before = time.time_ns()
    with running(service):
        wait_for(lambda: service.port.is_open)
        write_all(pty.master, b"".join(GARBAGE + raw for _, raw in frames) + GARBAGE)
        got = receive(pull, len(frames))
    assert len(got) == len(frames) > 50
    assert [f.seq for f in got] == list(range(1, len(frames) + 1))
    assert [(f.link, f.data) for f in got] == frames
    assert all(f.meter == "house" and f.dropped == 0 for f in got)
    assert all(before <= f.received_ns <= time.time_ns() for f in got)
    assert service.frame_errors == 0


def test_frames_cut_from_dribbled_bytes(pty: Pty, zctx: Sockets, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/frames"
    pull = pull_socket(zctx, endpoint)
    meter = MeterConfig(name="house", port=pty.path, link=LinkLayer.HDLC)
    service = make_service(zctx, endpoint, meter)
    stream = GARBAGE + numbered(1) + numbered(2)[:-1] + numbered(3)  # 2 and 3 share a flag
    with running(service):
        wait_for(lambda: service.port.is_open)
        for i in range(0, len(stream), 7):
            write_all(pty.master, stream[i : i + 7])
            time.sleep(0.002)
        got = receive(pull, 3)
    assert [f.data for f in got] == [numbered(1), numbered(2), numbered(3)]
    assert [f.link for f in got] == [LinkLayer.HDLC] * 3


def test_bad_checksum_is_counted_not_fatal(pty: Pty, zctx: Sockets, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="meterpipe.reader")
    endpoint = f"ipc://{tmp_path}/frames"
    pull = pull_socket(zctx, endpoint)
    meter = MeterConfig(name="house", port=pty.path)
    service = make_service(zctx, endpoint, meter)
    bad = bytearray(numbered(1))
    bad[-3] ^= 0x01  # flip a bit of the FCS
    with running(service):
        wait_for(lambda: service.port.is_open)
        write_all(pty.master, bytes(bad) + numbered(2))
        got = receive(pull, 1)
        wait_for(lambda: service.frame_errors == 1)
    assert [(f.seq, f.data) for f in got] == [(1, numbered(2))]
    assert any("FCS" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


def test_apdu_link_is_framed_like_auto(pty: Pty, zctx: Sockets, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/frames"
    pull = pull_socket(zctx, endpoint)
    meter = MeterConfig(name="house", port=pty.path, link=LinkLayer.APDU)
    service = make_service(zctx, endpoint, meter)
    with running(service):
        wait_for(lambda: service.port.is_open)
        write_all(pty.master, numbered(1))
        got = receive(pull, 1)
    assert [(f.link, f.data) for f in got] == [(LinkLayer.HDLC, numbered(1))]


def test_decoder_away_frames_wait_and_arrive_in_order(pty: Pty, zctx: Sockets, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meterpipe.reader")
    endpoint = f"ipc://{tmp_path}/frames"
    meter = MeterConfig(name="house", port=pty.path, baudrate=115200)
    service = make_service(zctx, endpoint, meter)
    with running(service):
        wait_for(lambda: service.port.is_open)
        write_all(pty.master, b"".join(numbered(n) for n in range(1, 51)))
        wait_for(lambda: service.seq == 50)  # the port is read while nobody listens
        assert service.outbox.pending == 50
        pull = pull_socket(zctx, endpoint)
        got = receive(pull, 50)
        wait_for(lambda: any("decoder back" in r.getMessage() for r in caplog.records))
    assert [f.seq for f in got] == list(range(1, 51))
    assert [f.data for f in got] == [numbered(n) for n in range(1, 51)]
    assert {f.dropped for f in got} == {0}
    logs = [r.getMessage() for r in caplog.records]
    assert sum("decoder away, queuing" in m for m in logs) == 1
    assert sum("decoder back, 50 queued frames sent" in m for m in logs) == 1


def test_full_queue_drops_oldest_and_counts(pty: Pty, zctx: Sockets, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meterpipe.reader")
    endpoint = f"ipc://{tmp_path}/frames"
    meter = MeterConfig(name="house", port=pty.path, baudrate=115200, queue_frames=10)
    service = make_service(zctx, endpoint, meter)
    with running(service):
        wait_for(lambda: service.port.is_open)
        write_all(pty.master, b"".join(numbered(n) for n in range(1, 51)))
        wait_for(lambda: service.seq == 50)
        assert service.outbox.pending == 10 and service.outbox.dropped == 40
        pull = pull_socket(zctx, endpoint)
        got = receive(pull, 10)
        write_all(pty.master, numbered(51))
        got += receive(pull, 1)
    assert [f.seq for f in got] == list(range(41, 52))
    assert [f.data for f in got] == [numbered(n) for n in range(41, 52)]
    assert {f.dropped for f in got} == {40}
    logs = [r.getMessage() for r in caplog.records]
    assert sum("queue full, dropping oldest" in m for m in logs) == 1


def test_port_vanishes_and_comes_back(zctx: Sockets, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meterpipe.reader")
    endpoint = f"ipc://{tmp_path}/frames"
    pull = pull_socket(zctx, endpoint)
    link = tmp_path / "ttyMETER"
    first = Pty()
    link.symlink_to(first.path)
    meter = MeterConfig(name="house", port=str(link))
    service = make_service(zctx, endpoint, meter)
    second: Pty | None = None
    try:
        with running(service):
            wait_for(lambda: service.port.is_open)
            write_all(first.master, numbered(1))
            got = receive(pull, 1)
            first.close()  # unplugged
            link.unlink()
            wait_for(lambda: service.port.losses == 1)
            second = Pty()  # plugged in again, maybe under another name
            link.symlink_to(second.path)
            wait_for(lambda: service.port.opens == 2)
            write_all(second.master, numbered(2) + numbered(3))
            got += receive(pull, 2)
    finally:
        first.close()
        if second:
            second.close()
    assert [(f.seq, f.data) for f in got] == [(1, numbered(1)), (2, numbered(2)), (3, numbered(3))]
    logs = [r.getMessage() for r in caplog.records if r.name == "meterpipe.reader.port"]
    assert sum("lost" in m for m in logs) == 1
    assert sum("open again" in m for m in logs) == 1


def test_frame_error_summary_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    from meterpipe.common.errors import ChecksumError, FrameError

    caplog.set_level(logging.WARNING, logger="meterpipe.reader")
    now = [0.0]
    summary = FrameErrorLog("house", lambda: now[0])
    for _ in range(3):
        summary.record(ChecksumError("HDLC frame check sequence (FCS) mismatch", data=b"\x7e\xa0"))
    summary.record(FrameError("M-Bus frame declares 9 bytes but has 4"))
    now[0] = 59.0
    summary.maybe_summarise(12)
    assert not caplog.records
    now[0] = 61.0
    summary.maybe_summarise(12)
    summary.maybe_summarise(12)
    now[0] = 200.0
    summary.maybe_summarise(12)  # nothing new: silent
    [record] = caplog.records
    text = record.getMessage()
    assert "meter house: 4 bad frames" in text and "3 checksum, 1 malformed" in text
    assert summary.total == 4


# --- the process ----------------------------------------------------------------


def write_config(tmp_path: Path, port: str, name: str = "house") -> Path:
    path = tmp_path / "meterpipe.toml"
    path.write_text(
        f'[[meters]]\nname = "{name}"\nport = "{port}"\nlink = "hdlc"\n\n'
        f'[endpoints]\nframes = "ipc://{tmp_path}/frames"\nreadings = "ipc://{tmp_path}/readings"\n'
    )
    return path


def start_reader(tmp_path: Path, config: Path, meter: str = "house") -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    env = {k: v for k, v in os.environ.items() if k != "METERPIPE_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterpipe.reader.main", "--meter", meter, "--config", str(config)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

        proc.stdout.close()

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def wait_line(lines: queue.Queue[str], text: str, timeout: float = 10.0) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not logged; got {seen}")


def stop_within_2s(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("reader did not exit within 2 s of SIGTERM") from None


def test_process_forwards_frames_and_stops_on_sigterm(pty: Pty, zctx: Sockets, tmp_path: Path) -> None:
    pull = pull_socket(zctx, f"ipc://{tmp_path}/frames")
    proc, lines = start_reader(tmp_path, write_config(tmp_path, pty.path))
    try:
        wait_line(lines, f"port {pty.path} open")
        write_all(pty.master, numbered(1))
        got = receive(pull, 1)
        assert [(f.meter, f.seq, f.data) for f in got] == [("house", 1, numbered(1))]
    finally:
        code = stop_within_2s(proc)
    assert code == 0


def test_process_stops_on_sigterm_while_port_missing(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB7"
    proc, lines = start_reader(tmp_path, write_config(tmp_path, str(missing)))
    try:
        seen = wait_line(lines, "cannot be opened")
        assert "plugged in" in seen[-1]
        time.sleep(0.6)  # into the backoff loop
    finally:
        code = stop_within_2s(proc)
    assert code == 0


def test_process_stops_on_sigterm_with_frames_queued(pty: Pty, tmp_path: Path) -> None:
    proc, lines = start_reader(tmp_path, write_config(tmp_path, pty.path))
    try:
        wait_line(lines, f"port {pty.path} open")
        write_all(pty.master, numbered(1) + numbered(2))
        wait_line(lines, "decoder away, queuing")
    finally:
        code = stop_within_2s(proc)
    assert code == 0


def run_reader(tmp_path: Path, config: Path, meter: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "METERPIPE_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "meterpipe.reader.main", "--meter", meter, "--config", str(config)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=20,
    )


def test_unknown_meter_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_reader(tmp_path, write_config(tmp_path, "/dev/ttyUSB0"), "garage")
    assert result.returncode == 2
    out = (result.stdout + result.stderr).strip().splitlines()
    assert len(out) == 1, out
    assert "garage" in out[0] and "house" in out[0] and "--meter" in out[0]


def test_port_url_pyserial_refuses_exits_2(tmp_path: Path) -> None:
    result = run_reader(tmp_path, write_config(tmp_path, "nosuchscheme://meter"), "house")
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "meters.house.port" in errors[0], result.stderr


def test_broken_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "meterpipe.toml"
    config.write_text('[[meters]]\nname = "house"\n')  # no port
    result = run_reader(tmp_path, config, "house")
    assert result.returncode == 2
    assert "port" in result.stderr


@pytest.mark.corpus
def test_corpus_sanity_frames_parse() -> None:
    # The frames the first test writes are whole link-layer frames (guards the corpus format).
    for link, raw in corpus_frames():
        assert parse_frame(link, raw).raw == raw
