"""At rest in the demo set: what the history and web processes add (issue 10).

Runs ``meterpipe demo`` as a user does (two simulated meters pushing every
``--interval`` seconds, a week of backfilled history, the web page on a free
loopback port) in a private runtime directory, waits until every program runs
and the first minute has been committed, then samples every program's CPU
seconds (utime + stime of /proc/PID/stat) over ``--seconds`` and its PSS
(/proc/PID/smaps_rollup) at the end. Two windows: nobody looking at the page,
then one browser-like client holding the ``/events`` stream open (the Now page).
The simulators are part of the demo but not of an installation: they are
listed, not counted.

    python benchmarks/demo_rest.py [--seconds 120] [--interval 1]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _harness import PY, ROOT, cpu_seconds, machine, now_utc, pss_kb, rnd

from tests.support import cleanup, free_port, short_dir, stop_process

NEW = ("history", "web")


def program_pids(rundir: Path) -> dict[str, int]:
    from meterpipe.deploy.supervise import supervisorctl

    out = supervisorctl(rundir, "status", capture=True).stdout
    return {m.group(1).rpartition(":")[2]: int(m.group(2))
            for m in re.finditer(r"^(\S+)\s+RUNNING\s+pid (\d+),", out, re.M)}


def window(pids: dict[str, int], seconds: float) -> dict[str, dict[str, float]]:
    first = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    return {name: {"cpu_pct": 100 * (cpu_seconds(pid) - first[name]) / elapsed, "pss_mb": pss_kb(pid) / 1024}
            for name, pid in pids.items()}


def hold_events(port: int, stop: threading.Event) -> threading.Thread:
    """One client on /events, reading every event, as the Now page does."""
    def run() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
            s.settimeout(1.0)
            while not stop.is_set():
                try:
                    if not s.recv(65536):
                        return
                except TimeoutError:
                    continue
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def summary(sample: dict[str, dict[str, float]]) -> dict[str, Any]:
    installed = {k: v for k, v in sample.items() if not k.startswith("simulator-")}
    new = {k: v for k, v in installed.items() if k in NEW}
    return {
        "per_program": {k: {"cpu_pct": rnd(v["cpu_pct"], 3), "pss_mb": rnd(v["pss_mb"], 1)} for k, v in sample.items()},
        "set_cpu_pct": rnd(sum(v["cpu_pct"] for v in installed.values()), 3),
        "set_pss_mb": rnd(sum(v["pss_mb"] for v in installed.values()), 1),
        "history_web_cpu_pct": rnd(sum(v["cpu_pct"] for v in new.values()), 3),
        "history_web_pss_mb": rnd(sum(v["pss_mb"] for v in new.values()), 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = short_dir("mp-rest-")
    env = {**os.environ, "METERPIPE_RUNTIME_DIR": str(work / "rt")}
    port = free_port()
    command = [PY, "-m", "meterpipe.deploy.cli", "demo", "--data-dir", str(work / "data"), "--interval",
               str(args.interval), "--web", f"127.0.0.1:{port}", "--history-days", str(args.history_days)]
    log = open(work / "demo.out", "wb")  # noqa: SIM115 - closed below
    started = time.monotonic()
    demo = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        rundir = work / "rt" / "demo"
        deadline = time.monotonic() + 120
        while True:
            pids = program_pids(rundir) if (rundir / "supervisor.sock").exists() else {}
            if {"decoder", "history", "web", "csv"} <= set(pids) and len(pids) >= 7:
                break
            if time.monotonic() > deadline or demo.poll() is not None:
                raise RuntimeError("the demo did not start every program; see " + str(work / "demo.out"))
            time.sleep(0.5)
        up_s = time.monotonic() - started
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/meters", timeout=10) as r:
            meters = json.load(r)
        time.sleep(args.settle)
        idle = window(pids, args.seconds)
        stop = threading.Event()
        hold_events(port, stop)
        time.sleep(2)
        watched = window(pids, args.seconds)
        stop.set()
        return {"benchmark": "demo_rest", "machine": machine(), "when": now_utc(), "seconds": args.seconds,
                "interval_s": args.interval, "history_days": args.history_days, "up_s": rnd(up_s, 1),
                "meters": [m.get("meter") for m in meters],
                "at_rest": summary(idle), "one_events_client": summary(watched)}
    finally:
        stop_process(demo, timeout=30)
        log.close()
        if not args.keep:
            cleanup(work)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="length of each sampling window")
    parser.add_argument("--settle", type=float, default=70.0, help="wait this long first (a minute commit)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pushes of each meter")
    parser.add_argument("--history-days", type=float, default=7.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    result = run(parser.parse_args(argv))
    for label in ("at_rest", "one_events_client"):
        s = result[label]
        print(f"{label:18s} history+web: {s['history_web_cpu_pct']:.3f} % CPU, {s['history_web_pss_mb']:.1f} MB PSS;"
              f" whole set (no simulators): {s['set_cpu_pct']:.3f} % CPU, {s['set_pss_mb']:.1f} MB PSS")
        for name, v in sorted(s["per_program"].items()):
            print(f"    {name:16s} {v['cpu_pct']:7.3f} %  {v['pss_mb']:6.1f} MB")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
