"""Access control as ASGI middleware, and the sign-in routes.

Every request: the ``Host`` header must name this server (else 421, DNS rebinding);
a POST's ``Origin`` must be this site (else 403, CSRF; the cookie is SameSite=Strict
too). Listening on loopback, that is all. Listening on any other address, only the
sign-in page, ``/api/login`` and static files are served until a password exists and
the client holds a valid session: pages answer with how to set a password (403) or a
redirect to the sign-in form (303), the API and ``/events`` with 403/401 JSON.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from http.cookies import SimpleCookie
from typing import TypeGuard
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from meterpipe.web.auth import SESSION_COOKIE, check_password, csrf_token, host_allowed, origin_allowed
from meterpipe.web.site import Site, site_of

log = logging.getLogger(__name__)

OPEN_PATHS = ("/login", "/api/login", "/logout", "/setup", "/favicon.ico")
# The owner's pages: a signed-in session always, even on loopback (other local users,
# and any local program, must not change the config).
OWNER_PREFIXES = ("/settings", "/api/config", "/api/csrf")
OPEN_PREFIXES = ("/static/",)
MAX_PASSWORD_BYTES = 1024

PageRenderer = Callable[[Request, str, int], Awaitable[Response]]  # (request, template, status)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def session_token(scope: Scope) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(raw)
    except Exception:  # http.cookies raises CookieError and others on odd input
        return None
    morsel = cookie.get(SESSION_COOKIE)
    return morsel.value if morsel is not None else None


def signed_in(site: Site, scope: Scope) -> bool:
    stored = site.passwords.stored()
    return stored is not None and site.sessions.valid(session_token(scope), site.passwords.generation)


def is_api(path: str) -> bool:
    return path.startswith("/api/") or path in ("/events", "/export.csv")


class AccessGuard:
    def __init__(self, app: ASGIApp, site: Site, render: PageRenderer) -> None:
        self.app = app
        self.site = site
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        site = self.site
        host = _header(scope, b"host")
        if not host_allowed(host, site.web.host, site.web.hosts):
            response: Response = Response(
                "unknown Host header: add the name you use to [web] hosts in the config\n",
                status_code=421, media_type="text/plain")
            await response(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD") and not origin_allowed(_header(scope, b"origin"), host):
            response = JSONResponse({"error": "cross-site request refused (Origin does not match Host)"},
                                    status_code=403)
            await response(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(OWNER_PREFIXES):
            await self._owner_only(scope, receive, send, path)
            return
        if site.web.loopback_only or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        if signed_in(site, scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        has_password = site.passwords.exists()
        if is_api(path):
            if has_password:
                response = JSONResponse({"error": "sign in first: POST /api/login"}, status_code=401)
            else:
                response = JSONResponse({"error": "no password set: run '" + site.set_password_command() + "'"},
                                        status_code=403)
        elif has_password:
            target = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
            response = RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)
        else:
            response = await self.render(request, "need_password.html", 403)
        await response(scope, receive, send)


    async def _owner_only(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        site = self.site
        if signed_in(site, scope):
            await self.app(scope, receive, send)
            return
        has_password = site.passwords.exists()
        response: Response
        if path.startswith("/api/"):
            if has_password:
                response = JSONResponse({"error": "sign in first: POST /api/login"}, status_code=401)
            else:
                response = JSONResponse({"error": "no password set: open /setup with the setup code from "
                                         "meterpipe's log, or run '" + site.set_password_command() + "'"},
                                        status_code=403)
        else:
            target = quote(path, safe="")
            response = RedirectResponse(("/login?next=" if has_password else "/setup?next=") + target,
                                        status_code=303)
        await response(scope, receive, send)


# --- CSRF ----------------------------------------------------------------------------
# Every state-changing request of a signed-in owner carries the session's CSRF token:
# forms in a hidden ``csrf`` field, scripts in the ``X-CSRF-Token`` header (from
# ``GET /api/csrf``). It is an HMAC of the session token with a secret of this process
# (:func:`meterpipe.web.auth.csrf_token`), compared in constant time.

CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


def csrf_for(request: Request) -> str:
    """The token the signed-in owner's forms carry ("" without a session)."""
    token = session_token(request.scope)
    return csrf_token(site_of(request).csrf_secret, token) if token else ""


def csrf_ok(request: Request, form: Mapping[str, object] | None = None) -> bool:
    expected = csrf_for(request)
    given = request.headers.get(CSRF_HEADER)
    if given is None and form is not None:
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    return bool(expected) and given is not None and hmac.compare_digest(expected.encode(), given.encode())


def csrf_refused() -> Response:
    return JSONResponse({"error": "missing or wrong CSRF token: reload the page (scripts: send the "
                         "X-CSRF-Token header from GET /api/csrf)"}, status_code=403)


# --- sign-in ------------------------------------------------------------------------


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


async def attempt(request: Request, password: object) -> tuple[int, str, str | None]:
    """(status, message, session token) for one sign-in attempt."""
    site = site_of(request)
    client = client_address(request)
    stored = site.passwords.stored()
    if stored is None:
        return 403, "no password set: run '" + site.set_password_command() + "'", None
    slot = site.limiter.reserve(client)  # counted as failed until it proves right
    if slot is None:
        wait = site.limiter.retry_after(client)
        return 429, f"too many failed sign-ins: try again in {int(wait) + 1} s", None
    if not _plausible(password):
        return 401, "wrong password", None
    async with site.checks:  # each scrypt check takes 16 MiB: only a few at a time
        ok = await asyncio.get_running_loop().run_in_executor(None, check_password, stored, password)
    if not ok:
        log.warning("failed sign-in from %s", client)
        return 401, "wrong password", None
    site.limiter.release(slot)
    log.info("signed in from %s", client)
    return 200, "signed in", site.sessions.create(site.passwords.generation)


def _plausible(password: object) -> TypeGuard[str]:
    """A non-empty string of at most MAX_PASSWORD_BYTES in UTF-8; a lone surrogate (JSON
    ``"\\ud800"``) cannot be one: it is a wrong password, never an error."""
    if not isinstance(password, str) or not password:
        return False
    try:
        return len(password.encode()) <= MAX_PASSWORD_BYTES
    except UnicodeEncodeError:
        return False


def set_session(response: Response, request: Request, token: str) -> None:
    site = site_of(request)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(site.sessions.ttl), path="/", httponly=True,
                        samesite="strict", secure=site.web.secure_cookie or request.url.scheme == "https")


async def api_login(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": 'expected JSON {"password": "..."}', "parameter": "password"}, status_code=400)
    password = body.get("password") if isinstance(body, dict) else None
    status, message, token = await attempt(request, password)
    headers = {"Retry-After": message.split()[-2]} if status == 429 else None
    response = JSONResponse({"ok": token is not None, "message": message}, status_code=status, headers=headers)
    if token is not None:
        set_session(response, request, token)
    return response


def safe_next(target: str | None) -> str:
    """Only a path on this site (never ``//other.example`` or a scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def logout(request: Request) -> Response:
    site = site_of(request)
    if signed_in(site, request.scope) and not csrf_ok(request, dict(await request.form())):
        return csrf_refused()
    site.sessions.drop(session_token(request.scope))
    response = RedirectResponse("/login" if not site.web.loopback_only else "/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=site.web.secure_cookie or request.url.scheme == "https")
    return response
