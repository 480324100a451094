"""Memory: PSS of every meterpipe process kind, alone and in the running set.

PSS (``Pss`` of /proc/PID/smaps_rollup) splits each shared page among the
processes that map it, so it depends on the neighbours (any Python process on
the machine mapping the same interpreter lowers it); ``Pss_Anon``, the process's
own heap and written pages, does not and is shown beside it.

* standalone: each kind started alone (``python -m <module> --config FILE``, in
  supervisord's environment) with a one-meter config while this process plays
  its neighbours: it writes E450 pushes to the reader's pty and PULLs its
  frames, PUSHes frames to the decoder and SUBscribes to its readings, PUBlishes
  those to the CSV, MQTT (private mosquitto) and journal (a datagram socket
  here) publishers; supervisord runs with no programs.
* running set: the pipeline as ``meterpipe run`` starts it (supervisord, decoder,
  CSV, MQTT and journal publishers, ``--meters`` readers on ptys), a push per
  meter per second, measured once pushes reach MQTT and the journal.

Both in two conditions: ``cached``, meterpipe's modules byte-compiled as pip
installs them (compiled here; the __pycache__ folders made are removed after),
and ``source``, compiled at every start (no __pycache__ and
PYTHONDONTWRITEBYTECODE=1), which leaves about 1 MB of compiler heap behind.

    python benchmarks/memory.py [--meters 1] [--seconds 8] [--bytecode both|cached|source]

Exits 1 when a reader holds over 12 MB PSS in the running set (``cached`` when
measured) or a process is missing. The last line printed is one JSON object.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _harness import (
    PY,
    Pty,
    bench_broker,
    bench_supervisor,
    cleanup,
    machine,
    meter_entry,
    now_utc,
    pss_kb,
    rss_kb,
    running_set,
    short_dir,
    stop_process,
    write_config,
    write_secret,
)

TARGET_READER_PSS_MB = 12.0
T0 = dt.datetime(2024, 1, 1, 12, 0, 0)
KINDS = ("reader", "decoder", "csv", "mqtt", "journal", "supervisord")
CONDITIONS = {"cached": "meterpipe's modules byte-compiled, as an installed package has them",
              "source": "meterpipe's modules compiled at every start (no __pycache__, PYTHONDONTWRITEBYTECODE=1)"}
PACKAGES = ("common", "reader", "decoder", "publishers", "deploy", "simulator")


def anon_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss_Anon:"):
            return int(line.split()[1])
    return 0


def memory(pid: int) -> dict[str, float]:
    return {"pss_mb": round(pss_kb(pid) / 1024, 1), "anon_mb": round(anon_kb(pid) / 1024, 1),
            "rss_mb": round(rss_kb(pid) / 1024, 1)}


def wait_until(what: str, done: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {proc.returncode}" if proc.poll() is not None else f"not within {timeout:g} s"
            raise RuntimeError(f"{what}: {why}\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


class JournalSocket:
    """journald's native socket as the journal publisher sees it; counts the push entries."""

    def __init__(self, path: Path) -> None:
        self.path, self.entries, self._stop = path, 0, False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                self.entries += b"\nMETER_SEQ=" in self._sock.recv(1 << 16)
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self._sock.close()


class MqttCount:
    """Counts the pushes delivered to meterpipe/+/json on the private broker."""

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

    def __init__(self, meters: int) -> None:
        from meterpipe.simulator.meter import MeterSimulator

        self.rundir = short_dir("mpm-")
        key = os.urandom(16)
        key_file = write_secret(self.rundir / "meter.key", key)
        self.names = [f"m{i + 1}" for i in range(meters)]
        self.sims = [MeterSimulator("e450", key=key, seed=i) for i in range(meters)]
        self.ptys = [Pty() for _ in range(meters)]
        self.broker = bench_broker(self.rundir)
        self.journal = JournalSocket(self.rundir / "journal.sock")
        specs = [meter_entry(n, p.path, key_file) for n, p in zip(self.names, self.ptys)]
        self.config = write_config(self.rundir, specs, csv_dir=self.rundir / "csv",
                                   mqtt={"port": self.broker.port, "spool_path": self.rundir / "mqtt-spool.sqlite"})
        with self.config.open("a") as f:
            f.write(f'[publishers.journal]\nenabled = true\nsocket = "{self.journal.path}"\n')
        self.pushes = 0
        self.recorded: list[list[bytes]] = []  # [topic, payload] as the decoder published them

    def push_all(self) -> None:
        """The next push of every meter, written to its pty."""
        self.pushes += 1
        for sim, pty in zip(self.sims, self.ptys):
            pty.write(sim.push(T0 + dt.timedelta(seconds=self.pushes)).data)

    def close(self) -> None:
        self.journal.close()
        self.broker.stop()
        for pty in self.ptys:
            pty.close()
        cleanup(self.rundir)


