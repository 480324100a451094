"""The history store: a year of 1-minute data for 3 meters through the real writer, then its queries.

* **Build**: 3 meters x 365 days, one push a minute (525,600 pushes a meter),
  through :class:`~meterpipe.publishers.history.store.HistoryWriter` exactly as
  the publisher drives it (``add`` per push, a flush per simulated hour, the
  publisher itself flushes once a minute of wall time). The pushes have the
  demo E450's push list (a push of the simulated meter decoded by the real
  decoder is the template: 4 registers, 8 gauges, 2 texts); their values follow
  a daily load curve with noise, the registers integrate it exactly.
* **Size**: the file per meter-year at 1 push a minute; and at 1 push a second
  (the demo's rate), measured on 3 days of one meter at 1 push/s (minute rows
  per day, the 48 h of full-resolution pushes) and extrapolated to 400 days of
  minute rows plus a year of quarter and day rows.
* **Queries** (median of N runs, one meter of the three): the History page's
  day view (hour bars), month view (day bars), year view (month bars), the
  peaks of a year by month, a day's series at minute means, the last hour at
  full resolution.

    python benchmarks/history.py [--days 365] [--meters 3] [--runs 20] [--keep DIR]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import _harness  # puts the repository root on sys.path (tests.support for the web process)

from meterpipe.common.schema import ReadingsMessage
from meterpipe.common.values import Push, Reading
from meterpipe.publishers.history.query import HistoryReader
from meterpipe.publishers.history.store import HistoryWriter

ZONE = ZoneInfo("Europe/Zurich")
END = datetime(2026, 1, 1, tzinfo=ZONE)  # the data ends at a local new year: the year view is 2025


def template() -> Push:
    """One push of the simulated E450, decoded by the real decoder."""
    from meterpipe.decoder.session import MeterDecoder
    from meterpipe.simulator.meter import MeterSimulator

    (push,) = MeterDecoder("house", model="e450").feed(MeterSimulator("e450", seed=1).push(datetime(2026, 1, 1)).data)
    assert isinstance(push, Push)
    return push


def pushes(meter: str, start: datetime, count: int, step_s: float, seed: int) -> Iterator[ReadingsMessage]:
    """E450-shaped pushes with a daily load curve; registers integrate the power exactly (Wh)."""
    base = template()
    rng = random.Random(seed)
    imp_mwh, exp_mwh, rimp, rexp = 15_000_000_000, 3_000_000_000, 2_000_000_000, 5_000_000_000
    t0 = start.timestamp()
    for i in range(count):
        t = t0 + i * step_s
        hour = (t / 3600 + 1) % 24
        load = 300 + 900 * math.exp(-((hour - 19) ** 2) / 6) + 500 * math.exp(-((hour - 7.5) ** 2) / 2)
        pv = max(0.0, 2500 * math.sin(math.pi * (hour - 6) / 14)) if 6 < hour < 20 else 0.0
        net = load * rng.uniform(0.7, 1.3) - pv * rng.uniform(0.8, 1.0)
        p_imp, p_exp = (round(net), 0) if net > 0 else (0, round(-net))
        imp_mwh += round(p_imp * step_s / 3.6)
        exp_mwh += round(p_exp * step_s / 3.6)
        rimp += round(0.3 * p_imp * step_s / 3.6)
        rexp += round(0.1 * load * step_s / 3.6)
        values: dict[str, int] = {
            "active_energy_import": imp_mwh // 1000, "active_energy_export": exp_mwh // 1000,
            "reactive_energy_import": rimp // 1000, "reactive_energy_export": rexp // 1000,
            "active_power_import": p_imp, "active_power_export": p_exp,
        }
        for ph in (1, 2, 3):
            values[f"voltage_l{ph}"] = 230 + rng.randint(-2, 2)
            values[f"current_l{ph}"] = max(0, round(abs(net) / 3 / 2.3 * rng.uniform(0.8, 1.2)))  # 0.01 A
        readings = tuple(Reading(r.obis, r.name, values.get(r.name, r.value), r.exponent, r.unit)
                         for r in base.readings)
        yield ReadingsMessage(meter, i + 1, int(t * 1e9), Push(readings, meter_id=base.meter_id))


def simulated(meter: str, start: datetime, count: int, step_s: float, seed: int) -> Iterator[ReadingsMessage]:
    """The simulated E450's own pushes (its load curve), decoded by the real decoder."""
    from meterpipe.decoder.session import MeterDecoder
    from meterpipe.simulator.meter import MeterSimulator

    sim = MeterSimulator("e450", seed=seed)
    decoder = MeterDecoder(meter, model="e450")
    t0 = start.timestamp()
    for i in range(count):
        t = t0 + i * step_s
        (push,) = decoder.feed(sim.push(datetime.fromtimestamp(t, ZONE).replace(tzinfo=None)).data)
        assert isinstance(push, Push)
        yield ReadingsMessage(meter, i + 1, int(t * 1e9), push)


