"""The Starlette application: routes, error handlers, the access guard, lifespan.

``build_app(site)`` wires the pages (:mod:`~meterpipe.web.pages`), the JSON API
(:mod:`~meterpipe.web.api`) and the sign-in routes (:mod:`~meterpipe.web.guard`);
the lifespan starts the live hub's SUB socket and closes the history reader.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meterpipe.common.errors import ConfigError
from meterpipe.web import api, config_api, guard, owner, pages, settings
from meterpipe.web.params import ParamError
from meterpipe.web.site import Site

STATIC = Path(__file__).with_name("static")

SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                 b"frame-ancestors 'none'; form-action 'self'"),
)


class SecurityHeaders:
    """Adds the headers above to every answer (no CORS header is ever set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def param_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ParamError)
    if guard.is_api(request.url.path):
        return JSONResponse(exc.as_json(), status_code=exc.status)
    return await pages.render(request, "error.html", exc.status, page="", error=exc)


async def config_error(request: Request, exc: Exception) -> Response:
    """A settings request about something that is not there (a removed meter, a typo'd section)."""
    assert isinstance(exc, ConfigError)
    if guard.is_api(request.url.path):
        return config_api.config_error(exc)
    return await pages.render(request, "error.html", 404, page="", error=exc)


def routes() -> list[Route | Mount]:
    return [
        Route("/", pages.now_page),
        Route("/live", pages.live_page),
        Route("/history", pages.history_page),
        Route("/peaks", pages.peaks_page),
        Route("/costs", pages.costs_page),
        Route("/export", pages.export_page),
        Route("/status", pages.status_page),
        Route("/login", pages.login_page, methods=["GET", "POST"]),
        Route("/setup", owner.setup_page, methods=["GET", "POST"]),
        Route("/settings", settings.settings_page),
        Route("/settings/meters", settings.meter_post, methods=["POST"]),
        Route("/settings/meters/new", settings.meter_page),
        Route("/settings/meters/{name}", settings.meter_page),
        Route("/settings/meters/{name}/delete", settings.meter_delete, methods=["POST"]),
        Route("/settings/{section}", settings.section_page, methods=["GET", "POST"]),
        Route("/api/config", config_api.api_config, methods=["GET", "PUT", "PATCH"]),
        Route("/api/csrf", owner.api_csrf),
        Route("/logout", guard.logout, methods=["POST"]),
        Route("/api/login", guard.api_login, methods=["POST"]),
        Route("/api/meters", api.api_meters),
        Route("/api/now", api.api_now),
        Route("/api/energy", api.api_energy),
        Route("/api/series", api.api_series),
        Route("/api/range", api.api_range),
        Route("/api/costs", api.api_costs),
        Route("/api/peaks", api.api_peaks),
        Route("/api/status", api.api_status),
        Route("/export.csv", api.export_csv),
        Route("/events", api.events),
        Route("/favicon.ico", lambda request: RedirectResponse("/static/favicon.svg", status_code=301)),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]


def build_app(site: Site, *, start_live: bool = True) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if start_live:
            site.hub.start()
        try:
            yield
        finally:
            await site.hub.stop()
            site.store.close()
            if site.paused:  # ended during a meter test: its reader must not stay stopped
                from meterpipe.web.settings import resume_reader

                for name in sorted(site.paused):
                    resume_reader(name)

    middleware = [Middleware(SecurityHeaders), Middleware(guard.AccessGuard, site=site, render=pages.refuse)]
    app = Starlette(routes=routes(), lifespan=lifespan, middleware=middleware,
                    exception_handlers={ParamError: param_error, ConfigError: config_error})
    app.state.site = site
    return app
