"""Whole-pipeline tests: simulated meters (the simulator process on a pty), a
collector on the readings socket, and matching what the simulators recorded
against what arrived. Run directories, the config writer, supervisord and
mosquitto come from tests/support.py.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import zmq

from meterpipe.common.schema import ReadingsMessage, Status, decode_readings, decode_status
from tests import support
from tests.support import PY, MeterEntry, write_secret

# Keys of the simulated meters (test keys, never a real meter's).
KEY = "000102030405060708090A0B0C0D0E0F"
AUTH = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
KEY2 = "F0E1D2C3B4A5968778695A4B3C2D1E0F"
AUTH2 = "1F2E3D4C5B6A79889706A5B4C3D2E1F0"


@dataclass
class SimMeter:
    name: str
    model: str
    key: str | None = None
    auth_key: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def link(self, rundir: Path) -> Path:
        return rundir / f"{self.name}.pty"

    def record(self, rundir: Path) -> Path:
        return rundir / f"{self.name}.jsonl"


def three_meters() -> list[SimMeter]:
    """An encrypted and authenticated E450 (GBT blocks), a plain AM550 (HDLC segments) and an
    encrypted and authenticated Kamstrup Omnipower (M-Bus)."""
    return [
        SimMeter("house", "e450", KEY, AUTH),
        SimMeter("flat", "am550"),
        SimMeter("shop", "omnipower", KEY2, AUTH2),
    ]


def start_simulator(meter: SimMeter, rundir: Path, interval: float, seed: int | None = None) -> None:
    """The simulator process for ``meter``, its pty linked at ``meter.link(rundir)``
    (seed: the length of the meter's name unless given; a restarted meter wants another)."""
    args = [PY, "-m", "meterpipe.simulator.main", "--model", meter.model, "--interval", str(interval),
            "--link", str(meter.link(rundir)), "--record", str(meter.record(rundir)),
            "--seed", str(len(meter.name) if seed is None else seed)]
    for option, suffix, value in (("--key-file", ".key", meter.key), ("--auth-key-file", ".auth", meter.auth_key)):
        if value:
            args += [option, str(write_secret(rundir / f"{meter.name}{suffix}", value))]
    with open(rundir / f"{meter.name}.sim.log", "ab") as log:
        meter.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while not meter.link(rundir).exists():
        assert time.monotonic() < deadline, "simulator did not create its pty link"
        assert meter.proc.poll() is None, (rundir / f"{meter.name}.sim.log").read_text()
        time.sleep(0.02)


def write_config(rundir: Path, meters: list[SimMeter], extra: str = "", push_interval: float = 1.0,
                 meter_options: Mapping[str, object] | None = None, **kwargs: Any) -> Path:
    """support.write_config for simulated meters (their key files in ``rundir`` too);
    ``meter_options``: more settings for every meter (``queue_frames``)."""
    entries = []
    for m in meters:
        key = write_secret(rundir / f"{m.name}.key", m.key) if m.key else None
        auth = write_secret(rundir / f"{m.name}.auth", m.auth_key) if m.auth_key else None
        entries.append(MeterEntry(m.name, m.link(rundir), m.model, push_interval=push_interval,
                                  key_file=key, auth_key_file=auth, options=meter_options or {}))
    return support.write_config(rundir, entries, extra=extra, **kwargs)


@dataclass
class Collector:
    """Subscribes to the readings socket in a thread and keeps everything."""

    endpoint: str
    readings: list[ReadingsMessage] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Collector:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def _run(self, ready: threading.Event) -> None:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 1_000_000)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.endpoint)
        ready.set()
        while not self._stop.is_set():
            if sub.poll(100):
                topic, payload = sub.recv_multipart()
                if topic.startswith(b"reading/"):
                    self.readings.append(decode_readings(payload))
                else:
                    self.statuses.append(decode_status(payload))
        sub.close()
        ctx.term()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def of(self, meter: str) -> list[ReadingsMessage]:
        return [r for r in list(self.readings) if r.meter == meter]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _comparable(value: Any) -> Any:
    """Numbers as Decimal (whatever their exponent), anything else as text."""
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return str(value)


def as_values(msg: ReadingsMessage) -> dict[str, Any]:
    return {r.obis: _comparable(r.text()) for r in msg.push.readings}


def record_values(rec: dict[str, Any]) -> dict[str, Any]:
    return {obis: _comparable(v["value"]) for obis, v in rec["values"].items()}


def matched_indices(recs: list[dict[str, Any]], got: list[ReadingsMessage]) -> Iterator[int]:
    """For each decoded push, the index of the simulator record with the same values."""
    wanted = [record_values(r) for r in recs]
    stamps = [datetime.fromisoformat(r["time"]).timestamp() for r in recs]
    for msg in got:
        values = as_values(msg)
        hits = [i for i, w in enumerate(wanted) if all(values.get(k) == v for k, v in w.items())]
        if len(hits) > 1:  # coarse values (whole volts, 10 Wh) repeat: take the record written at receive time
            hits = [i for i in hits if abs(stamps[i] - msg.received_ns / 1e9) < 1.5]
        assert len(hits) == 1, f"decoded push {msg.seq} of {msg.meter} matches {len(hits)} records"
        yield hits[0]
