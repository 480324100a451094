"""The pages in a real headless browser: Debian's chromium driven by playwright (never
``playwright install``). Screenshots of every page, desktop and phone, go to
``$METERPIPE_SCREENSHOTS`` (default ``<tmp>/screenshots``)."""

from __future__ import annotations

import io
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zmq

from meterpipe.common.schema import Status, encode_readings, encode_status, reading_topic, status_topic
from meterpipe.web import cli
from tests.support import cleanup, free_port, screenshots, short_dir
from tests.web.conftest import History, Registers, make_push, readings_pub, web_process, write_config

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt install chromium)")

PAGES = {"now": "/", "live": "/live", "history-day": "/history", "history-month": "/history?view=month",
         "history-year": "/history?view=year", "peaks": "/peaks", "costs": "/costs", "export": "/export",
         "status": "/status", "login": "/login",
         "history-dst-autumn": "/history?meter=dst&view=day&date=2026-10-25",  # 25 hours
         "history-dst-spring": "/history?meter=dst&view=day&date=2026-03-29",  # 23 hours
         "history-tariff-only": "/history?meter=dsmr&view=day"}
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Live:
    def __init__(self, base: str, sock: zmq.Socket[bytes]) -> None:
        self.base = base
        self.sock = sock
        self.seq = 0

    def status(self) -> None:
        status = Status("house", time.time_ns(), {"bytes": 120_000, "frames_ok": 400, "pushes_out": 400,
                                                   "decrypt_errors": 2},
                        "decryption failed for meter 'house': check the meter's key (meters.house.key)",
                        "decrypt", time.time_ns() - 2_000_000_000)
        self.sock.send_multipart([status_topic("house"), encode_status(status)])

    def push(self, power: int) -> None:
        self.seq += 1
        msg = make_push("house", self.seq, time.time(), Registers(t1=9_000_000 + self.seq), power)
        self.sock.send_multipart([reading_topic("house"), encode_readings(msg)])


@pytest.fixture(scope="module")
def site(history: History) -> Iterator[Live]:
    with readings_pub("mpb-") as (sock, endpoint, rundir):
        port = free_port()
        config = write_config(rundir, history.path, listen=f"127.0.0.1:{port}", readings=endpoint,
                              extra='[web.tariff.registers]\nt1 = 0.32\nt2 = 0.21\n')
        with web_process(config, port):
            live = Live(f"http://127.0.0.1:{port}", sock)
            live.push(2000)
            yield live


def new_page(browser: Any, viewport: dict[str, int], errors: list[str]) -> Any:
    page = browser.new_page(viewport=viewport)
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    return page


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_page_loads_without_errors(browser: Any, site: Live, viewport: dict[str, int]) -> None:
    errors: list[str] = []
    page = new_page(browser, viewport, errors)
    kind = "phone" if viewport is PHONE else "desktop"
    for name, path in PAGES.items():
        site.push(1500)
        site.status()
        page.goto(site.base + path)
        page.wait_for_load_state("networkidle") if name not in ("now", "live") else page.wait_for_timeout(700)
        if name == "live":
            page.wait_for_function("document.getElementById('live-chart').dataset.points > 0", timeout=5000)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"] + 1, f"{name} overflows sideways on {kind}: {width} px"
        page.screenshot(path=str(screenshots() / f"{name}-{kind}.png"), full_page=True)
    page.close()
    assert errors == []


def test_now_page_shows_the_pushed_value(browser: Any, site: Live) -> None:
    errors: list[str] = []
    page = new_page(browser, DESKTOP, errors)
    page.goto(site.base + "/")
    field = page.locator('.meter[data-meter="house"] [data-field="active_power_import"]')
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        site.push(4321)
        page.wait_for_timeout(200)
        if re.sub(r"\D", "", field.inner_text()) == "4321":
            break
    assert re.sub(r"\D", "", field.inner_text()) == "4321"
    assert page.locator('.meter[data-meter="house"] [data-auth]').inner_text() == "authenticated"
    l3 = page.locator('.meter[data-meter="house"] [data-field="active_power_import_l3"]')
    assert re.sub(r"\D", "", l3.inner_text()) == str(4321 - 2 * 1440)
    page.wait_for_function("document.querySelector('[data-today=import_wh]').textContent !== '–'", timeout=5000)
    page.close()
    assert errors == []


