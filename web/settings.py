"""The Settings pages: meters, publishers and the web page, for the signed-in owner only.

Forms are generated from :mod:`meterpipe.common.config_spec`; a save goes through
:func:`meterpipe.web.settings_apply.save_and_apply` (validated by the processes' own
loader, written keeping the user's comments, applied by restarting only what changed).
A failed validation shows the loader's message beside its field and writes nothing.
"Test this meter" opens the port with the entered settings for up to 15 s
(:mod:`meterpipe.web.probe_run`) without saving and without touching the running readers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from meterpipe.common.config import config_from_dict
from meterpipe.common.config_edit import plan_edit
from meterpipe.common.config_file import Upload, plain, read_tables
from meterpipe.common.config_spec import METER, SECTIONS, TableSpec
from meterpipe.common.errors import ConfigError, MeterpipeError
from meterpipe.web import guard
from meterpipe.web import settings_forms as forms
from meterpipe.web.guard import csrf_for, csrf_ok, csrf_refused
from meterpipe.web.settings_apply import config_path, current_view, restart_if_asked, save_and_apply
from meterpipe.web.site import Site, site_of

log = logging.getLogger(__name__)

BY_ID = Path("/dev/serial/by-id")
RAW_PORTS = ("ttyUSB", "ttyACM", "ttyAMA", "serial", "ttyS0")
PROBE_SECONDS = 15.0
CA_MAX_BYTES = 64 * 1024


def serial_ports() -> list[tuple[str, str]]:
    """(path to offer, raw device) of the serial ports here: stable by-id names first."""
    found: list[tuple[str, str]] = []
    try:
        for entry in sorted(BY_ID.iterdir()):
            found.append((str(entry), os.path.realpath(entry)))
    except OSError:
        pass
    seen = {raw for _, raw in found}
    try:
        for name in sorted(os.listdir("/dev")):
            path = f"/dev/{name}"
            if name.startswith(RAW_PORTS) and path not in seen:
                found.append((path, path))
    except OSError:
        pass
    return found


async def _render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    from meterpipe.web.pages import render

    site = site_of(request)
    notices = site.notices.pop(guard.session_token(request.scope) or "", [])
    background = BackgroundTask(restart_if_asked, site) if site.exit_after_response else None
    response = await render(request, name, status, page="settings", csrf=csrf_for(request), notices=notices,
                            **context)
    response.background = background
    return response


def _notice(request: Request, lines: list[str]) -> None:
    token = guard.session_token(request.scope)
    if token:
        site_of(request).notices[token] = lines


async def settings_page(request: Request) -> Response:
    site = site_of(request)
    view, _config = await current_view(site)
    processes, note = await site.processes.get()
    sections = [(key, spec, forms.table_at(view, spec.path)) for key, spec in SECTIONS.items()]
    meters = [(m, forms.secret_state(m.get("key"))) for m in view.get("meters") or []]
    return await _render(request, "settings.html", meters=meters, sections=sections, processes=processes,
                         note=note, file=str(config_path(site)))


def _meter_or_404(view: dict[str, Any], name: str) -> dict[str, Any]:
    for m in view.get("meters") or []:
        if m.get("name") == name:
            return dict(m)
    raise ConfigError(f"meters.{name}", "no such meter")


async def meter_page(request: Request) -> Response:
    """GET /settings/meters/new and /settings/meters/{name}."""
    site = site_of(request)
    view, _ = await current_view(site)
    name = request.path_params.get("name")
    table = _meter_or_404(view, name) if name else {}
    return await _meter_form(request, table, name)


async def _meter_form(request: Request, table: dict[str, Any], was: str | None, *, status: int = 200,
                      form: dict[str, str] | None = None, error: ConfigError | None = None,
                      probe: dict[str, Any] | None = None) -> Response:
    return await _render(request, "settings_form.html", status, spec=METER, was=was,
                         fields=forms.shown_fields(METER, table, form, error), error=error, probe=probe,
                         ports=serial_ports(), action="/settings/meters", title=f"Meter {was}" if was else
                         "Add a meter")


async def _form(request: Request) -> dict[str, Any]:
    """The posted fields: text as str, an upload as (file name, its first bytes up to the limit)."""
    data = await request.form(max_files=1, max_fields=200)
    try:
        fields: dict[str, Any] = {}
        for key, value in data.multi_items():
            if isinstance(value, UploadFile):
                fields[key] = (value.filename or "", await value.read(CA_MAX_BYTES + 1))
            else:
                fields[key] = value
        return fields
    finally:
        await data.close()


async def meter_post(request: Request) -> Response:
    """POST /settings/meters: save (or test, with ``action=test``) the meter of the form."""
    site = site_of(request)
    form = await _form(request)
    if not csrf_ok(request, form):
        return csrf_refused()
    text = {k: v for k, v in form.items() if isinstance(v, str)}
    was = text.get("was") or None
    view, _ = await current_view(site)
    old = _meter_or_404(view, was) if was else {}
    try:
        table = forms.meter_table(text, old)
        wanted = forms.with_meter(view, table, was)
        if text.get("action") == "test":
            probe = await _probe(site, view, table, was)
            if "application/json" in request.headers.get("accept", ""):
                return JSONResponse(probe)  # the page's script: the form stays as typed
            return await _meter_form(request, old, was, form=text, probe=probe)
        outcome = await save_and_apply(request, wanted)
    except ConfigError as exc:
        if text.get("action") == "test" and "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"error": exc.message, "field": forms.error_field(exc)}, status_code=422)
        return await _meter_form(request, old, was, status=422, form=text, error=exc)
    _notice(request, [f"saved meter {table.get('name')}", *outcome.applied])
    return await _after_save(request)


async def _after_save(request: Request) -> Response:
    """Back to the overview; when the web page itself restarts, a page that says where it comes back."""
    site = site_of(request)
    if not site.exit_after_response:
        return RedirectResponse("/settings", status_code=303)
    from meterpipe.web.pages import render

    assert site.config is not None
    web = site.config.web
    host = "127.0.0.1" if web.host in ("0.0.0.0", "::") else (f"[{web.host}]" if ":" in web.host else web.host)
    same = (web.host, web.port) == (site.web.host, site.web.port)
    target = "/settings" if same else f"http://{host}:{web.port}/settings"
    response = await render(request, "restarting.html", 200, page="settings", target=target, same=same)
    response.background = BackgroundTask(restart_if_asked, site)
    return response


async def _probe(site: Site, view: dict[str, Any], table: dict[str, Any], was: str | None) -> dict[str, Any]:
    """Run "Test this meter" on the form's settings (the stored key when the field was left empty)."""
    from meterpipe.web.probe_run import run_probe

    path = config_path(site)
    loop = asyncio.get_running_loop()
    _, doc = await loop.run_in_executor(None, read_tables, path)
    entry = dict(table)
    if was is not None:
        entry["was"] = was
    edit = plan_edit(plain(doc), {"meters": [entry]})
    meter = config_from_dict({"meters": edit.check["meters"]}, source=path.absolute()).meters[0]
    assert site.config is not None
    for other in site.config.meters:
        if other.name != was and other.port == meter.port:
            raise ConfigError(f"meters.{meter.name}.port", f"is the port of meter {other.name}, whose reader "
                              f"reads it now; test it from that meter's settings")
    if site.editing.locked():
        raise ConfigError("meters", "another save or test is running; try again in a moment")
    async with site.editing:
        paused = await loop.run_in_executor(None, _pause_reader, was)  # two openers would split the bytes
        if paused is not None:
            site.paused.add(paused)  # resumed at the web's shutdown too, should it end meanwhile
        try:
            log.info("testing meter %s on %s for up to %g s", meter.name, meter.port, PROBE_SECONDS)
            report = await loop.run_in_executor(None, run_probe, meter, PROBE_SECONDS)
        finally:
            if paused is not None:
                await loop.run_in_executor(None, resume_reader, paused)
                site.paused.discard(paused)
    result: dict[str, Any] = report.as_json()
    return result


