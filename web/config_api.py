"""``/api/config``: the settings as JSON, for scripts and tests.

* ``GET`` — ``{"file": ..., "config": <view>}``: the file's tables, every secret as
  ``{"set": true, "fingerprint": "3f2a1b2c", "source": "file"}`` or ``null``.
* ``PUT`` — the whole view; ``PATCH`` — a part (tables merge key by key, ``null``
  removes a setting or clears a secret, meters merge by ``name``). A secret given as
  text is a new value (stored in a key file), the state object keeps it.
  Both need the session and the ``X-CSRF-Token`` header (``GET /api/csrf``).
  A config the processes would refuse is a 422 naming the field, and nothing is
  written; a saved one answers what changed and what was restarted.
"""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meterpipe.common.errors import ConfigError
from meterpipe.web.guard import csrf_ok, csrf_refused
from meterpipe.web.settings_apply import config_path, current_view, restart_if_asked, save_and_apply
from meterpipe.web.settings_forms import patched
from meterpipe.web.site import site_of

MAX_BODY = 256 * 1024


def config_error(exc: ConfigError) -> Response:
    return JSONResponse({"error": exc.message, "field": exc.field,
                         "errors": [{"field": exc.field, "message": exc.message}]}, status_code=422)


async def api_config(request: Request) -> Response:
    site = site_of(request)
    if request.method == "GET":
        view, _ = await current_view(site)
        return JSONResponse({"file": str(config_path(site)), "config": view})
    if not csrf_ok(request):
        return csrf_refused()
    body = await request.body()
    if len(body) > MAX_BODY:
        return JSONResponse({"error": "request too large"}, status_code=413)
    import json

    try:
        wanted = json.loads(body)
    except ValueError:
        return JSONResponse({"error": "expected a JSON object"}, status_code=400)
    try:
        if request.method == "PATCH":
            view, _ = await current_view(site)
            wanted = patched(view, wanted)
        outcome = await save_and_apply(request, wanted)
    except ConfigError as exc:
        return config_error(exc)
    processes, note = await site.processes.get()
    answer = {**outcome.as_json(), "processes": [p.as_json() for p in processes], "processes_note": note}
    task = BackgroundTask(restart_if_asked, site) if site.exit_after_response else None
    return JSONResponse(answer, background=task)