@pytest.mark.parametrize(("view", "step"), [("day", "hour"), ("month", "day"), ("year", "month")])
def test_history_bars_equal_the_api(browser: Any, site: Live, view: str, step: str) -> None:
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{site.base}/history?view={view}")
    chart = page.locator("#history-bars")
    first, last = chart.get_attribute("data-from"), chart.get_attribute("data-to")
    bars = page.eval_on_selector_all(
        "#history-bars .bar[data-start]", "els => els.map(e => [e.dataset.start, +e.dataset.importWh, +e.dataset.exportWh])")
    api = httpx.get(site.base + "/api/energy", params={"meter": "house", "step": step, "from": first, "to": last}).json()
    assert bars and [b[0] for b in bars] == [r["start"] for r in api]
    assert [b[1] for b in bars] == pytest.approx([r["import_wh"] for r in api])
    assert [b[2] for b in bars] == pytest.approx([r["export_wh"] for r in api])
    segs = page.eval_on_selector_all("#history-bars .bar[data-start]", "els => els.map(e => [...e.querySelectorAll('.up .seg')]"
                                     ".reduce((s, x) => s + +x.dataset.wh, 0))")
    assert segs == pytest.approx([r["import_t1_wh"] + r["import_t2_wh"] for r in api])
    page.close()


def test_login_flow_in_the_browser(browser: Any, history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    rundir = short_dir("mpl-")
    port = free_port()
    config = write_config(rundir, history.path, listen=f"0.0.0.0:{port}")
    errors: list[str] = []
    try:
        with web_process(config, port):
            page = new_page(browser, PHONE, errors)
            base = f"http://127.0.0.1:{port}"
            page.goto(base + "/history")
            assert "meterpipe web set-password --config" in page.inner_text("main")
            assert page.locator("#history-bars").count() == 0
            page.screenshot(path=str(screenshots() / "need-password-phone.png"), full_page=True)
            monkeypatch.setattr(sys, "stdin", io.StringIO("a good long password\n"))
            assert cli.main(["set-password", "--config", str(config)]) == 0
            page.goto(base + "/history")
            assert page.url.startswith(base + "/login")
            page.fill("input[name=password]", "wrong password!")
            page.click("button[type=submit]")
            assert "wrong password" in page.inner_text("#login-message")
            page.fill("input[name=password]", "a good long password")
            page.click("button[type=submit]")
            page.wait_for_url(base + "/history")
            assert page.locator("#history-bars .bar[data-start]").count() > 0
            cookie = next(c for c in page.context.cookies() if c["name"] == "meterpipe_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            page.screenshot(path=str(screenshots() / "login-done-phone.png"), full_page=True)
            page.close()
    finally:
        cleanup(rundir)
    assert errors == [] or all("401" in e or "403" in e for e in errors)


@pytest.mark.parametrize(("day", "hours"), [("2026-03-29", 23), ("2026-10-25", 25)])
def test_dst_day_bars_in_the_browser(browser: Any, site: Live, day: str, hours: int) -> None:
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{site.base}/history?meter=dst&view=day&date={day}")
    starts = page.eval_on_selector_all("#history-bars .bar[data-start]", "els => els.map(e => e.dataset.start)")
    assert len(starts) == hours == len(set(starts))
    api = httpx.get(site.base + "/api/energy", params={"meter": "dst", "step": "hour", "from": day, "to": day}).json()
    assert starts == [r["start"] for r in api]
    page.close()


def test_tariff_only_meter_in_the_browser(browser: Any, site: Live) -> None:
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{site.base}/history?meter=dsmr&view=day")
    total = page.locator('[data-total="import_wh"]').inner_text()
    assert float(total.replace("\u202f", "")) > 0
    heights = page.eval_on_selector_all("#history-bars .bar[data-start] .up", "els => els.map(e => e.getBoundingClientRect()"
                                        ".height ? [...e.querySelectorAll('.seg')].reduce((s, x) => s + x.getBoundingClientRect().height, 0) : 0)")
    assert heights and max(heights) > 0 and min(heights) < max(heights)  # not every bar full height
    page.close()