def _pause_reader(meter: str | None) -> str | None:
    """Stop the running reader of the meter under test (an existing one); its program name, or None."""
    from meterpipe.deploy.control import Supervisor, runtime_dir_from_env
    from meterpipe.deploy.programs import reader_program

    rundir = runtime_dir_from_env()
    if meter is None or rundir is None:
        return None
    name = reader_program(meter)
    try:
        return name if Supervisor(rundir).pause(name) else None
    except MeterpipeError as exc:
        log.warning("testing meter %s while its reader runs: %s", meter, exc.message)
        return name  # it may have stopped before the error: start it again in any case


def resume_reader(name: str) -> None:
    """Start a reader paused for a meter test again (also from the web's shutdown)."""
    from meterpipe.deploy.control import Supervisor, runtime_dir_from_env

    rundir = runtime_dir_from_env()
    if rundir is None:
        return
    try:
        problem = Supervisor(rundir).resume(name)
    except MeterpipeError as exc:
        problem = exc.message
    if problem:
        log.warning("after the meter test, %s did not start again: %s", name, problem)


async def meter_delete(request: Request) -> Response:
    site = site_of(request)
    form = await _form(request)
    if not csrf_ok(request, form):
        return csrf_refused()
    name = request.path_params["name"]
    view, _ = await current_view(site)
    _meter_or_404(view, name)
    try:
        outcome = await save_and_apply(request, forms.without_meter(view, name))
    except ConfigError as exc:
        _notice(request, [f"meter {name} not removed: {exc.message}"])
        return RedirectResponse("/settings", status_code=303)
    _notice(request, [f"removed meter {name}", *outcome.applied])
    return await _after_save(request)


