"""At rest: CPU and memory of a whole installation with one meter pushing every 5 s.

meterpipe runs as ``meterpipe run`` starts it: supervisord (deploy/supervisord.conf)
with the decoder, the CSV publisher, the MQTT publisher (to a local mosquitto)
and one reader. The reference (smartmeter-datacollector 2.0.0, one asyncio
process, type lge450 with its MQTT sink to the same mosquitto) runs beside it
in the same run. Both read the same simulated Landis+Gyr E450 (the pushes are
written by this process to one pty each, at the same moment): encrypted with a
key, no authentication key (security 0x20), since the reference has no
authentication-key setting.

The processes measured are the ones the config starts, found by name through
supervisord: the run waits until every program of the config (the decoder, the
enabled publishers, one reader per meter) is RUNNING, and fails (exit 1, naming
it) when one of them is not, or is missing from a sample. After the processes
are up and a first push went through both, CPU seconds
(utime + stime from /proc/PID/stat, all threads) are sampled at the start and
at the end of a window of ``--seconds``, and PSS (``Pss`` of
/proc/PID/smaps_rollup) at the end. mosquitto and this process (the meter) are
not counted.

    python benchmarks/at_rest.py [--seconds 300] [--interval 5] [--no-reference]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _harness as h

TARGET_CPU_PCT = 0.5
TARGET_PSS_MB = 120.0
METER = "m1"
PROFILE_DIR = Path("/tmp/meterpipe-at-rest-profile")


class Delivered:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mp = 0
        self.ref = 0

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            if msg.topic.startswith("meterpipe/"):
                self.mp += 1
            else:
                self.ref += 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    side = h.side_by_side("mpa-", METER, 5, args.interval, reference=not args.no_reference)
    _, sim, mp_pty, ref_pty, broker, sup, ref = side
    counter = Delivered()
    client = side.mqtt_client("bench-at-rest", counter.on_message)
    load_before = h.loadavg()
    pushes = 0

    def push() -> None:
        nonlocal pushes
        data = sim.push(dt.datetime.now()).data
        mp_pty.write(data)
        ref_pty.write(data)
        pushes += 1

    try:
        ref_pid = ref.start() if ref is not None else None
        pids = h.running_set(sup)  # supervisord, decoder, csv, mqtt, reader-m1: all the config starts
        client.connect("127.0.0.1", broker.port)
        client.subscribe([(f"meterpipe/{METER}/json", 0), ("smartmeter/+/CURRENT_L3", 0)])
        client.loop_start()
        deadline = time.monotonic() + 60
        while True:  # until both deliver a push (start-up, broker connections)
            push()
            time.sleep(1.0)
            with counter.lock:
                if counter.mp and (ref is None or counter.ref):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("no readings after 60 s:\n" + sup.output()[-3000:])
        time.sleep(args.settle)
        with counter.lock:
            counter.mp = counter.ref = 0
        pushes = 0
        watched = dict(pids)
        if ref_pid is not None:
            watched["reference"] = ref_pid
        spies = start_profilers(args.profile, pids, args.seconds) if args.profile else []
        first = h.sample(watched)
        start = time.monotonic()
        k = 0
        while True:
            k += 1
            target = start + k * args.interval
            if target > start + args.seconds:
                break
            while (left := target - time.monotonic()) > 0:
                time.sleep(left)
            push()
        while (left := start + args.seconds - time.monotonic()) > 0:
            time.sleep(left)
        last = h.sample(watched)
        counted = h.check_counted(list(pids), first, last)
        for proc in spies:
            proc.wait(timeout=60)
        time.sleep(0.5)
        client.loop_stop()
        client.disconnect()
        alive = {name: os.path.exists(f"/proc/{pid}") for name, pid in watched.items()}
    finally:
        side.close()
        load_after = h.loadavg()
    usage = h.usage(first, last)
    mp_names = [n for n in usage if n != "reference"]
    span = last.at - first.at
    mp_cpu_s = sum(usage[n]["cpu_s"] for n in mp_names)
    return {
        "window_s": round(span, 1), "pushes": pushes,
        "delivered": {"meterpipe": counter.mp, "reference": counter.ref},
        "meterpipe": {"processes": sorted(mp_names), "expected": sorted(counted), "cpu_s": round(mp_cpu_s, 3),
                      "cpu_pct": round(100 * mp_cpu_s / span, 3),
                      "pss_mb": round(sum(usage[n]["pss_mb"] for n in mp_names), 1),
                      "rss_mb": round(sum(usage[n]["rss_mb"] for n in mp_names), 1)},
        "reference": usage.get("reference"),
        "per_process": usage, "all_alive_at_end": all(alive.values()),
        "load_before": load_before, "load_after": load_after,
    }


def start_profilers(py_spy: str, pids: dict[str, int], seconds: float) -> list[subprocess.Popen[bytes]]:
    """py-spy record (collapsed stacks, 100 Hz, idle excluded) of every meterpipe process."""
    PROFILE_DIR.mkdir(exist_ok=True)
    for old in PROFILE_DIR.glob("*.txt"):
        old.unlink()
    procs = []
    for name, pid in pids.items():
        out = PROFILE_DIR / f"{name}.txt"
        procs.append(subprocess.Popen([py_spy, "record", "--format", "raw", "--rate", "100", "--nonblocking",
                                       "--duration", str(int(seconds)), "--pid", str(pid), "--output", str(out)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def profile_lines(top: int = 4) -> list[str]:
    """The busiest collapsed stacks (innermost 3 frames) per process, from the py-spy files."""
    lines = []
    for path in sorted(PROFILE_DIR.glob("*.txt")):
        counts: Counter[str] = Counter()
        for row in path.read_text().splitlines():
            stack, _, n = row.rpartition(" ")
            frames = stack.split(";")
            counts[" <- ".join(reversed(frames[-3:]))] += int(n)
        total = sum(counts.values())
        lines.append(f"  profile {path.stem}: {total} samples at 100 Hz while busy")
        for where, samples in counts.most_common(top):
            lines.append(f"    {samples:5d}  {where}")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = h.side_by_side_parser(__doc__)
    p.add_argument("--seconds", type=float, default=300, help="measured window (default 300)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between pushes (default 5)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after the first push before measuring")
    p.add_argument("--profile", metavar="PY_SPY", help="path of py-spy: sample every meterpipe process "
                   f"(collapsed stacks into {PROFILE_DIR}); this costs CPU, so not for the figures")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.interval <= 0:
        p.error("--seconds and --interval must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    res = h.attempt(run, args)
    if res is None:
        return 1
    mp, ref = res["meterpipe"], res["reference"]
    cpu_ok = mp["cpu_pct"] <= TARGET_CPU_PCT
    pss_ok = mp["pss_mb"] <= TARGET_PSS_MB
    print(f"window {res['window_s']} s, {res['pushes']} pushes written; delivered over MQTT: "
          f"meterpipe {res['delivered']['meterpipe']}, reference {res['delivered']['reference']}")
    print(f"meterpipe, all {len(mp['processes'])} processes ({', '.join(mp['processes'])}): "
          f"{mp['cpu_pct']:.3f} % of one core [target <= {TARGET_CPU_PCT} %: {'met' if cpu_ok else 'MISSED'}], "
          f"PSS {mp['pss_mb']} MB [target <= {TARGET_PSS_MB:g} MB: {'met' if pss_ok else 'MISSED'}] "
          f"(RSS {mp['rss_mb']} MB)")
    print(f"counted: {', '.join(mp['expected'])} (every process the config starts, in both samples)")
    for name in mp["processes"]:
        u = res["per_process"][name]
        print(f"  {name}: {u['cpu_pct']:.3f} % of one core ({u['cpu_s']} CPU s), PSS {u['pss_mb']} MB")
    if ref is not None:
        print(f"reference (1 process): {ref['cpu_pct']:.3f} % of one core ({ref['cpu_s']} CPU s), "
              f"PSS {ref['pss_mb']} MB (RSS {ref['rss_mb']} MB)")
    if args.profile:
        print("\n".join(profile_lines()))
    print(f"load average before {res['load_before']}, after {res['load_after']}")
    summary = {
        "benchmark": "at_rest", **res,
        "targets": {"cpu_pct": TARGET_CPU_PCT, "pss_mb": TARGET_PSS_MB},
        "target_met": {"cpu": cpu_ok, "pss": pss_ok},
        "settings": {"seconds": args.seconds, "interval_s": args.interval, "model": "e450",
                     "security": "0x20 (encrypted, no auth key) on both sides",
                     "meterpipe_set": "supervisord + reader + decoder + csv + mqtt (meterpipe run with CSV and MQTT)"},
    }
    print(json.dumps(summary))
    return 0 if cpu_ok and pss_ok else 1


if __name__ == "__main__":
    sys.exit(main())
