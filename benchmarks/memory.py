"""Memory: PSS of every meterpipe process kind, alone and in the running set.

PSS (``Pss`` of /proc/PID/smaps_rollup) splits every shared page among the
processes that map it, so one process's figure depends on its neighbours: the
same reader holds more PSS alone than beside a decoder and publishers that map
the same interpreter, libzmq and stdlib pages (and any other Python process on
the machine that maps the same interpreter lowers it too). ``Pss_Anon``, the
process's own heap and written pages, depends on nobody else and is shown beside
it. Both figures are measured:

* **standalone**: each kind started alone (``python -m <module> --config FILE``,
  the environment supervisord gives it) with a one-meter config, while this
  process plays its neighbours so that it does its real work before it is
  measured: the reader reads a pty this process writes E450 pushes to and
  PUSHes frames to a PULL socket bound here; the decoder gets those pushes'
  frames PUSHed from here and PUBlishes readings to a SUB socket here; the CSV,
  MQTT (to a private mosquitto) and journal (to a datagram socket bound here)
  publishers get readings PUBlished from here; supervisord runs with no
  programs.
* **running set**: ``meterpipe run`` as it starts the pipeline (supervisord
  with deploy/supervisord.conf, the decoder, the CSV, MQTT and journal
  publishers and ``--meters`` readers on ptys), every meter pushing once a
  second, measured once every push has reached MQTT and the journal.

Both are measured twice (``--bytecode both``): with meterpipe's modules
byte-compiled (``cached``: as pip installs them, and as a checkout runs once it
has its ``__pycache__``), and compiled from source at every start (``source``:
PYTHONDONTWRITEBYTECODE=1 and no ``__pycache__``, as the other benchmarks run
in an environment that sets it). Compiling a module of a few hundred lines
leaves about 1 MB of heap behind in the process, so ``source`` is higher. The
``cached`` run compiles the modules first and removes the ``__pycache__``
folders it made afterwards. mosquitto and this process are not counted.

    python benchmarks/memory.py [--meters 1] [--seconds 8] [--bytecode both|cached|source]

Exits 1 when a reader holds more than 12 MB PSS in the running set (``cached``
when it is measured), or when a process is missing. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _harness import (
    PY,
    MeterSpec,
    Mosquitto,
    Pty,
    Supervisor,
    cleanup,
    machine,
    now_utc,
    pss_kb,
    rss_kb,
    short_dir,
    stop_process,
    write_config,
    write_secret,
)

TARGET_READER_PSS_MB = 12.0
T0 = dt.datetime(2024, 1, 1, 12, 0, 0)
KINDS = ("reader", "decoder", "csv", "mqtt", "journal", "supervisord")
MODULES = {
    "reader": "meterpipe.reader.main",
    "decoder": "meterpipe.decoder.main",
    "csv": "meterpipe.publishers.csv_main",
    "mqtt": "meterpipe.publishers.mqtt.main",
    "journal": "meterpipe.publishers.journal",
}


def wait_until(what: str, condition: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes] | None = None,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}" + _tail(log))
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:g} s" + _tail(log))
        time.sleep(0.05)


def _tail(log: Path | None) -> str:
    return f"\n{log.read_text(errors='replace')[-2000:]}" if log is not None and log.exists() else ""


def anon_kb(pid: int) -> int:
    """Pss_Anon: the process's own heap, stacks and written pages, which no other process shares."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss_Anon:"):
            return int(line.split()[1])
    return 0


def memory(pid: int) -> dict[str, float]:
    return {"pss_mb": round(pss_kb(pid) / 1024, 1), "anon_mb": round(anon_kb(pid) / 1024, 1),
            "rss_mb": round(rss_kb(pid) / 1024, 1)}


