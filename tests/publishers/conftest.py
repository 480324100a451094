"""Fixtures for the publisher tests: sample pushes, a ZeroMQ PUB, a real mosquitto."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from meterpipe.common.schema import (
    ReadingsMessage,
    encode_readings,
    reading_topic,
)
from meterpipe.common.values import Push, Reading
from tests import support
from tests.support import MOSQUITTO, Broker, MeterEntry

needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto broker not installed (apt-get install mosquitto)")

T0_NS = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z


def sample_readings(seq: int = 1) -> tuple[Reading, ...]:
    return (
        Reading("0-0:42.0.0", "logical_device_name", "LGZ1030655933512"),
        Reading("1-0:1.8.0", "active_energy_import", 5678900 + seq, -1, "kWh"),
        Reading("1-0:1.7.0", "active_power_import", 1234 + seq, 0, "W"),
        Reading("1-0:32.7.0", "voltage_l1", 2301, -1, "V"),
        Reading("1-0:31.7.0", "current_l1", 109, -2, "A"),
    )


def make_msg(seq: int = 1, meter: str = "house", *, received_ns: int | None = None,
             readings: tuple[Reading, ...] | None = None, meter_id: str | None = "LGZ1030655933512",
             time: str | None = "2024-05-01T12:00:00Z") -> ReadingsMessage:
    return ReadingsMessage(
        meter=meter, seq=seq,
        received_ns=received_ns if received_ns is not None else T0_NS + seq * 1_000_000_000,
        push=Push(readings=readings if readings is not None else sample_readings(seq),
                  meter_id=meter_id, time=time, authenticated=True),
    )


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Brokers (tests/support.py) in the test's directory, stopped after the test."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto broker not installed (apt-get install mosquitto)")
    made: list[Broker] = []

    def make(extra: str = "", listener_extra: str = "", start: bool = True) -> Broker:
        b = Broker(tmp_path / f"broker{len(made)}", extra, listener_extra)
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in made:
        b.stop()


class Feeder:
    """A PUB socket bound like the decoder's, sending ReadingsMessages."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.bind(endpoint)
        self.endpoint = endpoint

    def send(self, msg: ReadingsMessage) -> None:
        self.sock.send_multipart([reading_topic(msg.meter), encode_readings(msg)])

    def send_raw(self, parts: list[bytes]) -> None:
        self.sock.send_multipart(parts)

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def feeder(tmp_path: Path) -> Iterator[Feeder]:
    f = Feeder(f"ipc://{tmp_path}/readings")
    yield f
    f.close()


def write_config(path: Path, readings: str, body: str) -> Path:
    """A config with one meter nobody reads, the given readings endpoint and ``body`` (the publishers)."""
    house = MeterEntry("house", "/dev/null", model=None, link=None, push_interval=None)
    return support.write_config(path.parent, [house], readings=readings, extra=body, name=path.name)


def spawn(script: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Run a publisher's main() in a subprocess, logging to ``log``."""
    code = f"import sys; from {script} import main; sys.exit(main(['--config', {str(config)!r}, '-v']))"
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
