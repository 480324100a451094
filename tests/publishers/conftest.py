"""Fixtures for the publisher tests: sample pushes, a ZeroMQ PUB, a real mosquitto."""

from __future__ import annotations

import os
import shutil
import signal
import socket
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

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Broker:
    """A mosquitto started on a free 127.0.0.1 port with a generated config."""

    def __init__(self, workdir: Path, extra: str = "", listener_extra: str = "") -> None:
        assert MOSQUITTO is not None
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        data = workdir / "data"
        data.mkdir(exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", listener_extra,
                 "allow_anonymous true" if "password_file" not in extra else "allow_anonymous false",
                 "persistence true", f"persistence_location {data}/", extra]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to user mosquitto and cannot write data/
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(line for line in lines if line) + "\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.conf)], stdout=out, stderr=out)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
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
    path.write_text(
        '[[meters]]\nname = "house"\nport = "/dev/null"\n\n'
        f'[endpoints]\nframes = "ipc://{path.parent}/frames"\nreadings = "{readings}"\n\n' + body)
    path.chmod(0o600)
    return path


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
