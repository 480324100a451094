"""The data behind every page and its JSON twin, from the history reader and the live hub.

Each function here runs on the history thread (it takes the
:class:`~meterpipe.publishers.history.query.HistoryReader`) or on the loop (live data
only) and returns plain dicts and lists, so the API serialises them and the templates
render the same numbers.
"""

from __future__ import annotations

import calendar
import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from meterpipe.common.web_config import TariffConfig
from meterpipe.publishers.history.aggregate import EXPORT_TOTAL, IMPORT_TOTAL, export_delta, import_delta
from meterpipe.web.tariff import Cost, cost_step, fee_share, rows_cost

if TYPE_CHECKING:
    from meterpipe.publishers.history.query import EnergyRow, HistoryReader


def iso(ts: float, zone: Any, timespec: str = "seconds") -> str:
    return datetime.fromtimestamp(ts, zone).isoformat(timespec=timespec)


def units(reader: HistoryReader, meter: str) -> dict[str, str | None]:
    return {q.name: q.unit for q in reader.quantities(meter)}


def energy_json(row: EnergyRow, unit_of: dict[str, str | None]) -> dict[str, Any]:
    from meterpipe.publishers.history.query import energy_key

    out: dict[str, Any] = {"start": row.start.isoformat(), "import_wh": import_delta(row.deltas),
                           "export_wh": export_delta(row.deltas)}
    for name, value in sorted(row.deltas.items()):
        out[energy_key(name, unit_of.get(name, "Wh"))] = value
    out["gap"] = row.gap
    return out


def energy_keys(reader: HistoryReader, meter: str) -> list[str]:
    """The columns of ``energy_json`` rows of this meter, in a fixed order (the CSV header)."""
    from meterpipe.publishers.history.query import energy_key

    names = {energy_key(q.name, q.unit) for q in reader.quantities(meter) if q.kind == "register"}
    return ["start", *sorted(names | {"import_wh", "export_wh"}), "gap"]


def energy_rows(reader: HistoryReader, meter: str, step: str, first: date, last: date) -> list[dict[str, Any]]:
    unit_of = units(reader, meter)
    return [energy_json(r, unit_of) for r in reader.energy(meter, step, first, last)]


# --- history: day / month / year views ------------------------------------------

VIEWS = {"day": "hour", "month": "day", "year": "month"}


def period(view: str, anchor: date) -> tuple[date, date]:
    if view == "day":
        return anchor, anchor
    if view == "month":
        return anchor.replace(day=1), anchor.replace(day=calendar.monthrange(anchor.year, anchor.month)[1])
    return date(anchor.year, 1, 1), date(anchor.year, 12, 31)


def shift(view: str, anchor: date, by: int) -> date:
    """The anchor (first day) of the previous (-1) or next (+1) period: the period of the day
    before this one's first day, or after its last (no month arithmetic of its own)."""
    first, last = period(view, anchor)
    return period(view, first - timedelta(days=1) if by < 0 else last + timedelta(days=1))[0]


def label(view: str, start: datetime) -> str:
    return start.strftime("%H") if view == "day" else str(start.day) if view == "month" else start.strftime("%b")


def tick(view: str, start: datetime) -> bool:
    """Is this bar's label shown on a narrow screen too?"""
    return view == "year" or (view == "day" and start.hour % 3 == 0) or (
        view == "month" and (start.day == 1 or start.day % 5 == 0))


def slot(view: str, start: datetime) -> tuple[int, int]:
    """Position within its period, so a bar meets the same hour/day/month of the previous one;
    ``fold`` tells the two 02:00 hours of the 25-hour day apart."""
    return (start.hour, start.fold) if view == "day" else (start.day, 0) if view == "month" else (start.month, 0)


def instant(start: datetime) -> int:
    """The key of a period start: aware datetimes compare by wall time and ignore ``fold``, so
    the two 02:00 hours of the 25-hour day would be one key."""
    return int(start.timestamp())


def _stack(deltas: dict[str, float], base: str, total: float) -> list[tuple[str, float]]:
    tariffs = [(n.removeprefix(base + "_"), v) for n, v in sorted(deltas.items())
               if n.startswith(base + "_t") and n[len(base) + 2:].isdigit()]
    if tariffs and any(v for _, v in tariffs):
        return tariffs
    return [("all", total)]


