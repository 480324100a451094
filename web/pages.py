"""The HTML pages, rendered on the server (Jinja2, autoescaped): each works without
JavaScript; ``static/app.js`` adds live updates and the charts."""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from meterpipe.common.schema import readings_json
from meterpipe.common.web_config import DAY_NAMES
from meterpipe.web import api, guard, params, views
from meterpipe.web.site import Site, site_of
from meterpipe.web.status import meter_status

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

TEMPLATES = Path(__file__).with_name("templates")
NAV = (("now", "/", "Now"), ("live", "/live", "Live"), ("history", "/history", "History"),
       ("peaks", "/peaks", "Peaks"), ("costs", "/costs", "Costs"), ("export", "/export", "Export"),
       ("status", "/status", "Status"), ("settings", "/settings", "Settings"))

_templates: Jinja2Templates | None = None


def templates() -> Jinja2Templates:
    global _templates
    if _templates is None:  # jinja2 loads with the first page, not at start
        from starlette.templating import Jinja2Templates

        _templates = Jinja2Templates(directory=str(TEMPLATES))
        env = _templates.env
        env.autoescape = True
        env.filters["kwh"] = lambda wh: "–" if wh is None else f"{float(wh) / 1000:,.2f}".replace(",", "\u202f")
        env.filters["num"] = _num
        env.filters["price"] = _price
        env.filters["money"] = lambda v: "–" if v is None else f"{v:,.2f}".replace(",", "\u202f")
        env.filters["pct"] = lambda v, top: f"{max(0.0, min(100.0, 100 * float(v or 0) / float(top))):.2f}"
    return _templates


def _price(value: float) -> str:
    """A price per kWh: two decimals at least, up to four (0.30, 0.2745)."""
    text = f"{value:.4f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}"


def _num(value: Any, digits: int = 0) -> str:
    if value is None or isinstance(value, str):
        return "–" if value is None else value
    return f"{float(value):,.{digits}f}".replace(",", "\u202f")


async def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    site = site_of(request)
    base = {"nav": NAV, "web": site.web, "loopback": site.web.loopback_only,
            "signed_in": guard.signed_in(site, request.scope), "command": site.set_password_command(),
            "has_password": site.passwords.exists(), "zone": site.web.timezone,
            "csrf": guard.csrf_for(request)}
    base.update(context)
    return templates().TemplateResponse(request, name, base, status_code=status)


async def refuse(request: Request, name: str, status: int) -> Response:
    return await render(request, name, status, page="")


async def _meter_context(request: Request) -> tuple[Site, list[str], str | None]:
    site = site_of(request)
    names = [m["meter"] for m in await api.meters_info(site)]
    meter = params.meter(request.query_params, names, default=names[0] if names else None) if names else None
    return site, names, meter


async def now_page(request: Request) -> Response:
    site = site_of(request)
    infos = await api.meters_info(site)
    meters = []
    for info in infos:
        msg = site.hub.latest.get(info["meter"])
        data = readings_json(msg) if msg is not None else None
        meters.append({"name": info["meter"], "info": info, "data": data, "view": views.now_view(data),
                       "age": site.hub.age(info["meter"]), "empty": api.no_push(info["meter"])})
    return await render(request, "now.html", page="now", meters=meters, currency=site.web.tariff.currency)


async def live_page(request: Request) -> Response:
    _site, names, meter = await _meter_context(request)
    return await render(request, "live.html", page="live", names=names, meter=meter,
                        hours=params.choice(request.query_params, "hours", ("1", "3", "6", "12", "24", "48"), "3"))


async def history_page(request: Request) -> Response:
    site, names, meter = await _meter_context(request)
    q = request.query_params
    view = params.choice(q, "view", ("day", "month", "year"), "day")
    anchor = params.day(q, "date", site.today())
    data = None
    if meter is not None:
        m = meter
        data = await site.store.run(lambda r: views.history_view(r, m, view, anchor, site.web.tariff,
                                                                      site.zone))
    return await render(request, "history.html", page="history", names=names, meter=meter, view=view,
                        anchor=anchor, data=data, today=site.today(), currency=site.web.tariff.currency)


async def peaks_page(request: Request) -> Response:
    site, names, meter = await _meter_context(request)
    q = request.query_params
    anchor = params.day(q, "date", site.today()).replace(day=1)
    first, last = views.period("month", anchor)
    days: list[views.PeakRow] = []
    months: list[views.PeakRow] = []
    if meter is not None:
        m = meter
        days = await site.store.run(lambda r: views.peaks(r, m, "day", first, last))
        months = await site.store.run(lambda r: views.peaks(r, m, "month", date(anchor.year, 1, 1),
                                                            date(anchor.year, 12, 31)))
    top = max([1.0] + [p.mean_w for p in days])
    by_day = {p.period: p for p in days}
    day_slots = [(first + timedelta(days=i), by_day.get(first + timedelta(days=i)))
                 for i in range((last - first).days + 1)]
    return await render(request, "peaks.html", page="peaks", names=names, meter=meter, anchor=anchor,
                        days=days, day_slots=day_slots, months=months, top=top, prev=views.shift("month", anchor, -1),
                        next=views.shift("month", anchor, 1))


async def costs_page(request: Request) -> Response:
    site, names, meter = await _meter_context(request)
    q = request.query_params
    year = params.day(q, "date", site.today()).year
    tariff = site.web.tariff
    rows: list[tuple[date, Any]] = []
    total = None
    if meter is not None:
        m = meter
        rows, total = await site.store.run(lambda r: views.costs_table(r, m, tariff, "month", date(year, 1, 1),
                                                                       date(year, 12, 31)))
    return await render(request, "costs.html", page="costs", names=names, meter=meter, year=year, rows=rows,
                        total=total, tariff=tariff, days=DAY_NAMES)


async def export_page(request: Request) -> Response:
    site, names, meter = await _meter_context(request)
    today = site.today()
    return await render(request, "export.html", page="export", names=names, meter=meter, today=today,
                        month_start=today.replace(day=1), steps=params.EXPORT_STEPS)


async def status_page(request: Request) -> Response:
    site = site_of(request)
    now = time.time()
    names = [m["meter"] for m in await api.meters_info(site)]
    processes, note = await site.processes.get()
    meters = [{"name": n, **meter_status(site.hub.status.get(n), site.hub.age(n, now), now),
               "empty": api.no_push(n)} for n in names]
    return await render(request, "status.html", page="status", meters=meters, processes=processes, note=note,
                        live={"received": site.hub.received, "clients": site.hub.clients})


async def login_page(request: Request) -> Response:
    site = site_of(request)
    target = guard.safe_next(request.query_params.get("next"))
    message = None
    status = 200
    if request.method == "POST":
        form = await request.form()
        target = guard.safe_next(str(form.get("next") or "/"))
        status, message, token = await guard.attempt(request, form.get("password"))
        if token is not None:
            response = RedirectResponse(target, status_code=303)
            guard.set_session(response, request, token)
            return response
    if site.web.loopback_only and request.method == "GET":
        message = "this server listens on a loopback address only: no sign-in is needed"
    return await render(request, "login.html", status, page="login", next=target, message=message)
