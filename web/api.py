"""The JSON API (and the CSV export and the SSE stream): the same data the pages show.

Bad parameters give 400 with ``{"error": ..., "parameter": ...}``, an unknown meter 404.
Nothing here sets CORS headers: other sites' pages cannot read these answers.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from meterpipe.common.schema import readings_json
from meterpipe.publishers.history.aggregate import REGISTER_UNITS
from meterpipe.web import params, views
from meterpipe.web.guard import signed_in
from meterpipe.web.site import Site, site_of
from meterpipe.web.status import meter_status

if TYPE_CHECKING:
    from meterpipe.publishers.history.query import HistoryReader

SSE_PING_S = 30.0
SERIES_HOURS = 3
EXPORT_CHUNK_DAYS = {"minute": 1, "quarter": 7, "hour": 31, "day": 366}  # days per history query of a CSV export


async def meters_info(site: Site) -> list[dict[str, Any]]:
    """Every meter the config, the history or the live socket knows, with its last push."""
    stored = await site.store.run(lambda r: r.meters())
    found: dict[str, dict[str, Any]] = {m: {"meter": m, "meter_id": None, "last_push": None} for m in site.meters}
    last: dict[str, float] = {}
    for info in stored:
        entry = found.setdefault(info.name, {"meter": info.name, "meter_id": None, "last_push": None})
        entry["meter_id"] = info.meter_id
        if info.last_ns is not None:
            last[info.name] = info.last_ns / 1e9
    for name, msg in site.hub.latest.items():
        entry = found.setdefault(name, {"meter": name, "meter_id": None, "last_push": None})
        entry["meter_id"] = msg.push.meter_id or entry["meter_id"]
        last[name] = max(last.get(name, 0.0), msg.received_ns / 1e9)
    for name, ts in last.items():
        found[name]["last_push"] = views.iso(ts, site.zone)
    return list(found.values())


async def known_meter(site: Site, request: Request) -> str:
    names = [m["meter"] for m in await meters_info(site)]
    return params.meter(request.query_params, names)


def no_push(meter: str) -> str:
    return f"no push from meter {meter!r} yet: is the reader running? see Status"


async def api_meters(request: Request) -> Response:
    return JSONResponse(await meters_info(site_of(request)))


async def api_now(request: Request) -> Response:
    site = site_of(request)
    meter = await known_meter(site, request)
    msg = site.hub.latest.get(meter)
    if msg is None:
        return JSONResponse({"error": no_push(meter), "parameter": "meter"}, status_code=404)
    return JSONResponse(readings_json(msg))


async def api_energy(request: Request) -> Response:
    site = site_of(request)
    q = request.query_params
    meter = await known_meter(site, request)
    step = params.choice(q, "step", params.ENERGY_STEPS, "day")
    first, last = params.day_range(q, site.today(), step)
    rows = await site.store.run(lambda r: views.energy_rows(r, meter, step, first, last))
    return JSONResponse(rows)


def base_factor(unit: str | None) -> float:
    """What a live register value is multiplied by to be in the history's unit (kWh -> Wh: 1000)."""
    reg = REGISTER_UNITS.get(unit or "")
    return 1.0 if reg is None else float(10 ** (reg[1] - 3))  # REGISTER_UNITS: milli-units


async def series_points(site: Site, meter: str, name: str, start: datetime, end: datetime) -> list[list[Any]]:
    points = await site.store.run(lambda r: r.series(meter, name, start, end))
    newest = points[-1][0] if points else start.timestamp()
    for msg in site.hub.recent.get(meter, ()):  # the minute the database has not committed yet
        ts = msg.received_ns / 1e9
        if newest < ts <= end.timestamp():
            for reading in msg.push.readings:
                if reading.name == name and reading.is_number:
                    value = reading.json_value()
                    assert not isinstance(value, str)
                    points.append((ts, float(value) * base_factor(reading.unit)))
    return [[views.iso(ts, site.zone, "milliseconds"), value] for ts, value in points]


async def api_series(request: Request) -> Response:
    site = site_of(request)
    q = request.query_params
    meter = await known_meter(site, request)
    start, end = params.instant_range(q, site.zone, site.now(), SERIES_HOURS)
    quantities = await site.store.run(lambda r: [x.name for x in r.quantities(meter)])
    live = {x.name for m in site.hub.recent.get(meter, ()) for x in m.push.readings if x.is_number}
    if "name" not in q:
        q = type(q)({**q, "name": "active_power_import"})
    name = params.name(q, set(quantities) | live)
    return JSONResponse(await series_points(site, meter, name, start, end))


async def api_range(request: Request) -> Response:
    """The energy and cost of a selected time range (the Live chart's selection)."""
    site = site_of(request)
    meter = await known_meter(site, request)
    start, end = params.instant_range(request.query_params, site.zone, site.now(), 1, max_days=31)
    tariff = site.web.tariff
    cost = await site.store.run(lambda r: views.range_cost(r, meter, tariff, start, end, site.zone))
    return JSONResponse({"from": start.isoformat(), "to": end.isoformat(), **cost.as_json(tariff.currency)})


