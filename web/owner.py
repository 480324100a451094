"""The owner's first password through ``/setup``, and ``GET /api/csrf``.

The setup code (:mod:`meterpipe.web.setup_code`) stands in for a password once: it
comes from ``meterpipe run``'s log or its mode-0600 file, and every try counts against
the sign-in rate limit.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from meterpipe.web import guard
from meterpipe.web.auth import hash_password, password_problem
from meterpipe.web.guard import csrf_for
from meterpipe.web.setup_code import check_and_use, code_path, pending
from meterpipe.web.site import site_of

log = logging.getLogger(__name__)

async def api_csrf(request: Request) -> Response:
    return JSONResponse({"csrf": csrf_for(request), "header": "X-CSRF-Token"})


async def setup_page(request: Request) -> Response:
    """GET: the form (setup code, new password twice); POST: set the first password."""
    from meterpipe.web.pages import render

    site = site_of(request)
    target = guard.safe_next(request.query_params.get("next") or "/settings")
    if site.passwords.exists():
        return RedirectResponse("/login?next=" + target, status_code=303)
    code_file = code_path(site.web.password_file)
    message, status = None, 200
    if request.method == "POST":
        form = await request.form()
        target = guard.safe_next(str(form.get("next") or "/settings"))
        status, message = await _setup(request, form.get("code"), form.get("password"), form.get("again"))
        if status == 200:
            response = RedirectResponse(target, status_code=303)
            guard.set_session(response, request, site.sessions.create(site.passwords.generation))
            return response
    return await render(request, "setup.html", status, page="setup", next=target, message=message,
                        code_file=str(code_file), pending=pending(site.web.password_file))


async def _setup(request: Request, code: object, password: object, again: object) -> tuple[int, str]:
    from meterpipe.web.cli import write_password_file

    site = site_of(request)
    client = guard.client_address(request)
    if not isinstance(password, str) or not isinstance(again, str) or password != again:
        return 400, "the two passwords differ"
    problem = password_problem(password)
    if problem is not None:
        return 400, problem
    slot = site.limiter.reserve(client)  # a guess at the code counts like a wrong password
    if slot is None:
        return 429, f"too many failed tries: try again in {int(site.limiter.retry_after(client)) + 1} s"
    if not check_and_use(site.web.password_file, code):
        log.warning("wrong or expired setup code from %s", client)
        return 401, ("wrong or expired setup code: restart meterpipe for a new one (it is in the log and in "
                     f"{code_path(site.web.password_file)})")
    site.limiter.release(slot)
    loop = asyncio.get_running_loop()
    async with site.checks:
        line = await loop.run_in_executor(None, hash_password, password)
    await loop.run_in_executor(None, write_password_file, site.web.password_file, line)
    site.passwords.stored()  # picks up the new file: a new generation
    log.info("web page password set through /setup from %s", client)
    return 200, "password set"
