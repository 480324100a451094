"""Issue 11: the decoder takes new meters while it runs (DecoderService.reconfigure, and SIGHUP
in the real decoder process). Frames come from the simulator, with keys the test holds."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zmq

from meterpipe.common.config import MeterConfig
from meterpipe.common.schema import Frame, LinkLayer, ReadingsMessage, decode_readings, encode_frame
from meterpipe.decoder.service import DecoderService, Reconfigured
from meterpipe.simulator.meter import MeterSimulator
from tests.support import MeterEntry, inproc_decoder_sockets, stop_process, write_config, write_secret

KEY = bytes.fromhex("5a1f0c93d2e847b6a0c4e1f27b39d815")
AUTH = bytes.fromhex("c3b9a07e41d25f68e9a0b7c1d4f3e226")
WRONG = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
T0 = datetime(2026, 3, 1, 12, 0, 0)


class FakePub:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, parts: list[bytes]) -> None:
        self.sent.append(parts)

    def readings(self, meter: str | None = None) -> list[ReadingsMessage]:
        got = [decode_readings(p) for t, p in self.sent if t.startswith(b"reading/")]
        return [r for r in got if meter is None or r.meter == meter]


class Line:
    """A simulated meter and the frame messages its reader would send."""

    def __init__(self, name: str, model: str, key: bytes | None = None, auth_key: bytes | None = None) -> None:
        self.name = name
        self.sim = MeterSimulator(model, key=key, auth_key=auth_key, seed=len(name))
        self.seq = 0
        self.pushes = 0

    def messages(self) -> list[bytes]:
        push = self.sim.push(T0 + timedelta(seconds=10 * self.pushes))
        self.pushes += 1
        out = []
        for data in push.frames:
            self.seq += 1
            received = 10**18 + self.pushes * 10**10 + self.seq
            out.append(encode_frame(Frame(self.name, self.seq, received, LinkLayer.HDLC, data)))
        return out


def meter(name: str, key: bytes | None = None, auth_key: bytes | None = None, **kw: Any) -> MeterConfig:
    kw.setdefault("port", f"/dev/{name}")
    return MeterConfig(name=name, link=LinkLayer.HDLC, key=key, auth_key=auth_key, **kw)


def service(*meters: MeterConfig) -> tuple[DecoderService, FakePub]:
    pub = FakePub()
    clock = iter(range(10**18, 10**19, 10**6))
    return DecoderService(meters, None, pub, clock=lambda: next(clock)), pub  # type: ignore[arg-type]


def feed(svc: DecoderService, line: Line, pushes: int = 1) -> None:
    for _ in range(pushes):
        for message in line.messages():
            svc.handle(message)


def test_untouched_meters_keep_their_decoder_status_and_sequence() -> None:
    house, flat = Line("house", "e450", KEY, AUTH), Line("flat", "am550")
    svc, pub = service(meter("house", KEY, AUTH, model="e450"), meter("flat", model="am550"))
    feed(svc, house, 2)
    feed(svc, flat, 2)
    kept = (svc._decoders["house"], svc._status["house"], svc._decoders["flat"])
    result = svc.reconfigure([meter("house", KEY, AUTH, model="e450", port="/dev/other"),
                              meter("flat", model="am550", queue_frames=5)])
    assert result == Reconfigured() and not result  # reader settings are not the decoder's business
    assert (svc._decoders["house"], svc._status["house"], svc._decoders["flat"]) == kept
    feed(svc, house)
    feed(svc, flat)
    assert [r.seq for r in pub.readings("house")] == [1, 2, 3]
    assert [r.seq for r in pub.readings("flat")] == [1, 2, 3]


def test_a_new_meter_is_decoded_from_the_reconfigure_on(caplog: pytest.LogCaptureFixture) -> None:
    house, garage = Line("house", "am550"), Line("garage", "e450", KEY, AUTH)
    svc, pub = service(meter("house", model="am550"))
    with caplog.at_level(logging.INFO):
        feed(svc, garage)  # its reader started before the decoder heard of it
        assert pub.readings("garage") == []
        result = svc.reconfigure([meter("house", model="am550"), meter("garage", KEY, AUTH, model="e450")])
        assert result == Reconfigured(added=("garage",))
        feed(svc, garage, 2)
        feed(svc, house)
    assert [r.seq for r in pub.readings("garage")] == [1, 2]
    assert pub.readings("garage")[0].push.authenticated
    assert svc.meters == ("house", "garage")
    assert "meters re-read: added garage" in caplog.text
    # the meter was unknown once: should it vanish and come back, the warning shows again
    svc.reconfigure([meter("house", model="am550")])
    feed(svc, garage)
    assert caplog.text.count("which is not in the config") == 2


def test_a_removed_meter_is_no_longer_decoded() -> None:
    house, flat = Line("house", "am550"), Line("flat", "am550")
    svc, pub = service(meter("house", model="am550"), meter("flat", model="am550"))
    feed(svc, flat)
    assert svc.reconfigure([meter("house", model="am550")]) == Reconfigured(removed=("flat",))
    feed(svc, flat)
    feed(svc, house)
    assert len(pub.readings("flat")) == 1 and len(pub.readings("house")) == 1
    assert svc.meters == ("house",)
    svc.publish_status(10**19)
    assert all(t != b"status/flat" for t, _ in pub.sent[-2:])


def test_a_new_key_gives_a_fresh_decoder_and_the_counters_carry_on(caplog: pytest.LogCaptureFixture) -> None:
    house = Line("house", "e450", KEY, AUTH)
    svc, pub = service(meter("house", WRONG, AUTH, model="e450"))
    feed(svc, house, 2)
    assert pub.readings() == []
    status = svc._status["house"]
    errors = status.counters["decrypt_errors"] + status.counters["auth_errors"]
    frames_ok = status.counters["frames_ok"]
    assert errors >= 1 and frames_ok > 0
    with caplog.at_level(logging.INFO):
        result = svc.reconfigure([meter("house", KEY, AUTH, model="e450")])
    assert result == Reconfigured(changed=(("house", ("key",)),))
    assert result.summary() == "house: key changed"
    feed(svc, house, 2)
    assert [r.seq for r in pub.readings("house")] == [1, 2]
    assert svc._status["house"] is status
    assert status.counters["decrypt_errors"] + status.counters["auth_errors"] == errors
    assert status.counters["frames_ok"] > frames_ok
    for secret in (KEY, WRONG, AUTH):
        assert secret.hex() not in caplog.text.lower()


def test_every_decoder_setting_is_named_in_the_change() -> None:
    old = meter("house", KEY, None, model="e450", push_interval=10.0)
    svc, _ = service(old)
    new = MeterConfig(name="house", port="/dev/house", link=LinkLayer.MBUS, key=WRONG, auth_key=AUTH,
                      model="omnipower", push_interval=60.0)
    result = svc.reconfigure([new])
    assert result.changed == (("house", ("key", "auth_key", "link", "model", "push_interval")),)
    assert result.summary() == "house: key, auth_key, link, model, push_interval changed"


def test_a_longer_push_interval_moves_the_stale_warning() -> None:
    svc, _ = service(meter("house", model="am550", push_interval=1.0))
    svc.reconfigure([meter("house", model="am550", push_interval=1000.0)])
    status = svc._status["house"]
    message = status.due(10**18 + 100 * 10**9)  # 100 s after the start: 3 x 1 s, not 3 x 1000 s
    assert message is not None and message.last_error_kind is None


def test_the_loop_asks_for_new_meters_and_wakes_on_the_signal_descriptor() -> None:
    ctx = zmq.Context()
    pull, pub, push, sub = inproc_decoder_sockets(ctx, b"reading/")
    read, write = socket.socketpair()
    read.setblocking(False)
    svc = DecoderService([meter("house", model="am550")], pull, pub)
    offered: list[list[MeterConfig]] = []
    asked = threading.Event()

    def reload() -> list[MeterConfig] | None:
        asked.set()
        return offered.pop() if offered else None

    done = threading.Event()
    thread = threading.Thread(target=svc.run, args=(done.is_set,), kwargs={"reload": reload, "wakeup": read.fileno()})
    thread.start()
    try:
        assert asked.wait(2)
        time.sleep(0.1)
        offered.append([meter("house", model="am550"), meter("garage", model="am550")])
        started = time.monotonic()
        write.send(b"\x01")  # as signal.set_wakeup_fd would on SIGHUP
        deadline = time.monotonic() + 2
        while svc.meters != ("house", "garage") and time.monotonic() < deadline:
            time.sleep(0.005)
        assert svc.meters == ("house", "garage")
        assert time.monotonic() - started < 0.4, "the poll did not wake on the descriptor"
        for message in Line("garage", "am550").messages():
            push.send(message)
        assert sub.poll(2000)
        topic, _ = sub.recv_multipart()
        assert topic == b"reading/garage"
    finally:
        done.set()
        write.send(b"\x01")
        thread.join(5)
        for s in (pull, pub, push, sub):
            s.close()
        ctx.term()
        read.close()
        write.close()


# --- the real decoder process ------------------------------------------------------------


def _config(rundir: Path, meters: list[tuple[str, bool]]) -> Path:
    entries = []
    for name, encrypted in meters:
        key = write_secret(rundir / f"{name}.key", KEY) if encrypted else None
        auth = write_secret(rundir / f"{name}.auth", AUTH) if encrypted else None
        entries.append(MeterEntry(name, f"/dev/{name}", "e450" if encrypted else "am550", key_file=key,
                                  auth_key_file=auth))
    return write_config(rundir, entries)


@pytest.mark.slow
def test_the_decoder_process_rereads_its_meters_on_sighup(rundir: Path) -> None:
    config = _config(rundir, [("house", False)])
    log_path = rundir / "decoder.log"
    ctx = zmq.Context()
    push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
    for s in (push, sub):
        s.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"reading/")
    with log_path.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "meterpipe.decoder.main", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT)
    lines = {"house": Line("house", "am550"), "garage": Line("garage", "e450", KEY, AUTH)}

    def readings_of(name: str, timeout: float = 10) -> str:
        """Push one meter's frames until a reading of it comes out; the topics seen."""
        seen: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in lines[name].messages():
                push.send(message)
            while sub.poll(300):
                topic, _ = sub.recv_multipart()
                seen.append(topic)
                if topic == f"reading/{name}".encode():
                    return "ok"
        return f"no reading of {name}: saw {seen}"

    try:
        push.connect(f"ipc://{rundir}/frames")
        sub.connect(f"ipc://{rundir}/readings")
        assert readings_of("house") == "ok", log_path.read_text()
        pid = proc.pid
        # a bad config: one error line, the meters stay
        config.write_text(config.read_text().replace('port = "/dev/house"', 'port = "/dev/house"\nbaudrate = "x"'))
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "SIGHUP: keeping the meters" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "SIGHUP: keeping the meters decoded so far: config error: meters.house.baudrate" in log_path.read_text()
        assert readings_of("house") == "ok"
        # a second meter, with keys
        _config(rundir, [("house", False), ("garage", True)])
        os.kill(pid, signal.SIGHUP)
        assert readings_of("garage") == "ok", log_path.read_text()
        assert readings_of("house") == "ok"
        assert proc.poll() is None
        # and it goes again
        _config(rundir, [("garage", True)])
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "removed house" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "meters re-read: removed house" in log_path.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        stop_process(proc)
        push.close()
        sub.close()
        ctx.term()
    log = log_path.read_text()
    assert "meters re-read: added garage" in log
    assert KEY.hex() not in log.lower() and AUTH.hex() not in log.lower()