class JournalSocket:
    """journald's native socket, as far as the journal publisher sees it: entries are counted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if b"\nMETER_SEQ=" in data:
                self.entries += 1

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self._sock.close()


class MqttCount:
    """A subscriber to meterpipe/+/json on the private broker, counting pushes delivered over MQTT."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages = 0
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-memory")
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe("meterpipe/+/json", 0)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.messages += 1

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class Setup:
    """One run directory: a key, a pty per meter, mosquitto, the journal socket and the config."""

    def __init__(self, prefix: str, meters: int) -> None:
        from meterpipe.simulator.main import MeterSimulator

        self.rundir = short_dir(prefix)
        key = os.urandom(16)
        key_file = write_secret(self.rundir / "meter.key", key)
        self.names = [f"m{i + 1}" for i in range(meters)]
        self.sims = [MeterSimulator("e450", key=key, seed=i) for i in range(meters)]
        self.ptys = [Pty() for _ in range(meters)]
        self.broker = Mosquitto(self.rundir)
        self.journal = JournalSocket(self.rundir / "journal.sock")
        specs = [MeterSpec(n, p.path, key_file=key_file) for n, p in zip(self.names, self.ptys)]
        self.config = write_config(self.rundir, specs, csv_dir=self.rundir / "csv", mqtt_port=self.broker.port)
        with self.config.open("a") as f:
            f.write(f'[publishers.journal]\nenabled = true\nsocket = "{self.journal.path}"\n')
        self.frames = f"ipc://{self.rundir}/frames"
        self.readings = f"ipc://{self.rundir}/readings"
        self._pushes = 0
        self.recorded: list[list[bytes]] = []  # [topic, payload] as the decoder published them

    def push_all(self) -> None:
        """One push from every meter, to its pty."""
        now = T0 + dt.timedelta(seconds=self._pushes)
        self._pushes += 1
        for sim, pty in zip(self.sims, self.ptys):
            pty.write(sim.push(now).data)

    def close(self) -> None:
        self.journal.close()
        self.broker.stop()
        for pty in self.ptys:
            pty.close()
        cleanup(self.rundir)


# --- standalone ---------------------------------------------------------------------


def start_alone(s: Setup, kind: str, started: list[subprocess.Popen[bytes]]) -> tuple[subprocess.Popen[bytes], Path]:
    from meterpipe.common.config import load_config
    from meterpipe.deploy.supervise import supervisor_env, supervisord_command, write_programs

    env = supervisor_env(load_config(s.config), s.rundir)
    log = s.rundir / f"{kind}.log"
    if kind == "supervisord":
        write_programs(s.rundir, "")
        command = supervisord_command()
    else:
        command = [PY, "-m", MODULES[kind], "--config", str(s.config)]
        if kind == "reader":
            command += ["--meter", s.names[0]]
    with open(log, "wb") as out:
        started.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
    return started[-1], log


def measure_alone(s: Setup, kind: str, settle: float) -> dict[str, float]:
    import zmq

    ctx = zmq.Context.instance()
    socks: list[Any] = []
    started: list[subprocess.Popen[bytes]] = []
    try:
        if kind == "reader":
            pull = ctx.socket(zmq.PULL)
            socks.append(pull)
            pull.bind(s.frames)
            proc, log = start_alone(s, kind, started)
            got = [0]

            def frames_arrived() -> bool:
                s.push_all()
                while pull.poll(200):
                    pull.recv()
                    got[0] += 1
                return got[0] >= 12  # three E450 pushes

            wait_until("reader alone", frames_arrived, 30, proc, log)
        elif kind == "decoder":
            from meterpipe.common.schema import Frame, LinkLayer, encode_frame

            push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
            socks += [push, sub]
            sub.setsockopt(zmq.SUBSCRIBE, b"reading/")
            proc, log = start_alone(s, kind, started)
            wait_until("decoder alone binds", lambda: (s.rundir / "frames").exists(), 30, proc, log)
            push.connect(s.frames)
            sub.connect(s.readings)
            seq = [0]
            readings = [0]

            def readings_arrived() -> bool:
                for raw in s.sims[0].push(T0 + dt.timedelta(seconds=seq[0])).frames:
                    seq[0] += 1
                    push.send(encode_frame(Frame(s.names[0], seq[0], time.time_ns(), LinkLayer.HDLC, raw)))
                while sub.poll(300):
                    s.recorded.append(sub.recv_multipart())  # what the publishers get next
                    readings[0] += 1
                return readings[0] >= 3

            wait_until("decoder alone", readings_arrived, 30, proc, log)
        elif kind == "supervisord":
            proc, log = start_alone(s, kind, started)
            wait_until("supervisord alone", lambda: (s.rundir / "supervisord.pid").exists(), 30, proc, log)
        else:
            pub = ctx.socket(zmq.PUB)
            socks.append(pub)
            pub.bind(s.readings)
            messages = s.recorded
            counter = MqttCount(s.broker.port) if kind == "mqtt" else None
            before = s.journal.entries
            proc, log = start_alone(s, kind, started)
            sent = [0]

            def delivered() -> bool:
                pub.send_multipart(messages[sent[0] % len(messages)])
                sent[0] += 1
                time.sleep(0.3)
                if kind == "csv":
                    return sum(p.stat().st_size for p in (s.rundir / "csv").rglob("*.csv")) > 0 and sent[0] > 3
                if kind == "mqtt":
                    assert counter is not None
                    return counter.messages >= 3
                return s.journal.entries - before >= 3

            try:
                wait_until(f"{kind} alone", delivered, 45, proc, log)
            finally:
                if counter is not None:
                    counter.close()
        time.sleep(settle)
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} alone exited with {proc.returncode}" + _tail(log))
        return memory(proc.pid)
    finally:
        for proc in started:
            stop_process(proc)
        for sock in socks:
            sock.close(0)


