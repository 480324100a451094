"""What the tests and the benchmarks share: the machinery around a real pipeline.

* run directories: :func:`short_dir` (private, short enough for ``ipc://``
  paths) and :func:`cleanup`;
* ports on 127.0.0.1: :func:`free_port`, :func:`wait_port`;
* processes: :func:`stop_process` (SIGTERM, then SIGKILL);
* a ``meterpipe.toml``: :class:`MeterEntry` rows and :func:`write_config`,
  key files with :func:`write_secret`;
* :class:`Supervisor`: supervisord over ``deploy/supervisord.conf`` with the
  ``programs.conf`` that ``meterpipe run`` writes
  (:func:`meterpipe.deploy.programs.programs_conf`), not exec'd, so the caller
  can stop it and read its log; it knows which programs the config starts and
  waits until every one of them runs (:meth:`Supervisor.running`);
* :class:`Broker`: a private mosquitto on a free port.

Nothing here imports pytest: ``benchmarks/_harness.py`` imports this module too
(benchmarks run as ``python benchmarks/x.py``; ``_harness`` puts the repository
root on ``sys.path``). Everything listens on 127.0.0.1 or ``ipc://`` only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from meterpipe.common.config import load_config
from meterpipe.deploy.programs import programs_conf
from meterpipe.deploy.supervise import supervisor_env, supervisord_command, supervisord_conf, write_programs

PY = sys.executable
MOSQUITTO: str | None = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
MOSQUITTO_PASSWD: str | None = shutil.which("mosquitto_passwd")


# --- run directories, ports, processes -----------------------------------------------


def short_dir(prefix: str = "mp-") -> Path:
    """A private (0700) directory with a short path: ipc:// paths must stay under 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o700)
    return path