def _section(request: Request) -> tuple[str, TableSpec]:
    key = request.path_params["section"]
    spec = SECTIONS.get(key)
    if spec is None:
        raise ConfigError(f"settings.{key}", "no such settings section")
    return key, spec


async def section_page(request: Request) -> Response:
    """GET and POST /settings/{section}: MQTT, CSV, journal, history, web, tariff."""
    site = site_of(request)
    key, spec = _section(request)
    view, _ = await current_view(site)
    table = forms.table_at(view, spec.path)
    if request.method == "GET":
        return await _section_form(request, key, spec, table)
    form = await _form(request)
    if not csrf_ok(request, form):
        return csrf_refused()
    text = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        new = forms.table_from_form(spec, text, table, spec.path)
        upload = form.get("ca_upload")
        uploads = [_ca_upload(upload[1])] if key == "mqtt" and isinstance(upload, tuple) and upload[0] else []
        outcome = await save_and_apply(request, forms.with_table(view, spec.path, new), uploads)
    except ConfigError as exc:
        return await _section_form(request, key, spec, table, status=422, form=text, error=exc)
    _notice(request, [f"saved {spec.title}", *outcome.applied])
    return await _after_save(request)


async def _section_form(request: Request, key: str, spec: TableSpec, table: dict[str, Any], *, status: int = 200,
                        form: dict[str, str] | None = None, error: ConfigError | None = None) -> Response:
    return await _render(request, "settings_form.html", status, spec=spec, was=None, section=key,
                         fields=forms.shown_fields(spec, table, form, error), error=error, probe=None, ports=[],
                         action=f"/settings/{key}", title=spec.title)


def _ca_upload(data: bytes) -> Upload:
    """An uploaded CA certificate, checked to be one (PEM that OpenSSL loads as trust anchors)."""
    import ssl

    field = "publishers.mqtt.ca_file"
    if len(data) > CA_MAX_BYTES:
        raise ConfigError(field, f"the upload is over {CA_MAX_BYTES // 1024} KiB: not a CA certificate")
    try:
        ssl.create_default_context(cadata=data.decode("ascii"))
    except (UnicodeDecodeError, ValueError, ssl.SSLError) as exc:
        raise ConfigError(field, "the upload is not a PEM certificate (-----BEGIN CERTIFICATE----- ...) "
                          "that OpenSSL can load") from exc
    return Upload("publishers.mqtt", "ca_file", "tls/mqtt-ca.pem", data)