# --- standalone ---------------------------------------------------------------------


def start_alone(s: Setup, kind: str) -> tuple[subprocess.Popen[bytes], Path]:
    from meterpipe.common.config import load_config
    from meterpipe.deploy.programs import PROGRAMS
    from meterpipe.deploy.supervise import supervisor_env, supervisord_command, write_programs

    if kind == "supervisord":
        write_programs(s.rundir, "")
        command = supervisord_command()
    else:
        module = next(p.module for p in PROGRAMS if p.name == kind)  # as supervisord runs it
        command = [PY, "-m", module, "--config", str(s.config)]
        command += ["--meter", s.names[0]] if kind == "reader" else []
    log = s.rundir / f"{kind}.log"
    with open(log, "wb") as out:
        env = supervisor_env(load_config(s.config), s.rundir)
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT), log


def feeder(s: Setup, kind: str, ctx: Any) -> tuple[Callable[[], bool], list[Any]]:
    """What this process does as the neighbours of ``kind``, step by step, until ``kind`` has worked."""
    import zmq

    from meterpipe.common.schema import Frame, LinkLayer, encode_frame

    frames, readings = f"ipc://{s.rundir}/frames", f"ipc://{s.rundir}/readings"
    if kind == "reader":
        pull = ctx.socket(zmq.PULL)
        pull.bind(frames)
        got = [0]

        def reader_step() -> bool:
            s.push_all()
            while pull.poll(200):
                got[0] += bool(pull.recv())
            return got[0] >= 12  # three E450 pushes of 4 frames
        return reader_step, [pull]
    if kind == "decoder":
        push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"reading/")
        push.connect(frames)
        sub.connect(readings)
        seq = [0]

        def decoder_step() -> bool:
            if not (s.rundir / "frames").exists():  # not bound yet: a send would wait for it
                return False
            s.pushes += 1
            for raw in s.sims[0].push(T0 + dt.timedelta(seconds=s.pushes)).frames:
                seq[0] += 1
                push.send(encode_frame(Frame(s.names[0], seq[0], time.time_ns(), LinkLayer.HDLC, raw)))
            while sub.poll(300):
                s.recorded.append(sub.recv_multipart())  # what the publishers get next
            return len(s.recorded) >= 3
        return decoder_step, [push, sub]
    if kind == "supervisord":
        return (lambda: (s.rundir / "supervisord.pid").exists()), []
    pub = ctx.socket(zmq.PUB)
    pub.bind(readings)
    mqtt = MqttCount(s.broker.port) if kind == "mqtt" else None
    start = s.journal.entries
    sent = [0]

    def publisher_step() -> bool:
        pub.send_multipart(s.recorded[sent[0] % len(s.recorded)])
        sent[0] += 1
        time.sleep(0.3)
        if kind == "csv":
            return sent[0] > 3 and any(p.stat().st_size for p in (s.rundir / "csv").rglob("*.csv"))
        if mqtt is not None:
            return mqtt.messages >= 3
        return s.journal.entries - start >= 3
    return publisher_step, [pub] + ([mqtt] if mqtt is not None else [])


def measure_alone(s: Setup, kind: str, settle: float) -> dict[str, float]:
    import zmq

    ctx = zmq.Context.instance()
    ctx.linger = 0  # every socket of it closes at once
    step, held = feeder(s, kind, ctx)
    proc, log = start_alone(s, kind)
    try:
        wait_until(f"{kind} alone", step, 45, proc, log)
        time.sleep(settle)
        wait_until(f"{kind} alone", lambda: proc.poll() is None, 0, proc, log)  # still running?
        return memory(proc.pid)
    finally:
        stop_process(proc)
        for thing in held:
            thing.close()


# --- the running set ----------------------------------------------------------------


def measure_set(s: Setup, seconds: float, settle: float) -> dict[str, dict[str, float]]:
    sup = bench_supervisor(s.rundir, s.config)
    mqtt = MqttCount(s.broker.port)
    start = s.journal.entries
    try:
        pids = running_set(sup)  # supervisord and every program: readers, decoder, csv, mqtt, journal
        deadline = time.monotonic() + 90
        while not (mqtt.messages and s.journal.entries > start):  # start-up, connections
            if time.monotonic() > deadline:
                raise RuntimeError("running set: no readings after 90 s:\n" + sup.output()[-3000:])
            s.push_all()
            time.sleep(1.0)
        for _ in range(int(seconds)):
            s.push_all()
            time.sleep(1.0)
        time.sleep(settle)
        dead = [n for n, pid in pids.items() if not os.path.exists(f"/proc/{pid}")]
        if dead:
            raise RuntimeError(f"running set: {', '.join(dead)} gone before the measurement")
        return {name: memory(pid) for name, pid in sorted(pids.items())}
    finally:
        mqtt.close()
        sup.stop()


# --- bytecode, report ---------------------------------------------------------------


