"""The JSON API (and the CSV export and the SSE stream): the same data the pages show.

Bad parameters give 400 with ``{"error": ..., "parameter": ...}``, an unknown meter 404.
Nothing here sets CORS headers: other sites' pages cannot read these answers.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from meterpipe.common.schema import readings_json
from meterpipe.web import params, views
from meterpipe.web.params import ParamError
from meterpipe.web.site import Site, site_of
from meterpipe.web.status import meter_status

SSE_PING_S = 30.0
SERIES_HOURS = 3
KILO_REGISTERS = ("kWh", "kvarh", "kVAh")  # history gives registers in Wh / varh / VAh


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
                    points.append((ts, float(value) * (1000 if reading.unit in KILO_REGISTERS else 1)))
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
    site = site_of(request)
    q = request.query_params
    meter = await known_meter(site, request)
    step = params.choice(q, "step", params.EXPORT_STEPS, "hour")
    first, last = params.day_range(q, site.today(), step)
    if step == "minute":
        start = datetime.combine(first, datetime.min.time(), site.zone)
        end = datetime.combine(last + timedelta(days=1), datetime.min.time(), site.zone)
        header, data = await site.store.run(lambda r: r.minutes(meter, start, end))
        rows: list[list[Any]] = [list(row) for row in data]
    else:
        records = await site.store.run(lambda r: views.energy_rows(r, meter, step, first, last))
        keys = ["start", *sorted({k for rec in records for k in rec} - {"start", "gap"}), "gap"]
        header, rows = keys, [[rec.get(k, "") for k in keys] for rec in records]
    name = f"meterpipe-{meter}-{step}-{first}_{last}.csv"
    return StreamingResponse(_csv_lines(header, rows), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _csv_lines(header: list[str], rows: list[list[Any]]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for i, row in enumerate(rows):
        writer.writerow(["true" if v is True else "false" if v is False else v for v in row])
        if i % 500 == 499:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


# --- server-sent events ---------------------------------------------------------------


async def events(request: Request) -> Response:
    site = site_of(request)
    client = site.hub.subscribe()
    if client is None:
        return JSONResponse({"error": "too many live connections; close another tab"}, status_code=503)
    initial = [readings_json(m) for m in site.hub.latest.values()]

    async def stream() -> AsyncIterator[str]:
        try:
            yield "retry: 3000\n\n"
            for data in initial:
                yield f"event: reading\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(client.queue.get(), SSE_PING_S)
                except TimeoutError:
                    yield ": ping\n\n"
                    continue
                if item is None:
                    return
                yield item
        finally:
            site.hub.unsubscribe(client)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def param_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ParamError)
    return JSONResponse(exc.as_json(), status_code=exc.status)
