"""Test harness for whole-pipeline tests: simulators on ptys, supervisord, a collector."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import zmq

from meterpipe.common.config import load_config
from meterpipe.common.schema import ReadingsMessage, Status, decode_readings, decode_status
from meterpipe.deploy.programs import programs_conf
from meterpipe.deploy.supervise import supervisor_env, supervisord_command, write_programs

PY = sys.executable


def short_dir() -> Path:
    """A short private directory: ipc:// paths must stay under 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="mp-", dir="/tmp"))


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


def start_simulator(meter: SimMeter, rundir: Path, interval: float) -> None:
    args = [PY, "-m", "meterpipe.simulator.main", "--model", meter.model, "--interval", str(interval)]
    args += ["--link", str(meter.link(rundir)), "--record", str(meter.record(rundir)), "--seed", str(len(meter.name))]
    env = dict(os.environ)
    if meter.key:
        key_file = rundir / f"{meter.name}.key"
        key_file.write_text(meter.key)
        args += ["--key-file", str(key_file)]
    if meter.auth_key:
        auth_file = rundir / f"{meter.name}.auth"
        auth_file.write_text(meter.auth_key)
        args += ["--auth-key-file", str(auth_file)]
    with open(rundir / f"{meter.name}.sim.log", "ab") as log:
        meter.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while not meter.link(rundir).exists():
        assert time.monotonic() < deadline, "simulator did not create its pty link"
        assert meter.proc.poll() is None, (rundir / f"{meter.name}.sim.log").read_text()
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_config(rundir: Path, meters: list[SimMeter], extra: str = "", push_interval: float = 1.0) -> Path:
    lines = []
    for m in meters:
        lines += ["[[meters]]", f'name = "{m.name}"', f'port = "{m.link(rundir)}"', 'link = "hdlc"', f'model = "{m.model}"']
        lines += [f"push_interval = {push_interval}"]
        if m.key:
            lines.append(f'key_file = "{rundir / (m.name + ".key")}"')
        if m.auth_key:
            lines.append(f'auth_key_file = "{rundir / (m.name + ".auth")}"')
        lines.append("")
    lines += ["[endpoints]", f'frames = "ipc://{rundir}/frames"', f'readings = "ipc://{rundir}/readings"', ""]
    lines += [extra or "[publishers.csv]\nenabled = false\n"]
    path = rundir / "meterpipe.toml"
    path.write_text("\n".join(lines))
    os.chmod(path, 0o600)
    for m in meters:
        for suffix, value in ((".key", m.key), (".auth", m.auth_key)):
            if value:
                key_file = rundir / (m.name + suffix)
                key_file.write_text(value)
                os.chmod(key_file, 0o600)
    return path


class Supervisor:
    """supervisord running deploy/supervisord.conf for a config, as `meterpipe run` does."""

    def __init__(self, rundir: Path, config_path: Path) -> None:
        self.rundir = rundir
        self.config = load_config(config_path)
        write_programs(rundir, programs_conf(self.config))
        self.env = supervisor_env(self.config, rundir)
        self.log = open(rundir / "supervisord.log", "ab")  # noqa: SIM115 - closed in stop(); append: supervisord writes it too
        self.proc = subprocess.Popen(supervisord_command(), env=self.env, stdout=self.log, stderr=subprocess.STDOUT)

    def ctl(self, *args: str) -> str:
        from meterpipe.deploy.supervise import supervisord_conf

        command = [PY, "-m", "supervisor.supervisorctl", "-c", str(supervisord_conf()), *args]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=30).stdout

    def pid(self, program: str) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = self.ctl("pid", program).strip()
            if out.isdigit() and int(out) > 0:
                return int(out)
            time.sleep(0.2)
        raise AssertionError(f"{program} has no pid: {self.ctl('status')}")

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)
        self.log.close()

    def output(self) -> str:
        return (self.rundir / "supervisord.log").read_text(errors="replace")


@dataclass
class Collector:
    """Subscribes to the readings socket in a thread and keeps everything."""

    endpoint: str
    readings: list[ReadingsMessage] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Collector":
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
    for msg in got:
        values = as_values(msg)
        hits = [i for i, w in enumerate(wanted) if all(values.get(k) == v for k, v in w.items())]
        assert len(hits) == 1, f"decoded push {msg.seq} of {msg.meter} matches {len(hits)} records"
        yield hits[0]


def cleanup(rundir: Path) -> None:
    if not os.environ.get("METERPIPE_KEEP_TEST_DIRS"):  # set it to look at logs after a failure
        shutil.rmtree(rundir, ignore_errors=True)