# --- the running set ----------------------------------------------------------------


def measure_set(s: Setup, seconds: float, settle: float) -> dict[str, dict[str, float]]:
    sup = Supervisor(s.rundir, s.config)
    counter = MqttCount(s.broker.port)
    journal_before = s.journal.entries
    try:
        expect = len(s.names) + 4  # readers, decoder, csv, mqtt, journal
        pids = sup.pids(expect)
        missing = {f"reader-{n}" for n in s.names} | {"decoder", "csv", "mqtt", "journal"}
        missing -= set(pids)
        if missing:
            raise RuntimeError(f"running set: no process found for {', '.join(sorted(missing))}")
        deadline = time.monotonic() + 90
        while True:  # until pushes come out of MQTT and the journal (start-up, connections)
            s.push_all()
            time.sleep(1.0)
            if counter.messages and s.journal.entries > journal_before:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("running set: no readings after 90 s:\n" + sup.output()[-3000:])
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            s.push_all()
            time.sleep(1.0)
        time.sleep(settle)
        dead = [n for n, pid in pids.items() if not os.path.exists(f"/proc/{pid}")]
        if dead:
            raise RuntimeError(f"running set: {', '.join(dead)} gone before the measurement")
        return {name: memory(pid) for name, pid in sorted(pids.items())}
    finally:
        counter.close()
        sup.stop()


# --- bytecode ----------------------------------------------------------------------


CONDITIONS = {
    "cached": "meterpipe's modules byte-compiled, as an installed package has them",
    "source": "meterpipe's modules compiled at every start (no __pycache__, PYTHONDONTWRITEBYTECODE=1)",
}
PACKAGES = ("common", "reader", "decoder", "publishers", "deploy", "simulator")


def source_dirs() -> list[Path]:
    """The folders meterpipe's packages are imported from (the checkout, or site-packages)."""
    import importlib.util

    dirs = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(f"meterpipe.{name}")
        if spec is not None and spec.submodule_search_locations:
            dirs.append(Path(list(spec.submodule_search_locations)[0]))
    return dirs


def caches(dirs: Sequence[Path]) -> set[Path]:
    return {p for d in dirs for p in d.rglob("__pycache__") if p.is_dir()}


class Bytecode:
    """The bytecode condition of one measurement; ``cached`` compiles what is missing and
    removes, afterwards, the __pycache__ folders it made (the checkout is left as it was)."""

    def __init__(self, condition: str) -> None:
        self.condition = condition
        self.dirs = source_dirs()
        self._before = caches(self.dirs)
        self._env = os.environ.get("PYTHONDONTWRITEBYTECODE")

    def __enter__(self) -> Bytecode:
        import compileall

        # No process writes bytecode during a run, so "source" stays source throughout.
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        if self.condition == "cached":
            for d in self.dirs:
                compileall.compile_dir(d, quiet=1)
        elif self._before:
            raise RuntimeError(f"cannot measure '{self.condition}': meterpipe's modules have bytecode "
                               f"caches here ({sorted(self._before)[0]}, ...)")
        return self

    def __exit__(self, *exc: object) -> None:
        import shutil

        for path in caches(self.dirs) - self._before:
            shutil.rmtree(path, ignore_errors=True)
        if self._env is None:
            os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        else:
            os.environ["PYTHONDONTWRITEBYTECODE"] = self._env


# --- report -------------------------------------------------------------------------


def kind_of(name: str) -> str:
    return "reader" if name.startswith("reader-") else name