def cleanup(rundir: Path) -> None:
    """Remove a run directory, unless METERPIPE_KEEP_TEST_DIRS is set (to read the logs after a failure)."""
    if not os.environ.get("METERPIPE_KEEP_TEST_DIRS"):
        shutil.rmtree(rundir, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 5.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``; TimeoutError after
    ``timeout`` seconds, or at once when ``proc`` (the server) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise TimeoutError(f"the server for 127.0.0.1:{port} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; nothing when it already ended."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_secret(path: Path, secret: bytes | str) -> Path:
    """A key or password file of mode 0600: bytes as upper-case hex and a newline, text as given."""
    text = secret.hex().upper() + "\n" if isinstance(secret, bytes) else secret
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


# --- browser tests --------------------------------------------------------------------


def screenshots() -> Path:
    """Where browser tests put their screenshots: $METERPIPE_SCREENSHOTS, else <tmp>/screenshots."""
    path = Path(os.environ.get("METERPIPE_SCREENSHOTS") or Path(tempfile.gettempdir()) / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- ZeroMQ ---------------------------------------------------------------------------


def inproc_decoder_sockets(ctx: zmq.Context[zmq.Socket[bytes]], subscribe: bytes = b"") -> tuple[
        zmq.Socket[bytes], zmq.Socket[bytes], zmq.Socket[bytes], zmq.Socket[bytes]]:
    """(pull, pub, push, sub) for a DecoderService in the test's process: the decoder's two
    sockets bound on inproc://frames and inproc://readings, a reader's PUSH and a publisher's SUB."""
    pull, pub, push, sub = (ctx.socket(t) for t in (zmq.PULL, zmq.PUB, zmq.PUSH, zmq.SUB))
    for s in (pull, pub, push, sub):
        s.setsockopt(zmq.LINGER, 0)
    pull.bind("inproc://frames")
    pub.bind("inproc://readings")
    push.connect("inproc://frames")
    sub.connect("inproc://readings")
    sub.setsockopt(zmq.SUBSCRIBE, subscribe)
    return pull, pub, push, sub


# --- meterpipe.toml ------------------------------------------------------------------


def toml_value(value: object) -> str:
    """A TOML literal for a str, path, bool, int or float (a JSON string is a TOML basic string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def toml_table(header: str, values: Mapping[str, object]) -> list[str]:
    """The lines of one ``[header]`` table (None values left out), with a blank line after."""
    return [header, *(f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None), ""]


@dataclass(frozen=True)
class MeterEntry:
    """One ``[[meters]]`` table; None leaves a setting at meterpipe's default."""

    name: str
    port: str | Path
    model: str | None = "e450"
    link: str | None = "hdlc"
    push_interval: float | None = 1.0
    key_file: Path | None = None
    auth_key_file: Path | None = None
    options: Mapping[str, object] = field(default_factory=dict)  # more settings: baudrate, queue_frames, key ...

    def table(self) -> list[str]:
        return toml_table("[[meters]]", {
            "name": self.name, "port": self.port, "link": self.link, "model": self.model,
            "push_interval": self.push_interval, **self.options,
            "key_file": self.key_file, "auth_key_file": self.auth_key_file})


def write_config(rundir: Path, meters: Iterable[MeterEntry], *, csv_dir: Path | None = None,
                 mqtt: Mapping[str, object] | None = None, extra: str = "", frames: str | None = None,
                 readings: str | None = None, name: str = "meterpipe.toml",
                 history: Path | None = None, web: str | None = None) -> Path:
    """``rundir/name`` (mode 0600): the meters, ``ipc://`` endpoints in ``rundir`` unless given, the
    CSV publisher on with ``csv_dir`` (off otherwise, unless ``extra`` configures it: meterpipe's
    default is on), the MQTT publisher on with ``mqtt`` (its settings; host 127.0.0.1 unless
    given), the history publisher on with ``history`` (its database) and the web page on with
    ``web`` (its listen address; both off otherwise, unless ``extra`` configures them), then
    ``extra`` (more TOML) as it is."""
    lines: list[str] = []
    for meter in meters:
        lines += meter.table()
    lines += toml_table("[endpoints]", {"frames": frames or f"ipc://{rundir}/frames",
                                        "readings": readings or f"ipc://{rundir}/readings"})
    if csv_dir is not None:
        lines += toml_table("[publishers.csv]", {"enabled": True, "directory": csv_dir})
    elif "[publishers.csv]" not in extra:
        lines += toml_table("[publishers.csv]", {"enabled": False})
    if mqtt is not None:
        lines += toml_table("[publishers.mqtt]", {"enabled": True, "host": "127.0.0.1", **mqtt})
    if history is not None:
        lines += toml_table("[publishers.history]", {"enabled": True, "path": history})
    elif "[publishers.history]" not in extra:
        lines += toml_table("[publishers.history]", {"enabled": False})
    if "[web]" not in extra:
        lines += toml_table("[web]", {"enabled": web is not None, "listen": web or "127.0.0.1:8080"})
    path = rundir / name
    path.write_text("\n".join(lines) + ("\n" + extra if extra else ""))
    os.chmod(path, 0o600)
    return path


# --- supervisord ---------------------------------------------------------------------


def started_programs(programs: str) -> list[str]:
    """Names supervisorctl gives the programs a ``programs.conf`` starts (``reader-m1``)."""
    names: list[str] = []
    groups: dict[str, str] = {}
    for block in re.split(r"^(?=\[)", programs, flags=re.M):
        if m := re.match(r"\[program:([^\]]+)\]", block):
            if not re.search(r"^autostart=false", block, re.M):
                names.append(m.group(1))
        elif m := re.match(r"\[group:([^\]]+)\]\nprograms=(.*)", block):
            groups.update((member.strip(), m.group(1)) for member in m.group(2).split(","))
    return [f"{groups[n]}:{n}" if n in groups else n for n in names]


class Supervisor:
    """supervisord running deploy/supervisord.conf for a config, as ``meterpipe run`` does.

    Its output goes to ``rundir/supervisord.log``, opened for appending: supervisord
    opens ``/dev/stdout`` anew (in append mode) for each program, while its own lines
    go through the descriptor it inherited; opened for writing, that descriptor would
    write at its own offset and overwrite the programs' lines.
    """

    def __init__(self, rundir: Path, config_path: Path, *, readers: bool = True, stop_timeout: float = 30) -> None:
        self.rundir = rundir
        self.config = load_config(config_path)
        programs = programs_conf(self.config, readers=readers)
        write_programs(rundir, programs)
        self.programs = started_programs(programs)  # what must run, as supervisorctl names them
        self.env = supervisor_env(self.config, rundir)
        self.log_path = rundir / "supervisord.log"
        self.stop_timeout = stop_timeout
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(supervisord_command(), env=self.env, stdout=self.log, stderr=subprocess.STDOUT)

    def ctl(self, *args: str) -> str:
        """supervisorctl's output for ``args`` (``"status"``, ``"pid", "decoder"``, ``"stop", "csv"``)."""
        command = [PY, "-m", "supervisor.supervisorctl", "-c", str(supervisord_conf()), *args]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=30).stdout

    def pid(self, program: str, timeout: float = 20) -> int:
        """The pid of a running program (``"decoder"``, ``"reader-house"``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.ctl("pid", program).strip()
            if out.isdigit() and int(out) > 0:
                return int(out)
            time.sleep(0.2)
        raise AssertionError(f"{program} has no pid: {self.ctl('status')}")

    def status_pids(self) -> dict[str, int]:
        """Every program in state RUNNING and its pid, as supervisorctl names them."""
        pids = {}
        for line in self.ctl("status").splitlines():
            if m := re.match(r"^(\S+)\s+RUNNING\s+pid (\d+),", line):
                pids[m.group(1)] = int(m.group(2))
        return pids

    def running(self, timeout: float = 120) -> dict[str, int]:
        """Wait until every program the config starts is RUNNING (up for its ``startsecs``);
        return program name (without its group: ``reader-house``) -> pid.
        RuntimeError naming the missing ones after ``timeout`` seconds or when supervisord exits."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.status_pids()
            missing = [p for p in self.programs if p not in pids]
            if not missing:
                return {p.rpartition(":")[2]: pids[p] for p in self.programs}
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"supervisord runs {len(self.programs) - len(missing)} of {len(self.programs)} "
                                   f"programs; not running: {', '.join(missing)}; see {self.log_path}\n"
                                   + self.ctl("status"))
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc, timeout=self.stop_timeout)
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


# --- mosquitto -----------------------------------------------------------------------


class Broker:
    """A mosquitto on a free 127.0.0.1 port with a generated config, logging to ``workdir``.

    ``extra`` lines go into the config (a ``password_file`` line turns anonymous
    logins off), ``listener_extra`` right after the listener (TLS files);
    ``persistence`` keeps sessions and retained messages in ``workdir/data``
    across a restart.
    """

    def __init__(self, workdir: Path, extra: str = "", listener_extra: str = "", *, persistence: bool = True) -> None:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto not found: apt-get install mosquitto")
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", listener_extra,
                 "allow_anonymous false" if "password_file" in extra else "allow_anonymous true"]
        if persistence:
            (workdir / "data").mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {workdir / 'data'}/"]
        else:
            lines.append("persistence false")
        lines.append(extra)
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to user mosquitto and cannot write workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(line for line in lines if line) + "\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        assert MOSQUITTO is not None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, proc=self.proc)
        except TimeoutError as exc:
            raise RuntimeError(f"mosquitto did not start ({exc}): {self.log.read_text()[-2000:]}") from exc
        return self

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)
        self.proc = None
