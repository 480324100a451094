"""End-to-end latency: last byte on the meter's line -> message at an MQTT subscriber.

One simulated Landis+Gyr E450 (``MeterSimulator`` in this process, encrypted
with a key, no authentication key: security 0x20, which the reference can
decode) writes every push to two ptys this process owns:

* meterpipe: reader -> decoder -> MQTT publisher (and the CSV publisher: the
  default set ``meterpipe run`` starts), all under supervisord -> mosquitto;
* reference: smartmeter-datacollector 2.0.0 (``python -m
  smartmeter_datacollector``, type lge450, MQTT sink) -> the same mosquitto.

A paho subscriber in this process takes the arrival time of
``meterpipe/<meter>/json`` (the last message meterpipe sends per push) and of
the reference's ``smartmeter/<id>/<TYPE>`` data points (it sends one per value;
the last one, CURRENT_L3, closes the push; the first, ACTIVE_ENERGY_P, is
reported too). Pushes are matched on the meter clock, which advances one second
per push. The reference's push is written half an interval after meterpipe's,
so the two pipelines do not wait for each other's CPU.

    python benchmarks/latency.py [--pushes 1000] [--interval 0.06] [--no-reference]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import _harness as h

METER = "m1"
T0 = dt.datetime(2024, 1, 1, 12, 0, 0)  # meter clock of push 0 (naive, as the meter sends it)
REF_LAST = "CURRENT_L3"
REF_FIRST = "ACTIVE_ENERGY_P"
TARGET_P99_MS = 20.0


class Arrivals:
    """MQTT messages as they arrive (time.time_ns() in paho's network thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mp: dict[str, tuple[int, float]] = {}  # meter time -> (arrival ns, reader receive s)
        self.ref: dict[tuple[int, str], int] = {}  # (meter timestamp, TYPE) -> arrival ns

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.time_ns()
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        with self.lock:
            if msg.topic.startswith("meterpipe/"):
                self.mp.setdefault(doc["time"], (now, doc["received"]))
            else:
                self.ref.setdefault((int(doc["timestamp"]), msg.topic.rsplit("/", 1)[1]), now)


def stats_ms(values_ns: list[int]) -> dict[str, float | None]:
    ms = [v / 1e6 for v in values_ns]
    return {"p50_ms": h.rnd(h.percentile(ms, 50)), "p99_ms": h.rnd(h.percentile(ms, 99)),
            "max_ms": h.rnd(max(ms) if ms else None), "n": len(ms)}


def fmt(s: dict[str, float | None]) -> str:
    return f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms over {s['n']} pushes"


def run(args: argparse.Namespace) -> dict[str, Any]:
    side = h.side_by_side("mpl-", METER, 7, args.interval, reference=not args.no_reference)
    _, sim, mp_pty, ref_pty, broker, sup, ref = side
    arrivals = Arrivals()
    client = side.mqtt_client("bench-latency", arrivals.on_message)
    load_before = h.loadavg()
    try:
        if ref is not None:
            ref.start()
        pids = h.running_set(sup)
        client.connect("127.0.0.1", broker.port)
        client.subscribe([(f"meterpipe/{METER}/json", 0), ("smartmeter/+/+", 0)])
        client.loop_start()
        total = args.warmup + args.pushes
        pushes = [sim.push(T0 + dt.timedelta(seconds=k)).data for k in range(total)]
        # wait until both pipelines deliver (processes starting, MQTT connecting)
        k = 0
        deadline = time.monotonic() + 60
        while True:
            mp_pty.write(pushes[0])
            ref_pty.write(pushes[0])
            time.sleep(0.5)
            with arrivals.lock:
                ready = bool(arrivals.mp) and (ref is None or bool(arrivals.ref))
            if ready:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("no readings after 60 s:\n" + sup.output()[-3000:]
                                   + ("" if ref is None else ref.output()[-2000:]))
        with arrivals.lock:
            arrivals.mp.clear()
            arrivals.ref.clear()
        sup_pids = h.sample(pids)
        written_mp: list[int] = []
        written_ref: list[int] = []
        start = time.monotonic() + 0.2
        for k in range(1, total):
            target = start + k * args.interval
            while (left := target - time.monotonic()) > 0:
                time.sleep(left)
            written_mp.append(mp_pty.write(pushes[k]))
            if ref is not None:
                target += args.interval / 2
                while (left := target - time.monotonic()) > 0:
                    time.sleep(left)
                written_ref.append(ref_pty.write(pushes[k]))
        time.sleep(2.0)
        usage = h.usage(sup_pids, h.sample(pids))
        client.loop_stop()
        client.disconnect()
    finally:
        side.close()
        load_after = h.loadavg()

    measured = range(args.warmup, total - 1)  # index into written_*: push k is written_*[k - 1]
    mp_lat, rx_lat, pub_lat, ref_last, ref_first = [], [], [], [], []
    mp_lost = ref_lost = 0
    for i in measured:
        when = T0 + dt.timedelta(seconds=i + 1)
        got = arrivals.mp.get(when.isoformat())
        if got is None:
            mp_lost += 1
        else:
            mp_lat.append(got[0] - written_mp[i])
            rx_lat.append(int(got[1] * 1e9) - written_mp[i])
            pub_lat.append(got[0] - int(got[1] * 1e9))
        if ref is not None:
            stamp = int(when.timestamp())
            last = arrivals.ref.get((stamp, REF_LAST))
            first = arrivals.ref.get((stamp, REF_FIRST))
            if last is None:
                ref_lost += 1
            else:
                ref_last.append(last - written_ref[i])
            if first is not None:
                ref_first.append(first - written_ref[i])
    return {
        "meterpipe": {**stats_ms(mp_lat), "lost": mp_lost,
                      "write_to_reader_rx": stats_ms(rx_lat), "reader_rx_to_subscriber": stats_ms(pub_lat)},
        "reference": None if ref is None else {
            "last_data_point": {**stats_ms(ref_last), "lost": ref_lost},
            "first_data_point": stats_ms(ref_first)},
        "process_usage": usage,
        "load_before": load_before, "load_after": load_after,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = h.side_by_side_parser(__doc__)
    p.add_argument("--pushes", type=int, default=1000, help="measured pushes (default 1000)")
    p.add_argument("--interval", type=float, default=0.06, help="seconds between pushes (default 0.06)")
    p.add_argument("--warmup", type=int, default=20, help="pushes before the measured ones (default 20)")
    args = p.parse_args(argv)
    if args.pushes < 1 or args.interval < 0.02:
        p.error("--pushes must be >= 1 and --interval >= 0.02")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    res = h.attempt(run, args)
    if res is None:
        return 1
    mp, ref = res["meterpipe"], res["reference"]
    ok = mp["p99_ms"] is not None and mp["p99_ms"] <= TARGET_P99_MS
    if ref is not None:
        r = ref["last_data_point"]["p99_ms"]
        ok = ok and (r is None or mp["p99_ms"] < r)
    print(f"meterpipe (pty -> MQTT json): {fmt(mp)}, {mp['lost']} lost "
          f"[target p99 <= {TARGET_P99_MS:g} ms and below the reference: {'met' if ok else 'MISSED'}]")
    print(f"  of which pty -> reader receive stamp: {fmt(mp['write_to_reader_rx'])}")
    print(f"  of which reader receive stamp -> subscriber: {fmt(mp['reader_rx_to_subscriber'])}")
    if ref is not None:
        print(f"reference (pty -> last data point {REF_LAST}): {fmt(ref['last_data_point'])}, "
              f"{ref['last_data_point']['lost']} lost")
        print(f"reference (pty -> first data point {REF_FIRST}): {fmt(ref['first_data_point'])}")
    for name, u in sorted(res["process_usage"].items()):
        print(f"  {name}: {u['cpu_pct']:.2f} % of one core, PSS {u['pss_mb']} MB")
    print(f"load average before {res['load_before']}, after {res['load_after']}")
    summary = {
        "benchmark": "latency", **res, "target_p99_ms": TARGET_P99_MS, "target_met": ok,
        "settings": {"pushes": args.pushes, "interval_s": args.interval, "warmup": args.warmup,
                     "model": "e450", "security": "0x20 (encrypted, no auth key) on both sides",
                     "meterpipe_mqtt_qos": 1, "reference_mqtt_qos": 0, "subscriber_qos": 0},
    }
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
