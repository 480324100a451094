"""Scale: many meters into one decoder and the CSV publisher.

* N = 10 and N = 100 (``--pty-meters``): real reader processes under
  supervisord (as ``meterpipe run`` starts them, with the decoder and the CSV
  publisher; MQTT off), each on its own pty. This process is the meters: it
  writes every meter's push to its pty master, one push per meter per second,
  spread evenly over the second.
* N = 1,000 (``--tcp-meters``): no readers. This process PUSHes
  ``meterpipe.common.schema.Frame`` messages (``encode_frame``) over
  ``tcp://127.0.0.1:PORT`` (the decoder's frames endpoint), from 10 PUSH sockets
  as readers on 10 hosts would, non-blocking (a full queue counts as a drop, as
  a reader's bounded outbox would). Then the rate per meter is ramped
  (``--ramp``, pushes per second per meter) until the pipeline saturates.

Every push is a Landis+Gyr E450 push (4 HDLC frames, GBT blocks, encrypted
with a key, security 0x20). The bytes come from 10 ``MeterSimulator``s,
generated before the clock starts; meter i sends simulator i % 10's pushes in
order (each meter has its own decoder state, invocation counters and replay
check, so the decoder does the full work for every push).

A ZeroMQ subscriber in a separate process (this script with ``--subscriber``)
records every ``reading/<meter>`` with its arrival time. Figures per stage:
pushes sent, readings out, per-meter ``seq`` gaps at the subscriber, latency
(last byte written to the pty, or the send of the last frame, -> reading at the
subscriber), CPU (% of one core) and PSS per process.

    python benchmarks/scale.py [--pty-meters 10,100] [--tcp-meters 1000] [--ramp 1.5,2,3]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _harness as h  # first: puts the repository root on sys.path for tests.support

from tests.support import cleanup, free_port, short_dir, stop_process, write_config, write_secret

T0 = dt.datetime(2024, 1, 1, 0, 0, 0)
SIMS = 10
SOCKETS = 10
TARGET_P99_MS = 100.0


# --- the subscriber process ---------------------------------------------------------


def subscriber_main(endpoint: str, out: Path) -> int:
    import zmq

    from meterpipe.common.schema import decode_readings

    stop = False

    def handle(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handle)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 1_000_000)
    sub.setsockopt(zmq.SUBSCRIBE, b"reading/")
    sub.connect(endpoint)
    with open(out, "w") as f:
        f.write("ready\n")
        f.flush()
        while not stop:
            if not sub.poll(100):
                continue
            rows: list[str] = []
            while len(rows) < 5000:
                try:
                    _, payload = sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                now = time.time_ns()
                msg = decode_readings(payload)
                rows.append(f"{msg.meter} {msg.seq} {msg.received_ns} {msg.push.time} {now}\n")
            f.writelines(rows)
            f.flush()
    sub.close()
    ctx.term()
    return 0


@dataclass
class Row:
    meter: str
    seq: int
    rx: int
    time: str
    arrival: int


class Subscriber:
    def __init__(self, rundir: Path, endpoint: str) -> None:
        self.out = rundir / "subscriber.txt"
        self.proc = subprocess.Popen([h.PY, __file__, "--subscriber", endpoint, str(self.out)])
        deadline = time.monotonic() + 20
        while not (self.out.exists() and self.out.read_text().startswith("ready")):
            if time.monotonic() > deadline:
                raise RuntimeError("subscriber did not start")
            time.sleep(0.05)

    def count(self) -> int:
        """Readings recorded so far."""
        with open(self.out, "rb") as f:
            return sum(1 for _ in f) - 1

    def wait_quiet(self, expect: int, quiet_s: float = 2.0, cap_s: float = 10.0) -> float:
        """Wait until ``expect`` readings are in, or none came for ``quiet_s`` (cap ``cap_s``); return the wait."""
        t0 = time.monotonic()
        last, last_change = self.count(), t0
        while time.monotonic() - t0 < cap_s:
            time.sleep(0.2)
            n = self.count()
            if n >= expect:
                break
            if n != last:
                last, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > quiet_s:
                break
        return time.monotonic() - t0

    def finish(self) -> list[Row]:
        stop_process(self.proc, timeout=60)
        rows = []
        for line in self.out.read_text().splitlines()[1:]:
            meter, seq, rx, when, arrival = line.split(" ")
            rows.append(Row(meter, int(seq), int(rx), when, int(arrival)))
        return rows


# --- load ---------------------------------------------------------------------------


def make_pushes(count: int, key: bytes) -> list[list[tuple[bytes, ...]]]:
    """pushes[s][k]: the frames of push k of simulator s (meter clock T0 + k s)."""
    from meterpipe.simulator.meter import MeterSimulator

    sims = [MeterSimulator("e450", key=key, seed=s) for s in range(SIMS)]
    return [[sim.push(T0 + dt.timedelta(seconds=k)).frames for k in range(count)] for sim in sims]


def wait_until(when: float) -> None:
    while (left := when - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


def schedule(n: int, rate: float, seconds: float, start: float) -> list[tuple[float, int]]:
    """(due time, meter index) for every push: each meter ``rate`` per second, spread evenly."""
    period = 1.0 / rate
    events = [(start + k * period + (i / n) * period, i) for k in range(int(seconds * rate)) for i in range(n)]
    events.sort()
    return events


@dataclass
class StageResult:
    label: str
    meters: int
    rate: float
    seconds: float
    sent: int
    send_failed: int
    first_ns: int
    last_ns: int
    send_lag_ms: float  # how far the generator fell behind its schedule at worst
    usage: dict[str, dict[str, float]]
    sent_keys: dict[tuple[str, str], int] | None = None  # pty mode: (meter, meter time) -> write ns


def stage_figures(st: StageResult, rows: list[Row], gaps: dict[str, int]) -> dict[str, Any]:
    mine = [r for r in rows if st.first_ns <= r.rx <= st.last_ns] if st.sent_keys is None \
        else [r for r in rows if (r.meter, r.time) in st.sent_keys]
    if st.sent_keys is None:
        lat = [(r.arrival - r.rx) / 1e6 for r in mine]
    else:
        lat = [(r.arrival - st.sent_keys[(r.meter, r.time)]) / 1e6 for r in mine]
    last_arrival = max((r.arrival for r in mine), default=st.last_ns)
    span = max(st.seconds, (last_arrival - st.first_ns) / 1e9)  # keeping up: offered rate
    out: dict[str, Any] = {
        "label": st.label, "meters": st.meters, "pushes_per_meter_per_s": st.rate, "seconds": st.seconds,
        "offered_pushes_per_s": round(st.meters * st.rate, 1),
        "sent": st.sent, "send_failed": st.send_failed, "readings_out": len(mine),
        "dropped": st.sent - len(mine), "seq_gaps_missing": sum(gaps.values()),
        "sustained_pushes_per_s": round(len(mine) / span, 1) if span > 0 else None,
        "p50_ms": h.rnd(h.percentile(lat, 50)), "p99_ms": h.rnd(h.percentile(lat, 99)),
        "max_ms": h.rnd(max(lat) if lat else None), "generator_lag_ms": round(st.send_lag_ms, 1),
        "usage": st.usage,
    }
    windows: dict[int, list[float]] = defaultdict(list)
    sends = [r.rx for r in mine] if st.sent_keys is None else [st.sent_keys[(r.meter, r.time)] for r in mine]
    for sent_ns, ms in zip(sends, lat):
        windows[int((sent_ns - st.first_ns) // 5_000_000_000)].append(ms)
    out["p99_ms_per_5s"] = [h.rnd(h.percentile(windows[w], 99), 1) for w in sorted(windows)]
    out["ok"] = out["dropped"] == 0 and out["seq_gaps_missing"] == 0 and \
        out["p99_ms"] is not None and out["p99_ms"] < TARGET_P99_MS
    return out


def seq_gaps(rows: list[Row], window: tuple[int, int] | None = None) -> dict[str, int]:
    """Per meter, pushes missing between consecutive seq numbers (optionally only gaps closed in a rx window)."""
    by_meter: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_meter[r.meter].append(r)
    gaps = {}
    for meter, rs in by_meter.items():
        rs.sort(key=lambda r: r.seq)
        missing = 0
        for a, b in itertools.pairwise(rs):
            if b.seq - a.seq > 1 and (window is None or window[0] <= b.rx <= window[1]):
                missing += b.seq - a.seq - 1
        if missing:
            gaps[meter] = missing
    return gaps


def summarise_usage(usage: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Readers folded into one line (sum) plus the busiest one."""
    out: dict[str, dict[str, float]] = {}
    readers = {k: v for k, v in usage.items() if k.startswith("reader-")}
    for k, v in usage.items():
        if not k.startswith("reader-"):
            out[k] = v
    if readers:
        out[f"readers ({len(readers)}, sum)"] = {
            "cpu_pct": round(sum(v["cpu_pct"] for v in readers.values()), 2),
            "pss_mb": round(sum(v["pss_mb"] for v in readers.values()), 1),
            "rss_mb": round(sum(v["rss_mb"] for v in readers.values()), 1),
            "cpu_s": round(sum(v["cpu_s"] for v in readers.values()), 2)}
        top = max(readers, key=lambda k: readers[k]["cpu_pct"])
        out[f"busiest reader ({top})"] = readers[top]
    return out


