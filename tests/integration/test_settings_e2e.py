"""From ``meterpipe run`` on a fresh install to a new meter's readings, using only the browser
(issue 11): real supervisord, real processes, a simulated meter on a pty, Debian's chromium.

The user starts ``meterpipe run`` with no config (it writes the starter and logs a setup
code), opens the page, sets the first password with the code, adds the meter, tests it
with a wrong key (the report names ``decrypt``/``auth`` and its advice) and the right one,
saves, and sees the readings on the Now page. Nothing else restarted: the pids of every
other process are the same before and after. Screenshots: ``settings-*.png``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meterpipe.deploy.supervise import supervisor_env, supervisord_conf
from tests.support import cleanup, free_port, screenshots, short_dir, stop_process, wait_port, write_secret

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt install chromium)"),
]
CLI = [sys.executable, "-m", "meterpipe.deploy.cli"]
KEY = "5a6b7c8d9e0f11223344556677889900"
WRONG = "00998877665544332211f0e9d8c7b6a5"
PASSWORD = "my own long password"


def pids(rundir: Path) -> dict[str, int]:
    command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(supervisord_conf()), "status"]
    out = subprocess.run(command, env=supervisor_env(None, rundir), capture_output=True, text=True,
                         timeout=30).stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+RUNNING\s+pid (\d+),", out, re.M)}


def wait_for(what: str, probe: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def core_running(rundir: Path) -> dict[str, int]:
    """The pids once decoder, csv, history and web are RUNNING (up for their startsecs)."""
    def probe() -> dict[str, int] | None:
        found = pids(rundir)
        return found if {"decoder", "csv", "history", "web"} <= set(found) else None

    found: dict[str, int] = wait_for("decoder, csv, history and web running", probe)
    return found


@pytest.fixture
def fresh_install() -> Iterator[dict[str, Any]]:
    """``meterpipe run`` in an empty folder; a simulated E450 on a pty, not configured yet."""
    work = short_dir("mp-set-")
    rundir = work / "rt"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "METERPIPE_CONFIG"}
    env["METERPIPE_RUNTIME_DIR"] = str(rundir)
    log = open(work / "run.log", "wb")  # noqa: SIM115 - closed below
    run = subprocess.Popen([*CLI, "run", "--web", f"127.0.0.1:{port}"], cwd=work, env=env, stdout=log,
                           stderr=subprocess.STDOUT)
    key_file = write_secret(work / "sim.key", KEY)
    pty = work / "ttyGARAGE"
    sim = subprocess.Popen([*CLI, "simulate", "--model", "e450", "--link", str(pty), "--interval", "1",
                            "--key-file", str(key_file)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_port(port, timeout=60, proc=run)
        wait_for("the simulator's pty", pty.exists, 20)
        yield {"work": work, "rundir": rundir, "base": f"http://127.0.0.1:{port}", "pty": pty,
               "log": work / "run.log", "run": run}
    finally:
        stop_process(sim)
        stop_process(run, timeout=40)
        log.close()
        cleanup(work)


def test_a_new_meter_from_the_browser_only(fresh_install: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    base, rundir, shots = fresh_install["base"], fresh_install["rundir"], screenshots()
    text = fresh_install["log"].read_text()
    assert "wrote a starter config" in text
    code = re.search(r"setup code ([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})", text).group(1)  # type: ignore[union-attr]
    before = core_running(rundir)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        try:
            page.goto(base + "/settings")
            assert page.url.startswith(base + "/setup")
            page.screenshot(path=str(shots / "settings-setup.png"), full_page=True)
            page.fill("input[name=code]", code)
            page.fill("input[name=password]", PASSWORD)
            page.fill("input[name=again]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(base + "/settings")
            assert page.locator("#settings-meters .empty").is_visible()
            page.screenshot(path=str(shots / "settings-empty.png"), full_page=True)

            page.click("#add-meter")
            page.fill("#f-name", "garage")
            page.fill("#f-port", str(fresh_install["pty"]))
            page.select_option("#f-link", "hdlc")
            page.select_option("#f-model", "e450")
            page.fill("#f-key", WRONG)
            page.click("#test-meter")
            report = page.wait_for_selector("#probe-report:not(.running)", timeout=25000)
            kinds = page.locator("#probe-report [data-kind]").evaluate_all("els => els.map(e => e.dataset.kind)")
            page.screenshot(path=str(shots / "settings-test-wrong-key.png"), full_page=True)
            assert set(kinds) & {"decrypt", "auth"}, report.inner_text()
            assert "key" in report.inner_text().lower()

            page.fill("#f-key", KEY)  # the form kept everything else as typed
            page.click("#test-meter")
            page.wait_for_selector("#probe-report.ok", timeout=25000)
            assert "OK" in page.inner_text("#probe-report .verdict")
            assert page.locator("#probe-report table tbody tr").count() >= 5
            page.screenshot(path=str(shots / "settings-test-ok.png"), full_page=True)

            page.click("#save")
            page.wait_for_url(base + "/settings")
            assert page.locator('tr[data-meter="garage"]').is_visible()
            assert "saved meter garage" in page.inner_text("main")
            page.screenshot(path=str(shots / "settings-saved.png"), full_page=True)

            page.goto(base + "/")
            page.wait_for_selector('section[data-meter="garage"][data-seq]', timeout=30000)
            power = page.inner_text('section[data-meter="garage"]')
            assert "W" in power
            page.screenshot(path=str(shots / "settings-now-garage.png"), full_page=True)

            # testing the saved meter again uses its stored key, and pauses its reader meanwhile
            page.goto(base + "/settings/meters/garage")
            assert "set (fingerprint" in page.inner_text("#state-key")
            page.click("#test-meter")
            page.wait_for_selector("#probe-report.ok", timeout=25000)
            assert not errors, errors
        finally:
            browser.close()
    after = wait_for("reader-garage running again", lambda: (p := pids(rundir)) and "reader-garage" in p and p)
    assert {name: after.get(name) for name in before} == before, (before, after)
    toml = (fresh_install["work"] / "meterpipe.toml").read_text()
    assert "# One table per meter" in toml and 'key_file = "keys/garage.key"' in toml and KEY not in toml
    log = fresh_install["log"].read_text()
    assert KEY not in log and WRONG not in log and PASSWORD not in log


def test_a_web_change_restarts_the_web_page_only(fresh_install: dict[str, Any]) -> None:
    """PATCH /api/config of the tariff: the answer arrives, then the web process restarts with
    the new setting (exit 75, restarted by supervisord); the decoder and the publishers keep
    their pids; sessions are in memory, so the owner signs in again."""
    import httpx

    base, rundir = fresh_install["base"], fresh_install["rundir"]
    code = re.search(r"setup code (\S{4}-\S{4}-\S{4})", fresh_install["log"].read_text()).group(1)  # type: ignore[union-attr]
    with httpx.Client(base_url=base, timeout=30) as client:
        r = client.post("/setup", data={"code": code, "password": PASSWORD, "again": PASSWORD})
        assert r.status_code in (200, 303) and "meterpipe_session" in client.cookies
        csrf = client.get("/api/csrf").json()["csrf"]
        before = core_running(rundir)
        r = client.patch("/api/config", json={"web": {"tariff": {"currency": "CHF", "import_price": 0.3}}},
                         headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["web_restarts"] and "web.tariff.currency" in answer["changed"]

    def web_back() -> dict[str, int] | None:
        found = pids(rundir)
        return found if found.get("web") not in (None, before["web"]) else None

    after = wait_for("the web page back with a new pid", web_back, 30)
    wait_port(int(base.rsplit(":", 1)[1]), timeout=20)
    assert {k: after.get(k) for k in before if k != "web"} == {k: v for k, v in before.items() if k != "web"}
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get("/api/config").status_code == 401  # signed out by the restart
        assert client.post("/api/login", json={"password": PASSWORD}).status_code == 200
        assert client.get("/api/config").json()["config"]["web"]["tariff"]["currency"] == "CHF"
    log = fresh_install["log"].read_text()
    assert "restarting the web page for its new settings" in log and "exit status 75" in log