@contextmanager
def bytecode(condition: str) -> Iterator[None]:
    """Run in ``condition``; the __pycache__ folders made for ``cached`` are removed afterwards."""
    import compileall
    import importlib.util
    import shutil
    from unittest import mock

    specs = [importlib.util.find_spec(f"meterpipe.{name}") for name in PACKAGES]
    dirs = [Path(next(iter(sp.submodule_search_locations))) for sp in specs if sp and sp.submodule_search_locations]
    before = {p for d in dirs for p in d.rglob("__pycache__")}
    if condition == "source" and before:
        raise RuntimeError(f"cannot measure 'source': meterpipe's modules have bytecode here ({min(before)})")
    try:
        with mock.patch.dict(os.environ, {"PYTHONDONTWRITEBYTECODE": "1"}):  # no process writes any
            if condition == "cached":
                for d in dirs:
                    compileall.compile_dir(d, quiet=1)
            yield
    finally:
        for path in {p for d in dirs for p in d.rglob("__pycache__")} - before:
            shutil.rmtree(path, ignore_errors=True)


def measure(args: argparse.Namespace, condition: str) -> dict[str, Any]:
    with bytecode(condition):
        s = Setup(1)
        try:
            alone = {kind: measure_alone(s, kind, args.settle) for kind in KINDS}
        finally:
            s.close()
        s = Setup(args.meters)
        try:
            together = measure_set(s, args.seconds, args.settle)
        finally:
            s.close()
    rows = {}
    for kind in KINDS:
        procs = [v for n, v in together.items() if n == kind or (kind == "reader" and n.startswith("reader-"))]
        rows[kind] = {"standalone": alone[kind], "running_set": {
            "count": len(procs), **{k: max(p[k] for p in procs) for k in ("pss_mb", "anon_mb", "rss_mb")}}}
    return {"per_kind": rows, "running_set": together, "reader_pss_mb_max": rows["reader"]["running_set"]["pss_mb"],
            "running_set_pss_mb": round(sum(v["pss_mb"] for v in together.values()), 1)}


def cell(m: dict[str, Any]) -> str:
    count = m.get("count", 1)
    return f"{m['pss_mb']:.1f} ({m['anon_mb']:.1f})" + (f" max of {count}" if count > 1 else "")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--meters", type=int, default=1, help="readers in the running set (default 1)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds of pushes before measuring (default 8)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds after the last push (default 2)")
    p.add_argument("--bytecode", choices=("cached", "source", "both"), default="both",
                   help="default both; the target applies to cached when it is measured")
    args = p.parse_args(argv)
    if args.meters < 1 or args.seconds < 0 or args.settle < 0:
        p.error("--meters must be >= 1, --seconds and --settle >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started, t = now_utc(), time.monotonic()
    conditions = ["source", "cached"] if args.bytecode == "both" else [args.bytecode]  # source before compiling
    try:
        results = {c: measure(args, c) for c in conditions}
    except RuntimeError as exc:
        print(f"error: {exc}")
        return 1
    order = sorted(results)  # cached, source
    gate, reader_max = order[0], results[order[0]]["reader_pss_mb_max"]
    ok = reader_max <= TARGET_READER_PSS_MB
    print(f"PSS in MB per process (in parentheses its Pss_Anon, which no other process shares); the running "
          f"set is supervisord, decoder, csv, mqtt, journal and {args.meters} reader(s)")
    print("\n".join(f"  {c}: {CONDITIONS[c]}" for c in order))
    print(f"  {'':<12}" + "".join(f" {c + ', standalone':>22} {c + ', running set':>24}" for c in order))
    for kind in KINDS:
        row = {c: results[c]["per_kind"][kind] for c in order}
        print(f"  {kind:<12}" + "".join(f" {cell(row[c]['standalone']):>22} {cell(row[c]['running_set']):>24}"
                                        for c in order))
    print(f"  {'all':<12}" + "".join(f" {'':>22} {results[c]['running_set_pss_mb']:>24.1f}" for c in order))
    others = "".join(f"; {c}: {results[c]['reader_pss_mb_max']:.1f} MB" for c in order[1:])
    print(f"reader in the running set ({gate}): {reader_max:.1f} MB PSS [target <= {TARGET_READER_PSS_MB:g} MB: "
          f"{'met' if ok else 'MISSED'}]{others}")
    print(json.dumps({
        "benchmark": "memory", "conditions": results, "gate": gate, "reader_pss_mb_max": reader_max,
        "target": {"reader_pss_mb": TARGET_READER_PSS_MB}, "target_met": ok,
        "settings": {"meters": args.meters, "seconds": args.seconds, "settle_s": args.settle, "model": "e450",
                     "security": "0x20 (encrypted, no auth key)", "bytecode": {c: CONDITIONS[c] for c in order}},
        "date": started, "wall_s": round(time.monotonic() - t, 1), "machine": machine(),
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