def pty_run(n: int, seconds: float, key: bytes, pushes: list[list[tuple[bytes, ...]]]) -> dict[str, Any]:
    rundir = short_dir("mps-")
    ptys = [h.Pty() for _ in range(n)]
    key_file = write_secret(rundir / "key", key)
    meters = [h.meter_entry(f"m{i}", p.path, key_file) for i, p in enumerate(ptys)]
    config = write_config(rundir, meters, csv_dir=rundir / "csv")
    sup = h.bench_supervisor(rundir, config)
    sub: Subscriber | None = None
    try:
        pids = h.running_set(sup, timeout=180)
        sub = Subscriber(rundir, f"ipc://{rundir}/readings")
        pids["generator (this process)"] = os.getpid()
        pids["subscriber"] = sub.proc.pid
        # warm-up: push 0 to every meter until every reader delivered it
        deadline = time.monotonic() + 120
        seen: set[str] = set()
        while True:
            for i, p in enumerate(ptys):
                if f"m{i}" not in seen:
                    p.write(b"".join(pushes[i % SIMS][0]))
            time.sleep(2.0)
            seen = delivered_meters(rundir)
            if len(seen) == n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(seen)} of {n} meters delivered after 120 s")
        time.sleep(1.0)
        start = time.monotonic() + 0.5
        events = schedule(n, 1.0, seconds, start)
        first = h.sample(pids)
        sent_keys: dict[tuple[str, str], int] = {}
        count = [1] * n
        lag = 0.0
        first_ns = time.time_ns()
        for due, i in events:
            wait_until(due)
            lag = max(lag, time.monotonic() - due)
            k = count[i]
            count[i] += 1
            sent_keys[(f"m{i}", (T0 + dt.timedelta(seconds=k)).isoformat())] = ptys[i].write(
                b"".join(pushes[i % SIMS][k]))
        last_ns = time.time_ns()
        time.sleep(0.5)
        sub.wait_quiet(len(events) + n)
        usage = h.usage(first, h.sample(pids))
        rows = sub.finish()
        sub = None
    finally:
        if sub is not None:
            stop_process(sub.proc)
        sup.stop()
        for p in ptys:
            p.close()
        cleanup(rundir)
    st = StageResult(f"{n} meters, readers on ptys", n, 1.0, seconds, len(events), 0, first_ns, last_ns,
                     lag * 1000, summarise_usage(usage), sent_keys)
    measured = [r for r in rows if (r.meter, r.time) in sent_keys]
    return stage_figures(st, measured, seq_gaps(rows, (first_ns, last_ns + 5_000_000_000)))


