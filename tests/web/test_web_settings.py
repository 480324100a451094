"""The settings area over HTTP (Starlette's TestClient on the real app): first-run setup with
the one-time code, no default password, the owner-only guard, CSRF, Host, the rate limit,
field-named validation errors that write nothing, and no secret in any answer or log."""

from __future__ import annotations

import base64
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from meterpipe.common.config import load_config
from meterpipe.common.config_file import write_starter
from meterpipe.web.setup_code import code_path, new_code
from tests.web.conftest import ca_pem

KEY = "8e3f1a0b2c4d6e8f90a1b2c3d4e5f607"
AUTH = "17263544536271809faebdcc0b1a2938"
MQTT_PASSWORD = "hunter2-broker-pw"
OWNER_PASSWORD = "a long owner password"
HOST = "127.0.0.1:8080"


def secret_forms() -> list[str]:
    forms = []
    for hex_ in (KEY, AUTH):
        raw = bytes.fromhex(hex_)
        forms += [hex_, hex_.upper(), base64.b64encode(raw).decode(), hex_[:16], hex_[16:],
                  repr(raw)[2:-1]]
    forms += [MQTT_PASSWORD, base64.b64encode(MQTT_PASSWORD.encode()).decode(), OWNER_PASSWORD]
    return forms


class Recorder:
    """A TestClient that keeps every answer, for the secret scan."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.seen: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        if name not in ("get", "post", "put", "patch", "delete", "request"):
            return method

        def call(*args: Any, **kw: Any) -> Any:
            response = method(*args, **kw)
            self.seen.append(str(response.headers) + response.text)
            return response
        return call


def make_client(config_path: Path) -> Recorder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    from meterpipe.web.app import build_app
    from meterpipe.web.main import make_site

    app = build_app(make_site(load_config(config_path)), start_live=False)
    return Recorder(TestClient(app, base_url=f"http://{HOST}"))


@pytest.fixture
def fresh(tmp_path: Path) -> tuple[Path, Recorder]:
    """A fresh install: the starter config, no password, a setup code waiting."""
    path = tmp_path / "meterpipe.toml"
    write_starter(path, HOST)
    new_code(load_config(path).web.password_file)
    return path, make_client(path)


def setup_code(path: Path) -> str:
    return code_path(load_config(path).web.password_file).read_text().strip()


def sign_up(path: Path, client: Recorder) -> str:
    """Set the first password with the code; returns the session's CSRF token."""
    r = client.post("/setup", data={"code": setup_code(path), "password": OWNER_PASSWORD,
                                    "again": OWNER_PASSWORD}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/settings"
    token: str = client.get("/api/csrf").json()["csrf"]
    return token


@pytest.mark.parametrize("user,password", [("admin", "admin"), ("admin", "smartmeter"),
                                           ("admin", "meterpipe"), ("admin", ""), ("", "")])
def test_no_default_credentials_log_in_on_a_fresh_install(fresh: tuple[Path, Recorder], user: str,
                                                          password: str) -> None:
    path, client = fresh
    auth = (user, password)
    for r in (client.post("/login", data={"username": user, "password": password}, follow_redirects=False),
              client.post("/api/login", json={"username": user, "password": password}),
              client.get("/settings", auth=auth, follow_redirects=False),
              client.get("/api/config", auth=auth)):
        assert r.status_code in (303, 401, 403), r.status_code
        assert "meterpipe_session" not in r.headers.get("set-cookie", "")
    assert client.get("/settings", follow_redirects=False).headers["location"].startswith("/setup")
    # ... and they cannot be chosen as the first password either
    for weak in ("smartmeter", "meterpipe", "admin", ""):
        r = client.post("/setup", data={"code": setup_code(path), "password": weak, "again": weak})
        assert r.status_code == 400 and "meterpipe_session" not in r.headers.get("set-cookie", "")


def test_no_session_no_settings_and_no_config_json(fresh: tuple[Path, Recorder]) -> None:
    path, client = fresh
    for url in ("/settings", "/settings/meters/new", "/settings/mqtt"):
        r = client.get(url, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/setup")
    assert client.get("/api/config").status_code == 403
    assert client.get("/api/csrf").status_code == 403
    sign_up(path, client)
    client.client.cookies.clear()  # another browser: a password exists now, so sign in first
    r = client.get("/settings", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.get("/api/config").status_code == 401
    assert client.put("/api/config", json={}).status_code == 401


def test_the_setup_code_works_once_and_expires(tmp_path: Path) -> None:
    path = tmp_path / "meterpipe.toml"
    write_starter(path, HOST)
    password_file = load_config(path).web.password_file
    code = new_code(password_file)
    old = time.time() - 25 * 3600
    os.utime(code_path(password_file), (old, old))
    client = make_client(path)
    form = {"code": code, "password": OWNER_PASSWORD, "again": OWNER_PASSWORD}
    r = client.post("/setup", data=form)
    assert r.status_code == 401 and "expired" in r.text
    code = new_code(password_file)
    r = client.post("/setup", data={**form, "code": "WRNG-CODE-XXXX"})
    assert r.status_code == 401
    r = client.post("/setup", data={**form, "code": code.lower()}, follow_redirects=False)
    assert r.status_code == 303
    assert not code_path(password_file).exists()
    client.client.cookies.clear()
    r = client.post("/setup", data={**form, "code": code}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")  # a password exists: no setup


def test_state_changes_need_the_csrf_token(fresh: tuple[Path, Recorder]) -> None:
    path, client = fresh
    csrf = sign_up(path, client)
    before = path.read_bytes()
    meter = {"name": "garage", "port": "/dev/null", "action": "save"}
    assert client.post("/settings/meters", data=meter).status_code == 403
    assert client.post("/settings/meters", data={**meter, "csrf": "0" * 32}).status_code == 403
    assert client.post("/settings/csv", data={"enabled": ""}).status_code == 403
    assert client.put("/api/config", json={"meters": []}).status_code == 403
    assert client.patch("/api/config", json={"web": {}}, headers={"X-CSRF-Token": "x"}).status_code == 403
    assert client.post("/logout").status_code == 403
    assert path.read_bytes() == before
    r = client.post("/settings/meters", data={**meter, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert 'name = "garage"' in path.read_text()
    assert client.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303


def test_a_foreign_host_header_is_refused(fresh: tuple[Path, Recorder]) -> None:
    path, client = fresh
    sign_up(path, client)
    for url in ("/settings", "/api/config", "/setup"):
        assert client.get(url, headers={"Host": "evil.example"}).status_code == 421
    r = client.post("/api/config", headers={"Host": "127.0.0.1:8080", "Origin": "http://evil.example"})
    assert r.status_code == 403


def test_five_wrong_passwords_slow_the_sixth(fresh: tuple[Path, Recorder]) -> None:
    path, client = fresh
    sign_up(path, client)
    client.client.cookies.clear()
    for _ in range(5):
        assert client.post("/api/login", json={"password": "wrong password"}).status_code == 401
    r = client.post("/api/login", json={"password": OWNER_PASSWORD})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # guessing setup codes counts the same way
    assert client.post("/setup", data={"code": "x"}, follow_redirects=False).status_code in (303, 429)


def test_a_refused_save_names_the_field_and_writes_nothing(fresh: tuple[Path, Recorder]) -> None:
    path, client = fresh
    csrf = sign_up(path, client)
    before = sorted((p.name, p.read_bytes()) for p in path.parent.iterdir() if p.is_file())
    r = client.post("/settings/meters", data={"csrf": csrf, "name": "garage", "port": "/dev/null",
                                              "baudrate": "0", "key": KEY, "action": "save"})
    assert r.status_code == 422
    assert re.search(r'id="error-baudrate"[^>]*>must be', r.text), r.text
    r = client.patch("/api/config", json={"meters": [{"name": "garage", "port": "/dev/null", "parity": "X"}]},
                     headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and r.json()["field"] == "meters.garage.parity"
    r = client.put("/api/config", json={"web": {"listen": "nowhere"}}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and r.json()["field"] == "web.listen"
    after = sorted((p.name, p.read_bytes()) for p in path.parent.iterdir() if p.is_file())
    assert after == before
    assert not (path.parent / "keys").exists()


def test_no_answer_log_line_or_written_file_carries_a_secret(fresh: tuple[Path, Recorder],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path, client = fresh
    csrf = sign_up(path, client)
    h = {"X-CSRF-Token": csrf}
    r = client.post("/settings/meters", data={"csrf": csrf, "name": "house", "port": "/dev/null", "link": "hdlc",
                                              "key": KEY, "auth_key": AUTH, "action": "save"},
                    follow_redirects=False)
    assert r.status_code == 303
    r = client.post("/settings/mqtt", data={"csrf": csrf, "enabled": "on", "host": "127.0.0.1",
                                            "username": "meter", "password": MQTT_PASSWORD}, follow_redirects=False)
    assert r.status_code == 303
    view = client.get("/api/config").json()["config"]
    assert view["meters"][0]["key"]["set"] and view["publishers"]["mqtt"]["password"]["set"]
    for url in ("/settings", "/settings/meters/house", "/settings/mqtt", "/api/config", "/status", "/"):
        assert client.get(url).status_code == 200
    client.patch("/api/config", json={"meters": [{"name": "house", "baudrate": 0}]}, headers=h)  # 422
    client.put("/api/config", json=view, headers=h)  # unchanged secrets stay as they are
    assert load_config(path).meter("house").key == bytes.fromhex(KEY)
    client.post("/settings/meters", data={"csrf": csrf, "was": "house", "name": "house", "port": "/dev/null",
                                          "key": "short", "action": "save"})  # 422, the typed key is not echoed
    written = [p for p in path.parent.rglob("*") if p.is_file() and p.parent.name != "keys"]
    texts = client.seen + [caplog.text] + [p.read_bytes().decode("latin-1") for p in written]
    for form in secret_forms():
        for text in texts:
            assert form not in text, f"a secret ({len(form)} chars) leaked"
    keys = sorted(p.name for p in (path.parent / "keys").iterdir())
    assert keys == ["house.auth", "house.key", "mqtt.password"]
    assert "settings saved from" in caplog.text and "meters.house.key (new value" in caplog.text


def test_switches_show_their_defaults_and_a_save_keeps_them(fresh: tuple[Path, Recorder]) -> None:
    """Home Assistant discovery is on by default: the MQTT form shows it checked, and saving the
    form as shown does not turn it off."""
    path, client = fresh
    csrf = sign_up(path, client)
    page = client.get("/settings/mqtt").text
    assert re.search(r'name="discovery" value="on" checked', page)
    assert not re.search(r'name="retain" value="on" checked', page)
    r = client.post("/settings/mqtt", data={"csrf": csrf, "enabled": "on", "discovery": "on"},
                    follow_redirects=False)
    assert r.status_code == 303
    config = load_config(path)
    assert config.publishers.mqtt.enabled and config.publishers.mqtt.discovery
    assert "discovery" not in path.read_text()  # the default is not written out


def test_unticking_a_switch_that_is_on_by_default_turns_it_off(fresh: tuple[Path, Recorder]) -> None:
    path, client = fresh
    csrf = sign_up(path, client)
    r = client.post("/settings/mqtt", data={"csrf": csrf, "enabled": "on"}, follow_redirects=False)
    assert r.status_code == 303
    assert load_config(path).publishers.mqtt.discovery is False
    r = client.post("/settings/csv", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and load_config(path).publishers.csv.enabled is False


def test_a_ca_upload_is_checked_and_written_only_with_a_valid_save(fresh: tuple[Path, Recorder]) -> None:
    path, client = fresh
    csrf = sign_up(path, client)
    form = {"csrf": csrf, "enabled": "on", "tls": "on", "port": "8883"}
    fake = b"-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n"
    r = client.post("/settings/mqtt", data=form, files={"ca_upload": ("ca.pem", fake)})
    assert r.status_code == 422 and "not a PEM certificate" in r.text
    r = client.post("/settings/mqtt", data={**form, "port": "0"}, files={"ca_upload": ("ca.pem", ca_pem())})
    assert r.status_code == 422 and 'id="error-port"' in r.text
    assert not (path.parent / "tls").exists() or not any((path.parent / "tls").iterdir())
    first = ca_pem()
    r = client.post("/settings/mqtt", data=form, files={"ca_upload": ("ca.pem", first)}, follow_redirects=False)
    assert r.status_code == 303
    mqtt = load_config(path).publishers.mqtt
    assert mqtt.ca_file is not None and mqtt.ca_file.read_bytes() == first and mqtt.ca_file.name == "mqtt-ca.pem"
    second = ca_pem()
    client.post("/settings/mqtt", data=form, files={"ca_upload": ("ca.pem", second)}, follow_redirects=False)
    mqtt2 = load_config(path).publishers.mqtt
    assert mqtt2.ca_file != mqtt.ca_file and mqtt2.ca_file is not None and mqtt2.ca_file.read_bytes() == second
    assert mqtt.ca_file.read_bytes() == first  # the old one stays as it was (the .bak points to it)


def test_a_listen_address_that_cannot_be_bound_is_refused(fresh: tuple[Path, Recorder]) -> None:
    path, client = fresh
    csrf = sign_up(path, client)
    before = path.read_bytes()
    r = client.patch("/api/config", json={"web": {"listen": "192.0.2.1:8080"}}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and r.json()["field"] == "web.listen" and "cannot listen" in r.json()["error"]
    assert path.read_bytes() == before


def test_a_meter_test_on_another_meters_port_is_refused(fresh: tuple[Path, Recorder]) -> None:
    path, client = fresh
    csrf = sign_up(path, client)
    client.post("/settings/meters", data={"csrf": csrf, "name": "house", "port": "/dev/null", "action": "save"})
    r = client.post("/settings/meters", data={"csrf": csrf, "name": "other", "port": "/dev/null", "action": "test"},
                    headers={"Accept": "application/json"})
    assert r.status_code == 422 and "port of meter house" in r.json()["error"]


def test_a_secret_path_cannot_be_injected_over_the_api(fresh: tuple[Path, Recorder]) -> None:
    path, client = fresh
    csrf = sign_up(path, client)
    h = {"X-CSRF-Token": csrf}
    client.post("/settings/meters", data={"csrf": csrf, "name": "house", "port": "/dev/null", "key": KEY,
                                          "action": "save"})
    r = client.patch("/api/config", json={"publishers": {"mqtt": {"enabled": True, "host": "127.0.0.1",
                                                                  "username": "u", "password_file": "keys/house.key"}}},
                     headers=h)
    assert r.status_code == 422 and r.json()["field"] == "publishers.mqtt.password_file"
    assert load_config(path).publishers.mqtt.password is None