def slots(view: str, first: date, last: date, zone: Any) -> list[datetime]:
    """Every period start of the view, so that bars keep their place: the hours of a local
    day (23 or 25 on a DST change), the days of a month, the months of a year."""
    if view == "day":
        t = datetime.combine(first, datetime.min.time(), zone).astimezone(UTC)
        end = datetime.combine(last + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
        found = []
        while t < end:
            found.append(t.astimezone(zone))
            t += timedelta(hours=1)
        return found
    if view == "month":
        return [datetime.combine(first + timedelta(days=i), datetime.min.time(), zone)
                for i in range((last - first).days + 1)]
    return [datetime(first.year, m, 1, tzinfo=zone) for m in range(1, 13)]


def history_view(reader: HistoryReader, meter: str, view: str, anchor: date, tariff: TariffConfig,
                 zone: Any) -> dict[str, Any]:
    step = VIEWS[view]
    first, last = period(view, anchor)
    prev_first, prev_last = period(view, shift(view, anchor, -1))
    rows = {instant(r.start): r for r in reader.energy(meter, step, first, last)}
    previous = {slot(view, r.start): r for r in reader.energy(meter, step, prev_first, prev_last)}
    unit_of = units(reader, meter)
    bars = []
    for start in slots(view, first, last, zone):
        r = rows.get(instant(start))
        before = previous.get(slot(view, start))
        bar: dict[str, Any] = {
            "start": None, "label": label(view, start), "import_wh": 0.0, "export_wh": 0.0, "tick": tick(view, start),
            "import_stack": [], "export_stack": [], "gap": False, "json": None,
            "prev_import_wh": None if before is None else float(import_delta(before.deltas)),
            "prev_export_wh": None if before is None else float(export_delta(before.deltas)),
        }
        if r is not None:
            imp, exp = float(import_delta(r.deltas)), float(export_delta(r.deltas))
            bar.update({"start": r.start.isoformat(), "import_wh": imp, "export_wh": exp,
                        "import_stack": _stack(r.deltas, IMPORT_TOTAL, imp),
                        "export_stack": _stack(r.deltas, EXPORT_TOTAL, exp), "gap": r.gap,
                        "json": energy_json(r, unit_of)})
        bars.append(bar)
    top = max([1.0] + [max(b["import_wh"], b["export_wh"], b["prev_import_wh"] or 0, b["prev_export_wh"] or 0)
                       for b in bars])
    tariffs = sorted({name for b in bars for name, wh in b["import_stack"] if wh or name != "all"})
    cost = period_cost(reader, meter, tariff, first, last)
    prev_total = Cost()
    for r in previous.values():
        prev_total.import_wh += float(import_delta(r.deltas))
        prev_total.export_wh += float(export_delta(r.deltas))
    return {"view": view, "step": step, "first": first, "last": last, "bars": bars, "top": top,
            "has_data": bool(rows), "has_export": any(b["export_wh"] or b["prev_export_wh"] for b in bars),
            "tariffs": tariffs, "total": cost, "previous": prev_total,
            "prev": shift(view, anchor, -1), "next": shift(view, anchor, 1)}


# --- costs -----------------------------------------------------------------------


def period_cost(reader: HistoryReader, meter: str, tariff: TariffConfig, first: date, last: date,
                *, fee: bool = False) -> Cost:
    """Energy and its price over local days ``first..last`` (and the fee's share with ``fee``)."""
    rows = reader.energy(meter, cost_step(tariff, "day"), first, last)
    cost = rows_cost(tariff, ((r.start, r.deltas) for r in rows))
    if fee:
        cost.fee = fee_share(tariff, first, last)
    return cost


def costs_table(reader: HistoryReader, meter: str, tariff: TariffConfig, step: str, first: date,
                last: date) -> tuple[list[tuple[date, Cost]], Cost]:
    """Per day or month of ``first..last``: the cost; and their total (fee included)."""
    rows = reader.energy(meter, cost_step(tariff, step), first, last)
    grouped: dict[date, Cost] = {}
    for r in rows:
        key = r.start.date() if step == "day" else r.start.date().replace(day=1)
        grouped.setdefault(key, Cost()).add(rows_cost(tariff, [(r.start, r.deltas)]))
    total = Cost()
    for key, cost in grouped.items():
        end = key if step == "day" else key.replace(day=calendar.monthrange(key.year, key.month)[1])
        cost.fee = fee_share(tariff, max(key, first), min(end, last))
        total.add(cost)
    return sorted(grouped.items()), total


def range_cost(reader: HistoryReader, meter: str, tariff: TariffConfig, start: datetime,
               end: datetime, zone: Any) -> Cost:
    """A selected time range at push resolution: register differences between consecutive
    values in the range, each priced at its own time (as history books them)."""
    deltas: dict[datetime, dict[str, float]] = {}
    names = {q.name for q in reader.quantities(meter) if q.kind == "register"}
    wanted = [n for n in names if import_delta({n: 1}) or export_delta({n: 1})]  # what the rule reads
    for name in wanted:
        points = reader.series(meter, name, start, end, max_points=100_000)
        for (_, a), (t, b) in itertools.pairwise(points):
            if b > a:
                deltas.setdefault(datetime.fromtimestamp(t, zone), {})[name] = b - a
    return rows_cost(tariff, sorted(deltas.items()))


# --- peaks -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeakRow:
    period: date
    start: datetime
    mean_w: float

    def as_json(self) -> dict[str, Any]:
        return {"period": self.period.isoformat(), "start": self.start.isoformat(), "mean_w": round(self.mean_w, 1)}


def peaks(reader: HistoryReader, meter: str, kind: str, first: date, last: date) -> list[PeakRow]:
    return [PeakRow(p.period, p.start, p.mean_w) for p in reader.peaks(meter, kind, first, last)]


# --- now ---------------------------------------------------------------------------


def now_view(data: dict[str, Any] | None) -> dict[str, Any]:
    """The Now page's figures from one ``readings_json`` dict (None: no push yet)."""
    if data is None:
        return {"values": {}}
    return {"values": {r["name"]: r for r in data["readings"] if isinstance(r["value"], (int, float))}}