async def api_costs(request: Request) -> Response:
    site = site_of(request)
    q = request.query_params
    meter = await known_meter(site, request)
    step = params.choice(q, "step", ("day", "month", "total"), "total")
    first, last = params.day_range(q, site.today(), "day")
    tariff = site.web.tariff
    table_step = "day" if step == "total" else step
    rows, total = await site.store.run(lambda r: views.costs_table(r, meter, tariff, table_step, first, last))
    body: dict[str, Any] = {"meter": meter, "from": first.isoformat(), "to": last.isoformat(),
                            "total": total.as_json(tariff.currency)}
    if step != "total":
        body["rows"] = [{"start": d.isoformat(), **c.as_json(tariff.currency)} for d, c in rows]
    return JSONResponse(body)


async def api_peaks(request: Request) -> Response:
    site = site_of(request)
    q = request.query_params
    meter = await known_meter(site, request)
    kind = params.choice(q, "period", ("day", "month"), "day")
    today = site.today()
    first, last = params.day_range(q, today, "day", days_back=30 if kind == "day" else 365)
    rows = await site.store.run(lambda r: views.peaks(r, meter, kind, first, last))
    return JSONResponse([p.as_json() for p in rows])


async def api_status(request: Request) -> Response:
    site = site_of(request)
    now = site.now().timestamp()
    names = [m["meter"] for m in await meters_info(site)]
    processes, note = await site.processes.get()
    return JSONResponse({
        "meters": {n: meter_status(site.hub.status.get(n), site.hub.age(n, now), now) for n in names},
        "processes": [p.as_json() for p in processes],
        "processes_note": note,
        "web": {"pushes_received": site.hub.received, "sse_clients": site.hub.clients,
                "schema_errors": site.hub.schema_errors},
    })


# --- CSV export ---------------------------------------------------------------------


async def export_csv(request: Request) -> Response:
    """A CSV download, streamed: each chunk of days is read on the history thread while the
    previous one is on its way, so a month of minutes never sits in memory at once."""
    site = site_of(request)
    q = request.query_params
    meter = await known_meter(site, request)
    step = params.choice(q, "step", params.EXPORT_STEPS, "hour")
    first, last = params.day_range(q, site.today(), step)
    chunks = list(_chunks(first, last, EXPORT_CHUNK_DAYS[step]))
    zone = site.zone

    def minutes(a: date, b: date) -> Callable[[HistoryReader], tuple[list[str], list[list[object]]]]:
        start = datetime.combine(a, datetime.min.time(), zone)
        end = datetime.combine(b + timedelta(days=1), datetime.min.time(), zone)
        return lambda r: r.minutes(meter, start, end)

    def energy(a: date, b: date) -> Callable[[HistoryReader], list[dict[str, Any]]]:
        return lambda r: views.energy_rows(r, meter, step, a, b)

    async def body() -> AsyncIterator[str]:
        if step == "minute":
            for i, (a, b) in enumerate(chunks):
                header, rows = await site.store.run(minutes(a, b))
                yield _csv_text(rows, header if i == 0 else None)
            return
        keys = await site.store.run(lambda r: views.energy_keys(r, meter))
        for i, (a, b) in enumerate(chunks):
            records = await site.store.run(energy(a, b))
            yield _csv_text(([rec.get(k, "") for k in keys] for rec in records), keys if i == 0 else None)

    name = f"meterpipe-{meter}-{step}-{first}_{last}.csv"
    return StreamingResponse(body(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _chunks(first: date, last: date, days: int) -> Iterable[tuple[date, date]]:
    a = first
    while a <= last:
        b = min(last, a + timedelta(days=days - 1))
        yield a, b
        a = b + timedelta(days=1)


def _csv_text(rows: Iterable[list[Any]], header: list[str] | None) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    for row in rows:
        writer.writerow(["true" if v is True else "false" if v is False else v for v in row])
    return buf.getvalue()


# --- server-sent events ---------------------------------------------------------------


async def events(request: Request) -> Response:
    """``event: reading`` per push (the latest of each meter first), ``event: status``, a ping
    every :data:`SSE_PING_S`. The client is subscribed inside the stream, so a connection that
    closes before the first chunk never holds a slot; off loopback, every item and ping checks
    the session again, so signing out or a new password ends the stream."""
    site = site_of(request)
    if site.hub.full():
        return JSONResponse({"error": "too many live connections; close another tab"}, status_code=503)
    initial = [readings_json(m) for m in site.hub.latest.values()]
    scope = request.scope

    def allowed() -> bool:
        return site.web.loopback_only or signed_in(site, scope)

    async def stream() -> AsyncIterator[str]:
        client = site.hub.subscribe()
        if client is None:  # filled up since the check above
            return
        try:
            yield "retry: 3000\n\n"
            for data in initial:
                yield f"event: reading\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(client.queue.get(), SSE_PING_S)
                except TimeoutError:
                    item = ": ping\n\n"
                if item is None or not allowed():
                    return
                yield item
        finally:
            site.hub.unsubscribe(client)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