def build(path: Path, meters: int, days: int, step_s: float, flush_every: int,
          source: Callable[[str, datetime, int, float, int], Iterator[ReadingsMessage]] = pushes) -> tuple[int, float]:
    """Write the pushes; (pushes written, seconds in add + flush)."""
    writer = HistoryWriter(path, ZONE)
    count = int(days * 86400 / step_s)
    start = END - timedelta(days=days)
    spent = 0.0
    n = 0
    for k in range(meters):
        gen = source(f"meter{k + 1}", start, count, step_s, k)
        while True:
            batch = [m for _, m in zip(range(flush_every), gen, strict=False)]
            if not batch:
                break
            t = time.perf_counter()
            for m in batch:
                writer.add(m)
            writer.flush()
            spent += time.perf_counter() - t
            n += len(batch)
    t = time.perf_counter()
    writer.close()
    return n, spent + time.perf_counter() - t


def table_bytes(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    finally:
        db.close()
    return {str(n): int(s) for n, s in rows}


def timed(fn: Callable[[], object], runs: int) -> dict[str, float]:
    first = time.perf_counter()
    fn()
    first_ms = (time.perf_counter() - first) * 1000
    laps = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        laps.append((time.perf_counter() - t) * 1000)
    return {"first_ms": round(first_ms, 2), "median_ms": round(statistics.median(laps), 2),
            "max_ms": round(max(laps), 2)}


def web_latency(work: Path, db: Path, meters: int, meter: str, last_day: date, runs: int) -> dict[str, dict[str, float]]:
    """The same views through the real web process (HTTP, JSON encoding, the page's HTML)."""
    import subprocess
    import urllib.request

    from tests.support import free_port, stop_process, wait_port

    port = free_port()
    config = work / "web.toml"
    lines = [f'[[meters]]\nname = "meter{i}"\nport = "/dev/null"\n' for i in range(meters)]
    lines.append(f'[endpoints]\nframes = "ipc://{work}/frames"\nreadings = "ipc://{work}/readings"\n')
    lines.append(f'[publishers.csv]\nenabled = false\n[publishers.history]\npath = "{db}"\n')
    lines.append(f'[web]\nlisten = "127.0.0.1:{port}"\ntimezone = "{ZONE.key}"\n')
    config.write_text("\n".join(lines))
    proc = subprocess.Popen([sys.executable, "-m", "meterpipe.web.main", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_port(port, 30, proc)
        base = f"http://127.0.0.1:{port}"
        year, month = date(last_day.year, 1, 1), last_day.replace(day=1)

        def get(path: str) -> Callable[[], object]:
            def fetch() -> object:
                with urllib.request.urlopen(base + path, timeout=30) as r:
                    body = r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{path}: HTTP {r.status}")
                    return body
            return fetch

        calls = {
            "GET /history?view=year (page)": f"/history?view=year&meter={meter}&date={last_day}",
            "GET /history?view=month (page)": f"/history?view=month&meter={meter}&date={last_day}",
            "GET /history?view=day (page)": f"/history?view=day&meter={meter}&date={last_day}",
            "GET /api/energy step=month, a year": f"/api/energy?meter={meter}&step=month&from={year}&to={last_day}",
            "GET /api/energy step=day, a month": f"/api/energy?meter={meter}&step=day&from={month}&to={last_day}",
            "GET /api/energy step=hour, a day": f"/api/energy?meter={meter}&step=hour&from={last_day}&to={last_day}",
            "GET /api/peaks period=month, a year": f"/api/peaks?meter={meter}&period=month&from={year}&to={last_day}",
            "GET /api/series, a day": f"/api/series?meter={meter}&name=active_power_import"
                                      f"&from={last_day}T00:00:00%2B01:00&to={last_day}T23:59:59%2B01:00",
            "GET /export.csv step=hour, a month": f"/export.csv?meter={meter}&step=hour&from={month}&to={last_day}",
        }
        return {name: timed(get(path), runs) for name, path in calls.items()}
    finally:
        stop_process(proc)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mp-history-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        year_db = work / "year.sqlite"
        year_db.unlink(missing_ok=True)
        n, spent = build(year_db, args.meters, args.days, 60.0, 60)
        size = year_db.stat().st_size
        tables = table_bytes(year_db)
        per_meter_fixed = (tables.get("quarter", 0) + tables.get("day", 0)) / args.meters * 365 / args.days
        per_second = {}
        for label, source in (("noisy", pushes), ("simulator", simulated)):
            sec_db = work / f"persecond-{label}.sqlite"
            sec_db.unlink(missing_ok=True)
            n_s, spent_s = build(sec_db, 1, 1, 1.0, 60, source)
            sec = table_bytes(sec_db)
            minute_day = sec.get("minute_block", 0)
            recent = sec.get("push_chunk", 0) * 2
            year_1s = minute_day * 400 + recent + per_meter_fixed + 64 * 1024  # + schema, meter, quantity pages
            per_second[label] = {"pushes": n_s, "insert_per_s": round(n_s / spent_s),
                                 "minute_rows_kb_per_day": round(minute_day / 1024, 1),
                                 "recent_48h_mb": round(recent / 1e6, 2), "mb_per_meter_year": round(year_1s / 1e6, 1)}
        reader = HistoryReader(year_db, ZONE)
        meter = f"meter{min(2, args.meters)}"
        last_day = (END - timedelta(days=1)).date()
        first_day = (END - timedelta(days=args.days)).date()
        year = date(last_day.year, 1, 1)
        day_start = datetime(last_day.year, last_day.month, last_day.day, tzinfo=ZONE)
        q: dict[str, Callable[[], object]] = {
            "day view (24 hour bars)": lambda: reader.energy(meter, "hour", last_day, last_day),
            "month view (31 day bars)": lambda: reader.energy(meter, "day", last_day.replace(day=1), last_day),
            "year view (12 month bars)": lambda: reader.energy(meter, "month", year, last_day),
            "peaks of a year by month": lambda: reader.peaks(meter, "month", year, last_day),
            "series of a day (minute means)": lambda: reader.series(meter, "active_power_import", day_start,
                                                                    day_start + timedelta(days=1)),
            "series of the last hour (pushes)": lambda: reader.series(
                meter, "active_power_import", END - timedelta(hours=1), END),
        }
        latencies = {name: timed(fn, args.runs) for name, fn in q.items()}
        year_rows = reader.energy(meter, "month", year, last_day)
        if args.days >= 365 and len(year_rows) != 12:
            raise RuntimeError(f"the year view has {len(year_rows)} months, not 12")
        reader.close()
        api = web_latency(work, year_db, args.meters, meter, last_day, args.runs)
        return {
            "meters": args.meters, "days": args.days, "first_day": first_day.isoformat(),
            "pushes": n, "insert_per_s": round(n / spent), "build_s": round(spent, 1),
            "db_mb": round(size / 1e6, 2), "db_mb_per_meter_year_60s": round(size / args.meters / 1e6 * 365 / args.days, 2),
            "tables_mb": {k: round(v / 1e6, 3) for k, v in sorted(tables.items())},
            "per_second": per_second,
            "latency": latencies,
            "web": api,
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--meters", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--keep", metavar="DIR", help="keep the databases in DIR")
    args = p.parse_args()
    res = _harness.attempt(run, args)
    if res is None:
        return 1
    print(f"history store: {res['meters']} meters x {res['days']} days at 1 push/min "
          f"({res['pushes']:,} pushes), {res['machine']['cpu']}")
    print(f"  {'insert rate (add + flush)':<36} {res['insert_per_s']:>10,} pushes/s")
    print(f"  {'database':<36} {res['db_mb']:>10} MB  ({res['db_mb_per_meter_year_60s']} MB per meter-year)")
    for name, mb in res["tables_mb"].items():
        print(f"    {name:<34} {mb:>10} MB")
    for label, ps in res["per_second"].items():
        print(f"  {'at 1 push/s, ' + label + ' (1 day)':<36} {ps['insert_per_s']:>10,} pushes/s; minute rows "
              f"{ps['minute_rows_kb_per_day']} KB/day, 48 h of pushes {ps['recent_48h_mb']} MB")
        print(f"  {'  one meter-year at 1 push/s':<36} {ps['mb_per_meter_year']:>10} MB  (400 days of minute rows, "
              "48 h of pushes, a year of quarters and days)")
    print(f"  {'query (one meter of ' + str(res['meters']) + ')':<36} {'first':>10} {'median':>8} {'max':>8}  ms")
    for name, lat in res["latency"].items():
        print(f"    {name:<34} {lat['first_ms']:>10} {lat['median_ms']:>8} {lat['max_ms']:>8}")
    print(f"  {'through the web process (HTTP)':<36} {'first':>10} {'median':>8} {'max':>8}  ms")
    for name, lat in res["web"].items():
        print(f"    {name:<34} {lat['first_ms']:>10} {lat['median_ms']:>8} {lat['max_ms']:>8}")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
