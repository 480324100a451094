"""Issue 11: "Test this meter" on a real port (web/probe_run.py).

A simulated meter writes its pushes to a real pty (simulator.sinks: PtySink and
transmit, the I/O of ``meterpipe simulate``) while run_probe listens on the
pty's other side through reader.port.open_serial. Ports that do not open give a
report, never an exception; the port is closed whatever happens.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import serial

from meterpipe.common.config import MeterConfig
from meterpipe.common.process import StopFlag
from meterpipe.common.schema import LinkLayer
from meterpipe.decoder.probe import ADVICE, ProbeReport
from meterpipe.reader.port import SerialLike, open_serial
from meterpipe.simulator.meter import MeterSimulator
from meterpipe.simulator.sinks import PtySink, transmit
from meterpipe.web.probe_run import run_probe
from tests.support import free_port

KEY = bytes.fromhex("7d3e19a0c5b84f21e6d09a3c58b1f4e7")
AUTH = bytes.fromhex("a84c0e5f9b21d37c60e8f14b2d95a3c6")
WRONG = bytes.fromhex("e1d2c3b4a5968778695a4b3c2d1e0f00")
INTERVAL = 0.4


@dataclass
class Meter:
    """A simulated E450 pushing to a pty from a thread until stopped."""

    path: str
    stop: StopFlag
    thread: threading.Thread
    sink: PtySink = field(repr=False)


@pytest.fixture
def simulated() -> Iterator[Meter]:
    sink = PtySink()
    stop = StopFlag()
    sim = MeterSimulator("e450", key=KEY, auth_key=AUTH, seed=5)
    thread = threading.Thread(target=transmit, args=(sim, sink, stop),
                              kwargs={"label": "probe-test", "interval_s": INTERVAL}, daemon=True)
    thread.start()
    try:
        yield Meter(sink.path, stop, thread, sink)
    finally:
        stop.set()
        thread.join(5)
        sink.close()


class Recorder:
    """open_serial, noting every port it opened and whether it was closed."""

    def __init__(self) -> None:
        self.ports: list[SerialLike] = []

    def __call__(self, meter: MeterConfig) -> SerialLike:
        port = open_serial(meter)
        self.ports.append(port)
        return port

    @property
    def all_closed(self) -> bool:
        return bool(self.ports) and not any(getattr(p, "is_open", True) for p in self.ports)


def config(port: str, key: bytes | None = KEY, auth_key: bytes | None = AUTH) -> MeterConfig:
    return MeterConfig(name="house", port=port, baudrate=115200, link=LinkLayer.HDLC, key=key, auth_key=auth_key,
                       model="e450", push_interval=INTERVAL)


def assert_no_key(report: ProbeReport) -> None:
    text = json.dumps(report.as_json()).encode()
    for key in (KEY, AUTH, WRONG):
        for form in (key, key.hex().encode(), key.hex().upper().encode(), base64.b64encode(key)):
            assert form not in text, "a key shows in the report"


def test_a_simulated_meter_on_a_pty_is_decoded_within_the_time_limit(simulated: Meter) -> None:
    opener = Recorder()
    started = time.monotonic()
    report = run_probe(config(simulated.path), 10.0, open_port=opener)
    took = time.monotonic() - started
    print(f"\nprobe on a pty: {report.pushes} push(es) after {took:.2f} s ({report.bytes} bytes, {report.frames} frames)")
    assert report.opened and report.open_error is None
    assert report.pushes >= 1 and report.encrypted is True and report.decrypted is True
    assert report.readings and report.verdict.startswith("OK: ")
    assert took < 5 * INTERVAL + 1.5, "the probe returns once a push is decoded"
    assert report.seconds == pytest.approx(took, abs=0.2)
    assert opener.all_closed
    assert_no_key(report)


def test_a_wrong_key_stops_after_three_failed_pushes_or_the_limit(simulated: Meter) -> None:
    opener = Recorder()
    started = time.monotonic()
    report = run_probe(config(simulated.path, key=WRONG), 2.0, open_port=opener)
    took = time.monotonic() - started
    assert took < 2.0 + 1.0, "at most one read timeout (0.5 s) past the limit"
    assert took >= 2.0 or sum(int(str(e["count"])) for e in report.errors if e["kind"] == "auth") >= 3
    assert report.opened and report.pushes == 0 and report.frames > 0
    assert (report.encrypted, report.decrypted) == (True, False)
    # the probe may start listening in the middle of a push: that one is a sequence error
    auth = [e for e in report.errors if e["kind"] == "auth"]
    head = ADVICE["auth"].split(":", 1)[0]
    assert auth and (auth[0]["advice"] == ADVICE["auth"] or head in str(auth[0]["message"])) and {e["kind"] for e in report.errors} <= {"auth", "sequence"}
    assert "wrong key" in report.verdict
    assert opener.all_closed
    assert_no_key(report)


def test_stop_ends_the_probe_early(simulated: Meter) -> None:
    opener = Recorder()
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 1

    started = time.monotonic()
    report = run_probe(config(simulated.path), 10.0, stop=stop, open_port=opener)
    assert time.monotonic() - started < 1.5 and report.opened and opener.all_closed


def _assert_open_failed(report: ProbeReport, port: str, *needles: str) -> None:
    assert report.opened is False and report.open_error is not None
    assert report.open_error.startswith(f"cannot open {port}: ")
    assert "\n" not in report.open_error and "Traceback" not in report.open_error
    for needle in needles:
        assert needle in report.open_error
    assert (report.bytes, report.frames, report.pushes, report.encrypted, report.decrypted) == (0, 0, 0, None, None)
    assert report.verdict == report.open_error
    json.dumps(report.as_json())


def test_a_port_that_does_not_exist() -> None:
    report = run_probe(config("/dev/ttyMeterpipeProbeMissing"), 5.0)
    _assert_open_failed(report, "/dev/ttyMeterpipeProbeMissing", "no such device", "plugged in")
    assert report.seconds < 1


def test_a_url_pyserial_does_not_know() -> None:
    report = run_probe(config("nosuch://meter"), 5.0)
    _assert_open_failed(report, "nosuch://meter", "nosuch")


def test_a_serial_bridge_that_is_not_running() -> None:
    port = f"socket://127.0.0.1:{free_port()}"
    report = run_probe(config(port), 5.0)
    _assert_open_failed(report, port, "refused")


class BrokenPort:
    """A port that fails on read, with ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.closed = False

    @property
    def in_waiting(self) -> int:
        return 0

    def read(self, size: int = 1) -> bytes:
        raise self.error

    def close(self) -> None:
        self.closed = True


def test_a_port_lost_while_listening_is_closed_and_reported() -> None:
    port = BrokenPort(serial.SerialException("device reports readiness to read but returned no data"))
    report = run_probe(config("/dev/ttyFAKE"), 5.0, open_port=lambda meter: port)
    assert port.closed and report.opened and report.seconds < 1
    assert report.errors[0]["kind"] == "port" and "returned no data" in str(report.errors[0]["message"])
    assert "the port was lost" in report.verdict


def test_the_port_is_closed_even_when_something_unexpected_happens() -> None:
    port = BrokenPort(RuntimeError("a bug"))
    with pytest.raises(RuntimeError):
        run_probe(config("/dev/ttyFAKE"), 5.0, open_port=lambda meter: port)
    assert port.closed
