"""The read side of the history database (used by the web process).

:class:`HistoryReader` opens the database read-only (``mode=ro``,
``query_only``); WAL lets it read while the history publisher writes. A
database that does not exist yet gives empty answers (and is looked for again
at the next call). Energy is in Wh / varh / VAh; days, months and years are
local calendar periods in the reader's zone: from the materialised day rows
when they were built in that zone, else summed from the quarter rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from meterpipe.publishers.history.aggregate import QUARTER_S, add_into, day_bounds, local_midnight, sum_days
from meterpipe.publishers.history.codec import MinuteCells, decode_block, decode_chunk, decode_deltas
from meterpipe.publishers.history.tables import block_id, open_for_reading

STEPS = ("quarter", "hour", "day", "month", "year")
PEAK_PERIODS = ("day", "month")


@dataclass(frozen=True)
class MeterInfo:
    name: str
    meter_id: str | None
    first_ns: int | None
    last_ns: int | None


@dataclass(frozen=True)
class Quantity:
    name: str
    unit: str | None
    kind: str  # "gauge" | "register"


@dataclass(frozen=True)
class EnergyRow:
    start: datetime
    end: datetime
    deltas: dict[str, float]  # register name -> Wh / varh / VAh (ints where whole)
    gap: bool


@dataclass(frozen=True)
class Peak:
    period: date  # the day, or the first day of the month
    start: datetime  # start of the peak quarter
    mean_w: float


def energy_key(name: str, unit: str | None) -> str:
    """The JSON key of a register: ``active_energy_import_t1`` -> ``import_t1_wh``, ..."""
    for prefix, key_prefix, suffix in (("active_energy_", "", "_wh"), ("reactive_energy_", "reactive_", "_varh"),
                                       ("apparent_energy_", "apparent_", "_vah")):
        if name.startswith(prefix) and len(name) > len(prefix):
            return f"{key_prefix}{name[len(prefix):]}{suffix}"
    return f"{name}_{unit.lower()}" if unit else name


def wh(milli: int) -> float:
    """Milli-units -> units, an int when whole (typed float: int is a float for mypy)."""
    q, r = divmod(milli, 1000)
    return q if r == 0 else milli / 1000


def _wh_dict(deltas: dict[str, int]) -> dict[str, float]:
    return {k: wh(v) for k, v in deltas.items()}


class HistoryReader:
    """Read-only queries; one thread per reader."""

    def __init__(self, path: Path, zone: ZoneInfo) -> None:
        self.path = path
        self.zone = zone
        self._conn: sqlite3.Connection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection | None:
        if self._conn is None:
            self._conn = open_for_reading(self.path)
        return self._conn

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        db = self._db()
        if db is None:
            return []
        try:
            return list(db.execute(sql, args))
        except sqlite3.OperationalError as exc:
            if str(exc).startswith("no such table"):  # one the writer has not created yet: empty
                return []
            raise  # anything else is not "no data" (the web answers 503)

    def _meter_id(self, meter: str) -> int | None:
        rows = self._rows("SELECT id FROM meter WHERE name = ?", (meter,))
        return int(rows[0][0]) if rows else None

    def _names(self, mid: int, kind: str | None = None) -> dict[int, str]:
        rows = self._rows("SELECT id, name, kind FROM quantity WHERE meter = ?", (mid,))
        return {int(i): str(n) for i, n, k in rows if kind is None or k == kind}

    # --- meters and quantities ---------------------------------------------------

    def meters(self) -> list[MeterInfo]:
        rows = self._rows("SELECT name, meter_id, first_ns, last_ns FROM meter ORDER BY name")
        return [MeterInfo(str(n), None if i is None else str(i), _opt_int(f), _opt_int(last))
                for n, i, f, last in rows]

    def quantities(self, meter: str) -> list[Quantity]:
        mid = self._meter_id(meter)
        if mid is None:
            return []
        rows = self._rows("SELECT name, unit, kind FROM quantity WHERE meter = ? ORDER BY id", (mid,))
        return [Quantity(str(n), None if u is None else str(u), str(k)) for n, u, k in rows]

    # --- energy --------------------------------------------------------------------

    def _quarters(self, mid: int, start_s: int, end_s: int) -> Iterator[tuple[int, bool, int, dict[str, int]]]:
        """(q, gap, import milli-Wh, deltas by register name) of the stored quarters, oldest first."""
        names = self._names(mid, "register")
        rows = self._rows("SELECT q, gap, import_mwh, data FROM quarter WHERE meter = ? AND q >= ? AND q < ? "
                          "ORDER BY q", (mid, start_s // QUARTER_S, -(-end_s // QUARTER_S)))
        for q, gap, imp, data in rows:
            assert isinstance(data, bytes)
            yield (int(q), bool(gap), int(imp),
                   {names.get(k, f"register_{k}"): v for k, v in decode_deltas(data).items()})

    def _days_built_in_zone(self) -> bool:
        rows = self._rows("SELECT value FROM meta WHERE key = 'day_zone'")
        return bool(rows) and rows[0][0] == self.zone.key

    def _days(self, mid: int, first: date, last: date) -> list[tuple[date, bool, dict[str, int], int | None, int]]:
        """(day, gap, deltas, peak quarter, peak milli-Wh) for each local day with data."""
        if self._days_built_in_zone():
            names = self._names(mid, "register")
            rows = self._rows("SELECT day, gap, data, peak_q, peak_mwh FROM day WHERE meter = ? AND day >= ? "
                              "AND day <= ? ORDER BY day", (mid, first.toordinal(), last.toordinal()))
            out = []
            for d, gap, data, pq, pm in rows:
                assert isinstance(data, bytes)
                deltas = {names.get(k, f"register_{k}"): v for k, v in decode_deltas(data).items()}
                out.append((date.fromordinal(int(d)), bool(gap), deltas, _opt_int(pq), _opt_int(pm) or 0))
            return out
        return self._days_from_quarters(mid, first, last)

    def _days_from_quarters(self, mid: int, first: date, last: date) -> list[tuple[date, bool, dict[str, int],
                                                                                  int | None, int]]:
        """The day rows as the writer would build them in this zone (the same :func:`sum_days`)."""
        start_s, end_s = day_bounds(first, last, self.zone)
        days = sum_days(self._quarters(mid, start_s, end_s), self.zone)
        return [(d, s.gap, s.deltas, s.peak_q, s.peak_mwh) for d, s in sorted(days.items())]

    def energy(self, meter: str, step: str, first: date, last: date) -> list[EnergyRow]:
        """One row per period with data, oldest first; local days ``first``..``last`` inclusive."""
        if step not in STEPS:
            raise ValueError(f"step must be one of {', '.join(STEPS)}, not {step!r}")
        mid = self._meter_id(meter)
        if mid is None or last < first:
            return []
        zone = self.zone
        if step in ("quarter", "hour"):
            start_s, end_s = day_bounds(first, last, zone)
            groups: dict[int, tuple[list[bool], dict[str, int]]] = {}
            width = QUARTER_S if step == "quarter" else 3600
            for q, gap, _, deltas in self._quarters(mid, start_s, end_s):
                t = q * QUARTER_S
                key = t if step == "quarter" else t - datetime.fromtimestamp(t, zone).minute * 60
                entry = groups.setdefault(key, ([False], {}))
                entry[0][0] = entry[0][0] or gap
                add_into(entry[1], deltas)
            return [EnergyRow(datetime.fromtimestamp(k, zone), datetime.fromtimestamp(k + width, zone),
                              _wh_dict(dl), g[0]) for k, (g, dl) in sorted(groups.items())]
        periods: dict[date, tuple[list[bool], dict[str, int]]] = {}
        for d, gap, deltas, _, _ in self._days(mid, first, last):
            period = d if step == "day" else d.replace(day=1) if step == "month" else date(d.year, 1, 1)
            entry = periods.setdefault(period, ([False], {}))
            entry[0][0] = entry[0][0] or gap
            add_into(entry[1], deltas)
        return [EnergyRow(local_midnight(k, zone), local_midnight(_next_period(k, step), zone), _wh_dict(dl), g[0])
                for k, (g, dl) in sorted(periods.items())]

    def peaks(self, meter: str, period: str, first: date, last: date) -> list[Peak]:
        """The highest non-gap quarter of each local day or month (by active import)."""
        if period not in PEAK_PERIODS:
            raise ValueError(f"period must be 'day' or 'month', not {period!r}")
        mid = self._meter_id(meter)
        if mid is None or last < first:
            return []
        best: dict[date, tuple[int, int]] = {}
        for d, _, _, pq, pm in self._days(mid, first, last):
            if pq is None:
                continue
            key = d if period == "day" else d.replace(day=1)
            if key not in best or pm > best[key][1]:
                best[key] = (pq, pm)
        return [Peak(k, datetime.fromtimestamp(q * QUARTER_S, self.zone), pm * 4 / 1000)
                for k, (q, pm) in sorted(best.items())]

    # --- series and minutes ----------------------------------------------------------

    def series(self, meter: str, name: str, start: datetime, end: datetime,
               max_points: int = 5000) -> list[tuple[float, float]]:
        """(unix s, value): every stored push, minute means (registers: last values) before them."""
        mid = self._meter_id(meter)
        if mid is None:
            return []
        qids = [q for q, n in self._names(mid).items() if n == name]
        if not qids:
            return []
        qid = qids[0]
        t0, t1 = start.timestamp(), end.timestamp()
        first = self._rows("SELECT min(t0) FROM push_chunk WHERE meter = ?", (mid,))
        first_push = _opt_int(first[0][0]) if first else None
        cut_s = t1 if first_push is None else min(t1, (first_push // 1_000_000_000) // 60 * 60)
        points: list[tuple[float, float]] = []
        for minute_s, cells in self._minute_cells(mid, t0, cut_s):
            if qid in cells.gauges:
                points.append((float(minute_s), cells.gauges[qid].mean()))
            elif qid in cells.registers:
                points.append((float(minute_s), cells.registers[qid] / 1000))
        if first_push is not None:
            lo = int(max(t0, cut_s) * 1e9)
            hi = int(t1 * 1e9)
            rows = self._rows("SELECT t0, data FROM push_chunk WHERE meter = ? AND t0 >= ? AND t0 <= ? ORDER BY t0",
                              (mid, lo - 60_000_000_000, hi))
            for c0, data in rows:
                assert isinstance(data, bytes)
                times, cols = decode_chunk(int(c0), data)
                values = cols.get(qid)
                if values is None:
                    continue
                points.extend((t / 1e9, v) for t, v in zip(times, values, strict=True) if lo <= t <= hi)
        return _bucketed(points, t0, t1, max_points)

    def _minute_cells(self, mid: int, t0: float, t1: float) -> Iterator[tuple[int, MinuteCells]]:
        rows = self._rows("SELECT id, data FROM minute_block WHERE id >= ? AND id <= ? ORDER BY id",
                          (block_id(mid, int(t0 // 3600)), block_id(mid, int(t1 // 3600))))
        for key, data in rows:
            assert isinstance(data, bytes)
            block = decode_block(data)
            for offset in sorted(block):
                minute_s = (int(key) & 0xFFFFFFFF) * 3600 + offset * 60
                if t0 <= minute_s < t1:
                    yield minute_s, block[offset]

    def minutes(self, meter: str, start: datetime, end: datetime) -> tuple[list[str], list[list[object]]]:
        """CSV export at minute step: header and rows (start with offset, means/min/max, register values)."""
        mid = self._meter_id(meter)
        if mid is None:
            return ["start"], []
        quantities = self._rows("SELECT id, name, kind FROM quantity WHERE meter = ? ORDER BY id", (mid,))
        header = ["start"]
        for _, n, k in quantities:
            header += [f"{n}_mean", f"{n}_min", f"{n}_max"] if k == "gauge" else [str(n)]
        out: list[list[object]] = []
        for minute_s, cells in self._minute_cells(mid, start.timestamp(), end.timestamp()):
            row: list[object] = [datetime.fromtimestamp(minute_s, self.zone).isoformat()]
            for q, _, k in quantities:
                qid = int(q)
                if k == "gauge":
                    g = cells.gauges.get(qid)
                    row += [g.mean(), g.low(), g.high()] if g is not None else [None, None, None]
                else:
                    r = cells.registers.get(qid)
                    row.append(None if r is None else wh(r))
            out.append(row)
        return header, out


def _opt_int(v: object) -> int | None:
    return None if v is None else int(str(v))


def _next_period(d: date, step: str) -> date:
    if step == "day":
        return d + timedelta(days=1)
    if step == "month":
        return date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    return date(d.year + 1, 1, 1)


def _bucketed(points: Iterable[tuple[float, float]], t0: float, t1: float,
              max_points: int) -> list[tuple[float, float]]:
    pts = sorted(points)
    if len(pts) <= max_points or max_points <= 0 or t1 <= t0:
        return pts
    width = (t1 - t0) / max_points
    buckets: dict[int, list[float]] = {}
    for t, v in pts:
        b = buckets.setdefault(int((t - t0) // width), [0.0, 0.0, 0.0])
        b[0] += t
        b[1] += v
        b[2] += 1
    return [(b[0] / b[2], b[1] / b[2]) for _, b in sorted(buckets.items())]
