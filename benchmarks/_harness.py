"""Shared pieces of the end-to-end benchmarks (latency.py, at_rest.py, scale.py).

Nothing here is test code: the benchmarks run the real processes as
``meterpipe run`` does (supervisord with deploy/supervisord.conf and a generated
programs.conf), a real mosquitto on a free 127.0.0.1 port, and the reference
collector (smartmeter-datacollector 2.0.0, installed by _reference.py into its
own venv and run as ``python -m smartmeter_datacollector -c config.ini``).

Simulated meters are ptys this process owns: the benchmark writes each push to
the pty master itself (``MeterSimulator`` in-process), so it knows when the last
byte of every push was written.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tty
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import _reference

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
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages (what `uptime` shows)."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def rnd(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


# --- directories, ports, ptys -------------------------------------------------------


def short_dir(prefix: str = "mpb-") -> Path:
    """A private directory with a short path: ipc:// paths must stay under 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o700)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def write_secret(path: Path, key: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex().upper() + "\n")
    return path


# --- processes ---------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def children_of(ppid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(_stat_fields(int(entry.name))[1]) == ppid:
                out.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def role(pid: int) -> str:
    """A short name for a meterpipe process from its command line."""
    args = cmdline(pid)
    for i, a in enumerate(args):
        if a == "-m" and i + 1 < len(args):
            module = args[i + 1].rsplit(".", 1)[-1]
            if module == "main" and "--meter" in args:
                return "reader-" + args[args.index("--meter") + 1]
            if module == "main":
                return args[i + 1].split(".")[-2]  # meterpipe.decoder.main -> decoder
            return {"csv_main": "csv", "mqtt_main": "mqtt", "supervisord": "supervisord"}.get(module, module)
    return Path(args[0]).name if args else str(pid)


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


# --- mosquitto ---------------------------------------------------------------------


class Mosquitto:
    """A private mosquitto on a free 127.0.0.1 port."""

    def __init__(self, rundir: Path) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto not found: apt-get install mosquitto")
        self.port = free_port()
        conf = rundir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "log_dest none\nmax_queued_messages 100000\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)


# --- meterpipe under supervisord ----------------------------------------------------


@dataclass
class MeterSpec:
    name: str
    port: str
    model: str = "e450"
    key_file: Path | None = None
    push_interval: float = 1.0


def write_config(rundir: Path, meters: Iterable[MeterSpec], *, frames: str | None = None,
                 csv_dir: Path | None = None, mqtt_port: int | None = None) -> Path:
    """meterpipe.toml for the benchmark: ipc sockets in ``rundir`` unless ``frames`` is given."""
    lines = []
    for m in meters:
        lines += ["[[meters]]", f'name = "{m.name}"', f'port = "{m.port}"', 'link = "hdlc"',
                  f'model = "{m.model}"', "baudrate = 2400", 'parity = "E"', f"push_interval = {m.push_interval}"]
        if m.key_file is not None:
            lines.append(f'key_file = "{m.key_file}"')
        lines.append("")
    lines += ["[endpoints]", f'frames = "{frames or f"ipc://{rundir}/frames"}"',
              f'readings = "ipc://{rundir}/readings"', ""]
    lines += ["[publishers.csv]", f"enabled = {'true' if csv_dir else 'false'}",
              f'directory = "{csv_dir or rundir / "csv"}"', ""]
    if mqtt_port is not None:
        lines += ["[publishers.mqtt]", "enabled = true", 'host = "127.0.0.1"', f"port = {mqtt_port}",
                  f'spool_path = "{rundir / "mqtt-spool.sqlite"}"', ""]
    path = rundir / "meterpipe.toml"
    path.write_text("\n".join(lines))
    os.chmod(path, 0o600)
    return path


class Supervisor:
    """supervisord over deploy/supervisord.conf, as `meterpipe run` starts it (not exec'd)."""

    def __init__(self, rundir: Path, config_path: Path, *, readers: bool = True) -> None:
        from meterpipe.common.config import load_config
        from meterpipe.deploy.programs import programs_conf
        from meterpipe.deploy.supervise import supervisor_env, supervisord_command, write_programs

        self.rundir = rundir
        self.config = load_config(config_path)
        write_programs(rundir, programs_conf(self.config, readers=readers))
        env = supervisor_env(self.config, rundir)
        self.log_path = rundir / "supervisord.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(supervisord_command(), env=env, stdout=log, stderr=subprocess.STDOUT)

    def pids(self, expect: int, timeout: float = 120) -> dict[str, int]:
        """supervisord and its children by role, once ``expect`` children are up (plus a settle)."""
        deadline = time.monotonic() + timeout
        while True:
            kids = children_of(self.proc.pid)
            if len(kids) >= expect:
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"supervisord started {len(kids)} of {expect} processes; see {self.log_path}")
            time.sleep(0.2)
        found = {"supervisord": self.proc.pid}
        for pid in kids:
            found[role(pid)] = pid
        return found

    def stop(self) -> None:
        stop_process(self.proc, timeout=60)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


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


def cleanup(rundir: Path) -> None:
    shutil.rmtree(rundir, ignore_errors=True)


class SideBySide(NamedTuple):
    rundir: Path
    sim: Any  # meterpipe.simulator.meter.MeterSimulator
    mp_pty: "Pty"
    ref_pty: "Pty"
    broker: "Mosquitto"
    sup: "Supervisor"
    ref: "Reference | None"


def side_by_side(prefix: str, meter: str, seed: int, interval: float, *, reference: bool) -> SideBySide:
    """One simulated E450 (key, no auth key: the reference has no auth-key setting) whose
    pushes go to two ptys: meterpipe under supervisord with CSV and MQTT, and the reference."""
    from meterpipe.simulator.meter import MeterSimulator

    rundir = short_dir(prefix)
    key = os.urandom(16)
    sim = MeterSimulator("e450", key=key, seed=seed)
    mp_pty, ref_pty = Pty(), Pty()
    broker = Mosquitto(rundir)
    key_file = write_secret(rundir / "m1.key", key)
    config = write_config(rundir, [MeterSpec(meter, mp_pty.path, key_file=key_file, push_interval=interval)],
                          csv_dir=rundir / "csv", mqtt_port=broker.port)
    sup = Supervisor(rundir, config)
    ref = Reference(rundir, ref_pty.path, key, broker.port) if reference else None
    return SideBySide(rundir, sim, mp_pty, ref_pty, broker, sup, ref)
