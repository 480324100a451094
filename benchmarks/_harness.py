"""Shared pieces of the end-to-end benchmarks (latency.py, at_rest.py, scale.py).

The benchmarks run the real processes as ``meterpipe run`` does (supervisord
with deploy/supervisord.conf and a generated programs.conf), a real mosquitto on
a free 127.0.0.1 port, and the reference collector (smartmeter-datacollector
2.0.0, installed by _reference.py into its own venv and run as
``python -m smartmeter_datacollector -c config.ini``). Run directories, ports,
the config writer, supervisord and mosquitto come from tests/support.py, which
the tests use too: importing this module puts the repository root on
``sys.path`` for it (a benchmark runs as ``python benchmarks/x.py``). No other
test module is imported here.

Simulated meters are ptys this process owns: the benchmark writes each push to
the pty master itself (``MeterSimulator`` in-process), so it knows when the last
byte of every push was written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import os
import platform
import subprocess
import sys
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import _reference

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402 - needs the repository root on sys.path
    Broker,
    MeterEntry,
    Supervisor,
    cleanup,
    short_dir,
    stop_process,
    write_config,
    write_secret,
)

PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# --- machine and statistics ---------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "cpu": cpu_model(), "python": platform.python_version(),
            "cpus": os.cpu_count()}


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages (what `uptime` shows)."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def side_by_side_parser(doc: str | None) -> argparse.ArgumentParser:
    """The parser of a side-by-side benchmark: its docstring's first paragraph, and --no-reference."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    p.add_argument("--no-reference", action="store_true", help="meterpipe only")
    return p


