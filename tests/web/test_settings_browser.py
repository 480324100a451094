"""The settings forms in a real headless browser (Debian's chromium through playwright), on a
real web process without supervisord: a refused value shows its message beside the field and
leaves the file as it was; a valid one is saved with the user's comments; a CA certificate is
uploaded; the pages fit a phone. Screenshots: ``settings-form-*.png``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meterpipe.common.config import load_config
from meterpipe.common.config_file import write_starter
from meterpipe.web.auth import hash_password
from meterpipe.web.cli import write_password_file
from tests.support import free_port, screenshots
from tests.web.conftest import ca_pem, web_process

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt install chromium)")
PASSWORD = "the owner's password"
COMMENT = "# my own note about this file: keep me"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    port = free_port()
    path = tmp_path / "meterpipe.toml"
    write_starter(path, f"127.0.0.1:{port}")
    path.write_text(COMMENT + "\n" + path.read_text() + f'\n[endpoints]\nframes = "ipc://{tmp_path}/f"\n'
                    f'readings = "ipc://{tmp_path}/r"\n')
    write_password_file(load_config(path).web.password_file, hash_password(PASSWORD))
    with web_process(path, port):
        yield {"base": f"http://127.0.0.1:{port}", "path": path}


def sign_in(page: Any, base: str, target: str) -> None:
    page.goto(base + target)
    assert "/login" in page.url
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + target)


def test_a_refused_value_is_shown_beside_its_field_and_nothing_is_written(site: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    base, path = site["base"], site["path"]
    ca = ca_pem()
    before = path.read_bytes()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            sign_in(page, base, "/settings/meters/new")
            page.fill("#f-name", "house")
            page.fill("#f-port", "/dev/null")
            page.fill("#f-baudrate", "0")
            page.click("#save")
            page.wait_for_selector("#error-baudrate")
            assert "at least 1" in page.inner_text("#error-baudrate")
            assert "Not saved" in page.inner_text("#form-error")
            assert page.input_value("#f-name") == "house"  # what was typed stays
            page.screenshot(path=str(screenshots() / "settings-form-error.png"), full_page=True)
            assert path.read_bytes() == before
            page.fill("#f-baudrate", "9600")
            page.fill("#f-key", "0011")
            page.click("#save")
            page.wait_for_selector("#error-key")
            assert "hex digits" in page.inner_text("#error-key")
            assert page.input_value("#f-key") == ""  # a secret is never sent back
            assert "enter it again" in page.inner_text("#state-key")
            assert path.read_bytes() == before
            page.fill("#f-key", "00112233445566778899aabbccddeeff")
            page.click("#save")
            page.wait_for_url(base + "/settings")
            assert "restart meterpipe to apply" in page.inner_text("#notice")
            text = path.read_text()
            assert text.startswith(COMMENT) and "baudrate = 9600" in text
            assert "00112233445566778899aabbccddeeff" not in text

            page.goto(base + "/settings/mqtt")
            page.check("input[name=enabled]")
            page.check("input[name=tls]")
            page.fill("#f-port", "8883")
            page.set_input_files("#f-ca", files=[{"name": "ca.pem", "mimeType": "application/x-pem-file",
                                                  "buffer": ca}])
            page.screenshot(path=str(screenshots() / "settings-form-mqtt.png"), full_page=True)
            page.click("#save")
            page.wait_for_url(base + "/settings")
            mqtt = load_config(path).publishers.mqtt
            assert mqtt.enabled and mqtt.tls and mqtt.port == 8883
            assert mqtt.ca_file is not None and mqtt.ca_file.read_bytes() == ca

            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            sign_in(phone, base, "/settings")
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            phone.screenshot(path=str(screenshots() / "settings-form-phone.png"), full_page=True)
            phone.goto(base + "/settings/meters/house")
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            assert "set (fingerprint" in phone.inner_text("#state-key")
            phone.screenshot(path=str(screenshots() / "settings-form-meter-phone.png"), full_page=True)

            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(base + "/settings/meters/house")
            page.click("form.delete button")
            page.wait_for_url(base + "/settings")
            assert "removed meter house" in page.inner_text("#notice")
            assert load_config(path).meters == () and path.read_text().startswith(COMMENT)
        finally:
            browser.close()
