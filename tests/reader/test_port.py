"""Opening the meter's port, noticing its loss, reopening with backoff."""

from __future__ import annotations

import errno
import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from meterpipe.common.config import MeterConfig
from meterpipe.common.process import Backoff
from meterpipe.reader.port import PortKeeper, SerialLike, describe_error, open_serial


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakePort:
    def __init__(self, chunks: list[bytes | Exception]) -> None:
        self.chunks = chunks
        self.closed = False

    @property
    def in_waiting(self) -> int:
        return 0

    def read(self, size: int = 1) -> bytes:
        item = self.chunks.pop(0) if self.chunks else b""
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.closed = True


class Opener:
    """Fails with the queued errors, then hands out the queued ports."""

    def __init__(self, results: list[SerialLike | Exception]) -> None:
        self.results = results
        self.calls = 0

    def __call__(self) -> SerialLike:
        self.calls += 1
        item = self.results.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def not_found(path: str = "/dev/ttyUSB0") -> serial.SerialException:
    # What pyserial raises for a missing device: errno set, text naming the port.
    return serial.SerialException(errno.ENOENT, f"could not open port {path}: [Errno 2] No such file or directory")


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "meterpipe.reader.port"]


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    b = Backoff(jitter=0.0)
    assert [b.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    b.reset()
    assert b.next_delay() == 0.5


def test_backoff_jitter_stays_small() -> None:
    b = Backoff(jitter=0.1, rng=random.Random(7))
    for base in [0.5, 1, 2, 4, 8, 16, 30, 30]:
        assert base <= b.next_delay() <= base * 1.1


@pytest.mark.parametrize(("initial", "cap", "jitter"), [(0, 30, 0.1), (5, 1, 0.1), (0.5, 30, 1.0)])
def test_backoff_rejects_nonsense(initial: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, cap, jitter)


def test_open_errors_say_what_to_do() -> None:
    assert "plugged in" in describe_error(not_found())
    denied = serial.SerialException(errno.EACCES, "could not open port /dev/ttyUSB0: [Errno 13] Permission denied")
    assert "add the user to the dialout group" in describe_error(denied)
    assert "busy" in describe_error(OSError(errno.EBUSY, "Device or resource busy"))
    assert describe_error(serial.SerialException("read failed: boom")) == "read failed: boom"


def test_missing_port_at_start_is_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="meterpipe.reader")
    clock = FakeClock()
    port = FakePort([b"\x7e"])
    opener = Opener([not_found(), not_found(), port])
    keeper = PortKeeper("/dev/ttyUSB0", opener, Backoff(jitter=0.0), clock)
    assert keeper.read() is None and opener.calls == 1
    assert keeper.retry_in() == 0.5
    clock.now += 0.4
    assert keeper.read() is None and opener.calls == 1  # not yet due: no try
    clock.now += 0.1
    assert keeper.read() is None and opener.calls == 2
    assert keeper.retry_in() == 1.0
    clock.now += 1.0
    assert keeper.read() == b"\x7e" and keeper.is_open and keeper.opens == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot be opened" in warnings[0] and "plugged in" in warnings[0]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["port /dev/ttyUSB0 open after 3 tries"]


def test_permission_problem_is_named(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="meterpipe.reader")
    denied = serial.SerialException(errno.EACCES, "could not open port /dev/ttyUSB0: [Errno 13] Permission denied")
    keeper = PortKeeper("/dev/ttyUSB0", Opener([denied]), Backoff(jitter=0.0), FakeClock())
    assert keeper.read() is None
    assert any("dialout" in m for m in messages(caplog))


def test_lost_port_is_logged_once_and_reopened(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="meterpipe.reader")
    clock = FakeClock()
    first = FakePort([b"ab", serial.SerialException("device reports readiness to read but returned no data")])
    second = FakePort([b"cd"])
    opener = Opener([first, not_found(), not_found(), not_found(), second])
    keeper = PortKeeper("/dev/ttyUSB0", opener, Backoff(jitter=0.0), clock)
    assert keeper.read() == b"ab"
    assert keeper.read() is None
    assert first.closed and not keeper.is_open and keeper.losses == 1
    for _ in range(3):  # 0.5, 1, 2 s of backoff, all failing
        clock.now += keeper.retry_in()
        assert keeper.read() is None
    clock.now += keeper.retry_in()
    assert keeper.read() == b"cd" and keeper.opens == 2
    logs = messages(caplog)
    assert sum("lost" in m for m in logs) == 1
    assert sum("open again after 4 tries" in m for m in logs) == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2  # "lost: <read error>" and "still unavailable: no such device"


@pytest.fixture
def pty() -> Iterator[tuple[int, int]]:
    master, slave = os.openpty()
    yield master, slave
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def test_real_pty_through_open_serial(pty: tuple[int, int], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meterpipe.reader")
    master, slave = pty
    meter = MeterConfig(name="house", port=os.ttyname(slave), baudrate=115200)
    keeper = PortKeeper(meter.port, lambda: open_serial(meter))
    assert keeper.read() == b""  # open; nothing written yet (waits one read timeout)
    os.write(master, b"\x7e\x00\xff\x0a\x0d\x11\x13")  # raw mode: no byte is eaten or translated
    got = b""
    for _ in range(10):
        chunk = keeper.read()
        assert chunk is not None
        got += chunk
        if len(got) >= 7:
            break
    assert got == b"\x7e\x00\xff\x0a\x0d\x11\x13"
    os.close(master)
    for _ in range(10):  # the pty is gone: the read fails, the keeper notices
        if keeper.read() is None:
            break
    assert keeper.losses == 1 and not keeper.is_open
    assert sum("lost" in m for m in messages(caplog)) == 1


def test_missing_device_path(tmp_path: Path) -> None:
    meter = MeterConfig(name="house", port=str(tmp_path / "ttyUSB9"))
    with pytest.raises(serial.SerialException) as info:
        open_serial(meter)
    assert "plugged in" in describe_error(info.value)


def test_port_that_fails_at_once_is_retried_ever_more_slowly() -> None:
    clock = FakeClock()
    flaky = [FakePort([serial.SerialException("read failed: [Errno 5] Input/output error")]) for _ in range(4)]
    keeper = PortKeeper("/dev/ttyUSB0", Opener(list(flaky)), Backoff(jitter=0.0), clock)
    delays = []
    for _ in range(4):
        clock.now += keeper.retry_in()
        assert keeper.read() is None  # opens, then the first read fails
        delays.append(keeper.retry_in())
    assert delays == [0.5, 1, 2, 4]  # only a port that delivers bytes resets the backoff


def test_settings_pyserial_refuses_are_a_config_error() -> None:
    from meterpipe.common.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        open_serial(MeterConfig(name="house", port="nosuchscheme://meter"))
    assert info.value.field == "meters.house.port"