def delivered_meters(rundir: Path) -> set[str]:
    """Meters whose readings reached the CSV publisher (one folder per meter)."""
    csv_dir = rundir / "csv"
    return {d.name for d in csv_dir.iterdir()} if csv_dir.exists() else set()


def tcp_run(n: int, seconds: float, ramp: list[float], ramp_seconds: float, key: bytes,
            pushes: list[list[tuple[bytes, ...]]]) -> list[dict[str, Any]]:
    import zmq

    from meterpipe.common.schema import Frame, LinkLayer, encode_frame

    rundir = short_dir("mpt-")
    port = free_port()
    key_file = write_secret(rundir / "key", key)
    meters = [h.meter_entry(f"m{i}", f"/dev/null-m{i}", key_file) for i in range(n)]
    config = write_config(rundir, meters, frames=f"tcp://127.0.0.1:{port}", csv_dir=rundir / "csv")
    sup = h.bench_supervisor(rundir, config, readers=False)
    ctx = zmq.Context()
    socks = []
    sub: Subscriber | None = None
    results = []
    try:
        pids = h.running_set(sup, timeout=60)
        sub = Subscriber(rundir, f"ipc://{rundir}/readings")
        pids["generator (this process)"] = os.getpid()
        pids["subscriber"] = sub.proc.pid
        for _ in range(SOCKETS):
            s = ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 10_000)
            s.connect(f"tcp://127.0.0.1:{port}")
            socks.append(s)
        time.sleep(2.5)  # decoder's subscriber grace, connections up
        names = [f"m{i}" for i in range(n)]
        fseq = [0] * n
        kpush = [0] * n
        stages = [(1.0, seconds)] + [(r, ramp_seconds) for r in ramp]
        sent_total = 0
        for rate, secs in stages:
            start = time.monotonic() + 0.2
            events = schedule(n, rate, secs, start)
            first = h.sample(pids)
            failed = 0
            lag = 0.0
            first_ns = time.time_ns()
            send = [s.send for s in socks]
            for due, i in events:
                if due > time.monotonic():
                    wait_until(due)
                else:
                    lag = max(lag, time.monotonic() - due)
                frames = pushes[i % SIMS][kpush[i] % len(pushes[0])]
                kpush[i] += 1
                sock_send = send[i % SOCKETS]
                for data in frames:
                    fseq[i] += 1
                    payload = encode_frame(Frame(names[i], fseq[i], time.time_ns(), LinkLayer.HDLC, data))
                    try:
                        sock_send(payload, zmq.NOBLOCK)
                    except zmq.Again:
                        failed += 1
            last_ns = time.time_ns()
            sent_total += len(events)
            # CPU over the sending window plus the time the pipeline needs to catch up
            sub.wait_quiet(sent_total)
            usage = h.usage(first, h.sample(pids))
            results.append(StageResult(f"{n} meters x {rate:g}/s over tcp", n, rate, secs, len(events), failed,
                                       first_ns, last_ns, lag * 1000, usage))
            behind = sent_total - sub.count()
            if behind > 0.01 * len(events):
                print(f"# {behind} pushes still missing at {n * rate:g} pushes/s offered: ramp stops here",
                      flush=True)
                break
        rows = sub.finish()
        sub = None
    finally:
        if sub is not None:
            stop_process(sub.proc)
        for s in socks:
            s.close(0)
        ctx.term()
        sup.stop()
        cleanup(rundir)
    out = []
    for st in results:
        gaps = seq_gaps(rows, (st.first_ns, st.last_ns + 2_000_000_000))
        out.append(stage_figures(st, rows, gaps))
    return out