def report(alone: dict[str, dict[str, float]], together: dict[str, dict[str, float]]) -> dict[str, Any]:
    rows = {}
    for kind in KINDS:
        procs = [v for n, v in together.items() if kind_of(n) == kind]
        rows[kind] = {
            "standalone": alone.get(kind),
            "running_set": {"count": len(procs),
                            **{k: max((p[k] for p in procs), default=None) for k in ("pss_mb", "anon_mb", "rss_mb")}},
        }
    return rows


def measure(args: argparse.Namespace, condition: str) -> dict[str, Any]:
    with Bytecode(condition):
        alone: dict[str, dict[str, float]] = {}
        s = Setup("mpm-", 1)
        try:
            for kind in KINDS:
                alone[kind] = measure_alone(s, kind, args.settle)
        finally:
            s.close()
        s = Setup("mpm-", args.meters)
        try:
            together = measure_set(s, args.seconds, args.settle)
        finally:
            s.close()
    readers = [v["pss_mb"] for n, v in together.items() if kind_of(n) == "reader"]
    return {"per_kind": report(alone, together), "running_set": together,
            "running_set_pss_mb": round(sum(v["pss_mb"] for v in together.values()), 1),
            "reader_pss_mb_max": max(readers)}


def shown(m: dict[str, float] | None, count: int = 1) -> str:
    if m is None or m.get("pss_mb") is None:
        return "-"
    text = f"{m['pss_mb']:.1f} ({m['anon_mb']:.1f})"
    return text + (f" max of {count}" if count > 1 else "")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--meters", type=int, default=1, help="readers in the running set (default 1)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds of pushes before measuring (default 8)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds after the last push (default 2)")
    p.add_argument("--bytecode", choices=("cached", "source", "both"), default="both",
                   help="cached: " + CONDITIONS["cached"] + "; source: " + CONDITIONS["source"]
                   + " (default both; the target applies to cached when it is measured)")
    args = p.parse_args(argv)
    if args.meters < 1 or args.seconds < 0 or args.settle < 0:
        p.error("--meters must be >= 1, --seconds and --settle >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = now_utc()
    t = time.monotonic()
    # source first: the cached run compiles the modules (and removes its caches afterwards)
    conditions = ["source", "cached"] if args.bytecode == "both" else [args.bytecode]
    results: dict[str, dict[str, Any]] = {}
    try:
        for condition in conditions:
            results[condition] = measure(args, condition)
    except RuntimeError as exc:
        print(f"error: {exc}")
        return 1
    gate = "cached" if "cached" in results else conditions[0]
    reader_max = results[gate]["reader_pss_mb_max"]
    ok = reader_max <= TARGET_READER_PSS_MB
    print(f"PSS in MB per process (in parentheses: its Pss_Anon, which no other process shares); the running "
          f"set is supervisord, decoder, csv, mqtt, journal and {args.meters} reader(s)")
    order = [c for c in ("cached", "source") if c in results]
    for c in order:
        print(f"  {c}: {CONDITIONS[c]}")
    print(f"  {'':<12}" + "".join(f" {c + ', standalone':>22} {c + ', running set':>24}" for c in order))
    for kind in KINDS:
        cells = ""
        for c in order:
            row = results[c]["per_kind"][kind]
            cells += f" {shown(row['standalone']):>22} {shown(row['running_set'], row['running_set']['count']):>24}"
        print(f"  {kind:<12}{cells}")
    print(f"  {'all':<12}" + "".join(f" {'':>22} {results[c]['running_set_pss_mb']:>24.1f}" for c in order))
    extra = "".join(f"; {c}: {results[c]['reader_pss_mb_max']:.1f} MB" for c in order if c != gate)
    print(f"reader in the running set ({gate}): {reader_max:.1f} MB PSS [target <= {TARGET_READER_PSS_MB:g} MB: "
          f"{'met' if ok else 'MISSED'}]{extra}")
    summary = {
        "benchmark": "memory", "conditions": results, "gate": gate,
        "reader_pss_mb_max": reader_max, "target": {"reader_pss_mb": TARGET_READER_PSS_MB}, "target_met": ok,
        "settings": {"meters": args.meters, "seconds": args.seconds, "settle_s": args.settle, "model": "e450",
                     "security": "0x20 (encrypted, no auth key)",
                     "bytecode": {c: CONDITIONS[c] for c in order}},
        "date": started, "wall_s": round(time.monotonic() - t, 1), "machine": machine(),
    }
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