def attempt(run: Callable[[argparse.Namespace], dict[str, Any]], args: argparse.Namespace) -> dict[str, Any] | None:
    """``run(args)`` with its date, wall time and machine added; None, after one line
    ``error: ...``, when it could not set up or finish (a process missing, no readings,
    no reference)."""
    started, t0 = now_utc(), time.monotonic()
    try:
        res = run(args)
    except (RuntimeError, _reference.ReferenceSetupError) as exc:
        print(f"error: {exc}")
        return None
    return {**res, "date": started, "wall_s": round(time.monotonic() - t0, 1), "machine": machine()}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def rnd(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


# --- ptys -------------------------------------------------------------------------


class Pty:
    """A pty whose master we write to; the slave path is the meter's 'serial port'."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)

    def write(self, data: bytes) -> int:
        """Write everything (blocking); return time.time_ns() after the last byte went in."""
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]
        return time.time_ns()

    def set_nonblocking(self) -> None:
        flags = fcntl.fcntl(self.master, fcntl.F_GETFL)
        fcntl.fcntl(self.master, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


# --- processes ---------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of the process (all its threads); with ``children`` also its waited-for children."""
    f = _stat_fields(pid)
    ticks = int(f[11]) + int(f[12])  # fields 14, 15
    if children:
        ticks += int(f[13]) + int(f[14])  # 16, 17
    return ticks / CLK_TCK


def pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def rss_kb(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB


@dataclass
class Sample:
    """CPU seconds and PSS of a set of processes at one moment."""

    at: float
    cpu: dict[str, float]
    pss: dict[str, int]
    rss: dict[str, int]


def sample(pids: dict[str, int]) -> Sample:
    cpu, pss, rss = {}, {}, {}
    for name, pid in pids.items():
        try:
            cpu[name] = cpu_seconds(pid)
            pss[name] = pss_kb(pid)
            rss[name] = rss_kb(pid)
        except OSError:
            continue
    return Sample(time.monotonic(), cpu, pss, rss)


def usage(first: Sample, last: Sample) -> dict[str, dict[str, float]]:
    """Per process: % of one core between the samples, PSS and RSS (MB) at the last one."""
    span = last.at - first.at
    out = {}
    for name in last.cpu:
        if name not in first.cpu:
            continue
        out[name] = {
            "cpu_s": round(last.cpu[name] - first.cpu[name], 3),
            "cpu_pct": round(100 * (last.cpu[name] - first.cpu[name]) / span, 3),
            "pss_mb": round(last.pss[name] / 1024, 1),
            "rss_mb": round(last.rss[name] / 1024, 1),
        }
    return out


def running_set(sup: Supervisor, timeout: float = 120) -> dict[str, int]:
    """supervisord and every program the config starts (decoder, enabled publishers, one
    reader per meter) by name, once all of them run; RuntimeError naming any that does not."""
    return {"supervisord": sup.proc.pid, **sup.running(timeout)}


def check_counted(expected: Sequence[str], *samples: Sample) -> list[str]:
    """The processes in every sample; RuntimeError naming those of ``expected`` that some
    sample lacks (a process that exited or restarted during the window)."""
    missing = sorted({name for s in samples for name in expected if name not in s.cpu})
    if missing:
        raise RuntimeError(f"not counted: {', '.join(missing)} (expected {', '.join(expected)}): "
                           "the process was gone when sampled")
    return list(expected)


# --- meterpipe under supervisord, mosquitto -------------------------------------------


def meter_entry(name: str, port: str, key_file: Path | None, push_interval: float = 1.0) -> MeterEntry:
    """An E450 on a pty at 2400 8E1, as the simulated meters of the benchmarks are."""
    return MeterEntry(name, port, "e450", push_interval=push_interval, key_file=key_file,
                      options={"baudrate": 2400, "parity": "E"})


def bench_supervisor(rundir: Path, config: Path, *, readers: bool = True) -> Supervisor:
    """tests/support.Supervisor, given a minute to stop (100 readers under load)."""
    return Supervisor(rundir, config, readers=readers, stop_timeout=60)


def bench_broker(rundir: Path) -> Broker:
    """A mosquitto for the benchmark: no persistence, no log, a deep queue per client."""
    return Broker(rundir / "mosquitto", "log_dest none\nmax_queued_messages 100000", persistence=False).start()


# --- the reference collector ---------------------------------------------------------


@dataclass
class Reference:
    """smartmeter-datacollector reading one pty (type lge450) with an MQTT sink."""

    rundir: Path
    port: str
    key: bytes | None
    mqtt_port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> int:
        python = _reference.ensure_reference()
        ini = self.rundir / "reference.ini"
        key = self.key.hex().upper() if self.key else ""
        ini.write_text(
            f"[reader0]\ntype = lge450\nport = {self.port}\nbaudrate = 2400\nkey = {key}\n\n"
            f"[sink0]\ntype = mqtt\nhost = 127.0.0.1\nport = {self.mqtt_port}\n\n"
            "[logging]\ndefault = WARNING\n"
        )
        os.chmod(ini, 0o600)  # holds the key (the reference reads it only from its ini)
        log = open(self.rundir / "reference.log", "wb")  # noqa: SIM115 - child keeps it
        self.proc = subprocess.Popen([str(python), "-m", "smartmeter_datacollector", "-c", str(ini)],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=self.rundir)
        log.close()
        return self.proc.pid

    def output(self) -> str:
        return (self.rundir / "reference.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)


class SideBySide(NamedTuple):
    rundir: Path
    sim: Any  # meterpipe.simulator.meter.MeterSimulator
    mp_pty: Pty
    ref_pty: Pty
    broker: Broker
    sup: Supervisor
    ref: Reference | None

    def mqtt_client(self, client_id: str, on_message: Callable[..., None]) -> Any:
        """A paho client (not connected yet) that hands every message to ``on_message``."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        client.on_message = on_message
        return client

    def close(self) -> None:
        """Stop both sides and the broker, close the ptys, remove the run directory."""
        self.sup.stop()
        if self.ref is not None:
            self.ref.stop()
        self.broker.stop()
        self.mp_pty.close()
        self.ref_pty.close()
        cleanup(self.rundir)


def side_by_side(prefix: str, meter: str, seed: int, interval: float, *, reference: bool) -> SideBySide:
    """One simulated E450 (key, no auth key: the reference has no auth-key setting) whose
    pushes go to two ptys: meterpipe under supervisord with CSV and MQTT, and the reference."""
    from meterpipe.simulator.meter import MeterSimulator

    rundir = short_dir(prefix)
    key = os.urandom(16)
    sim = MeterSimulator("e450", key=key, seed=seed)
    mp_pty, ref_pty = Pty(), Pty()
    broker = bench_broker(rundir)
    key_file = write_secret(rundir / "m1.key", key)
    config = write_config(rundir, [meter_entry(meter, mp_pty.path, key_file, push_interval=interval)],
                          csv_dir=rundir / "csv", mqtt={"port": broker.port, "spool_path": rundir / "mqtt-spool.sqlite"})
    sup = bench_supervisor(rundir, config)
    ref = Reference(rundir, ref_pty.path, key, broker.port) if reference else None
    return SideBySide(rundir, sim, mp_pty, ref_pty, broker, sup, ref)