def line(fig: dict[str, Any]) -> str:
    return (f"{fig['label']}: offered {fig['offered_pushes_per_s']:g} pushes/s, sustained "
            f"{fig['sustained_pushes_per_s']} pushes/s; sent {fig['sent']}, readings out {fig['readings_out']}, "
            f"dropped {fig['dropped']} (send failures {fig['send_failed']}, seq gaps {fig['seq_gaps_missing']}); "
            f"latency p50 {fig['p50_ms']} ms, p99 {fig['p99_ms']} ms, max {fig['max_ms']} ms; "
            f"generator lag max {fig['generator_lag_ms']} ms; p99 per 5 s of sending {fig['p99_ms_per_5s']} ms")


def usage_lines(fig: dict[str, Any]) -> list[str]:
    return [f"    {name}: {u['cpu_pct']:.1f} % of one core, PSS {u['pss_mb']} MB"
            for name, u in fig["usage"].items()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--pty-meters", default="10,100", help="meter counts with reader processes (default 10,100; '' for none)")
    p.add_argument("--pty-seconds", type=float, default=10, help="seconds per pty run (default 10)")
    p.add_argument("--tcp-meters", type=int, default=1000, help="meters of the tcp load generator (default 1000; 0 for none)")
    p.add_argument("--tcp-seconds", type=float, default=20, help="seconds at one push per meter per second (default 20)")
    p.add_argument("--ramp", default="1.5,2,3", help="then pushes per meter per second, each stage, until one falls behind (default 1.5,2,3)")
    p.add_argument("--ramp-seconds", type=float, default=5, help="seconds per ramp stage (default 5)")
    p.add_argument("--subscriber", nargs=2, metavar=("ENDPOINT", "FILE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.subscriber:
        return subscriber_main(args.subscriber[0], Path(args.subscriber[1]))
    started = h.now_utc()
    t = time.monotonic()
    load_before = h.loadavg()
    key = os.urandom(16)
    pty_counts = [int(x) for x in args.pty_meters.split(",") if x.strip()]
    ramp = [float(x) for x in args.ramp.split(",") if x.strip()]
    per_meter = int(max(args.pty_seconds + 2, args.tcp_seconds + sum(r * args.ramp_seconds for r in ramp))) + 2
    pushes = make_pushes(per_meter, key)
    figures = []
    try:
        for n in pty_counts:
            fig = pty_run(n, args.pty_seconds, key, pushes)
            figures.append(fig)
            print(line(fig), flush=True)
            print("\n".join(usage_lines(fig)), flush=True)
        if args.tcp_meters:
            for fig in tcp_run(args.tcp_meters, args.tcp_seconds, ramp, args.ramp_seconds, key, pushes):
                figures.append(fig)
                print(line(fig), flush=True)
                print("\n".join(usage_lines(fig)), flush=True)
    except RuntimeError as exc:
        print(f"error: {exc}")
        return 1
    target = next((f for f in figures if f["meters"] == 1000 and f["pushes_per_meter_per_s"] == 1.0), None)
    ok = bool(target and target["ok"])
    if target:
        print(f"target 1,000 meters x 1 push/s, no drop, p99 < {TARGET_P99_MS:g} ms: "
              f"{'met' if ok else 'MISSED'} (dropped {target['dropped']}, p99 {target['p99_ms']} ms)")
    sat = next((f for f in figures if not f["ok"]), None)
    if sat:
        busiest = max(((k, v["cpu_pct"]) for k, v in sat["usage"].items()), key=lambda kv: kv[1])
        print(f"first stage that misses (drop, gap or p99 >= {TARGET_P99_MS:g} ms): {sat['label']}; "
              f"busiest process {busiest[0]} at {busiest[1]:.0f} % of one core")
    load_after = h.loadavg()
    print(f"load average before {load_before}, after {load_after}")
    print(json.dumps({"benchmark": "scale", "stages": figures, "target_met": ok, "target_p99_ms": TARGET_P99_MS,
                      "settings": {"pty_meters": pty_counts, "pty_seconds": args.pty_seconds,
                                   "tcp_meters": args.tcp_meters, "tcp_seconds": args.tcp_seconds,
                                   "ramp": ramp, "ramp_seconds": args.ramp_seconds, "model": "e450",
                                   "security": "0x20", "frames_per_push": 4, "publishers": "csv"},
                      "load_before": load_before, "load_after": load_after,
                      "date": started, "wall_s": round(time.monotonic() - t, 1), "machine": h.machine()}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
