"""Access control: loopback open; any other listen address serves no data until a password
exists and the client signed in; Host and Origin checks; the set-password command."""

from __future__ import annotations

import io
import socket
import stat
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from meterpipe.web import cli
from meterpipe.web.auth import LoginLimiter, Sessions, check_password, hash_password, host_allowed
from tests.web.conftest import History, client_for, config_for, write_config

LAN = "0.0.0.0:8080"
PASSWORD = "correct horse battery"
DATA = ("/api/meters", "/api/now?meter=house", "/api/energy?meter=house", "/api/series?meter=house",
        "/api/status", "/export.csv?meter=house", "/events")
PAGES = ("/", "/live", "/history", "/peaks", "/costs", "/export", "/status")


def set_password(config_path: Path, password: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
    return cli.main(["set-password", "--config", str(config_path)])


def test_no_password_on_a_lan_address_serves_no_data_and_says_how(tmp_path: Path, history: History) -> None:
    with client_for(config_for(tmp_path, history, listen=LAN), host="192.168.1.20:8080") as c:
        for url in DATA:
            r = c.get(url)
            assert r.status_code == 403, url
            assert "meterpipe web set-password --config" in r.json()["error"]
            assert "house" not in r.text and "LGZ" not in r.text
        for url in PAGES:
            r = c.get(url)
            assert r.status_code == 403, url
            assert "meterpipe web set-password --config" in r.text
            assert "LGZ" not in r.text and "kWh" not in r.text
        assert c.post("/api/login", json={"password": "anything"}).status_code == 403


def test_sign_in_with_a_password_set_without_restart(tmp_path: Path, history: History,
                                                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_config(tmp_path, history.path, listen=LAN)
    with client_for(config_for(tmp_path, history, listen=LAN), host="192.168.1.20:8080") as c:
        assert c.get("/api/meters").status_code == 403
        assert set_password(config_path, PASSWORD, monkeypatch) == 0
        pw_file = tmp_path / "web-password"
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
        stored = pw_file.read_text()
        assert PASSWORD not in stored and stored.startswith("scrypt$")
        assert PASSWORD not in capsys.readouterr().out
        r = c.get("/api/meters")
        assert r.status_code == 401  # the new file counts at once
        page = c.get("/history", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
        bad = c.post("/api/login", json={"password": "wrong password"})
        assert bad.status_code == 401 and "set-cookie" not in bad.headers
        assert PASSWORD not in bad.text and stored.strip() not in bad.text
        ok = c.post("/api/login", json={"password": PASSWORD})
        assert ok.status_code == 200
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert PASSWORD not in cookie and stored.strip()[-20:] not in cookie
        assert c.get("/api/meters").status_code == 200
        # a new password ends the sessions of the old one
        assert set_password(config_path, "another password 2", monkeypatch) == 0
        assert c.get("/api/meters").status_code == 401


def test_login_form_in_the_browser_way(tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = write_config(tmp_path, history.path, listen=LAN)
    assert set_password(config_path, PASSWORD, monkeypatch) == 0
    with client_for(config_for(tmp_path, history, listen=LAN), host="192.168.1.20:8080") as c:
        r = c.post("/login", data={"password": PASSWORD, "next": "//evil.example/"}, follow_redirects=False,
                   headers={"Origin": "http://192.168.1.20:8080"})
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert c.get("/costs").status_code == 200


def test_rate_limit_per_client(tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = write_config(tmp_path, history.path, listen=LAN)
    assert set_password(config_path, PASSWORD, monkeypatch) == 0
    with client_for(config_for(tmp_path, history, listen=LAN), host="192.168.1.20") as c:
        codes = [c.post("/api/login", json={"password": f"guess {i}"}).status_code for i in range(7)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
        limited = c.post("/api/login", json={"password": PASSWORD})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0


def test_limiter_counts_overall_too() -> None:
    lim = LoginLimiter(window=60, per_client=5, overall=6)
    for i in range(6):
        lim.failed(f"10.0.0.{i}", now=100.0)
    assert lim.retry_after("10.0.0.99", now=101.0) > 0
    assert lim.retry_after("10.0.0.99", now=161.0) == 0


def test_host_header_checked(tmp_path: Path, history: History) -> None:
    with client_for(config_for(tmp_path, history), host="evil.example:8080") as c:
        assert c.get("/api/meters").status_code == 421
    with client_for(config_for(tmp_path, history), host="localhost:8080") as c:
        assert c.get("/api/meters").status_code == 200
    with client_for(config_for(tmp_path, history), host="meterpipe.local") as c:  # [web] hosts
        assert c.get("/api/meters").status_code == 200
    assert host_allowed("192.168.1.20:80", "0.0.0.0", ())
    assert not host_allowed("meterpipe.example", "0.0.0.0", (), own=("pi",))
    assert not host_allowed("pi", "127.0.0.1", (), own=("pi",))  # loopback: its own names are not needed
    assert not host_allowed("192.168.1.21", "192.168.1.20", ())
    assert host_allowed("[::1]:8080", "::1", ())
    assert not host_allowed(None, "127.0.0.1", ())


def test_cross_site_post_refused(tmp_path: Path, history: History) -> None:
    with client_for(config_for(tmp_path, history)) as c:
        r = c.post("/api/login", json={"password": "x" * 10}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403


def test_loopback_is_open(tmp_path: Path, history: History) -> None:
    with client_for(config_for(tmp_path, history)) as c:
        assert c.get("/api/meters").status_code == 200
        assert "set-password" not in c.get("/").text


def test_hash_and_sessions() -> None:
    line = hash_password("s3cret-enough", n=2**10)
    assert check_password(line, "s3cret-enough") and not check_password(line, "s3cret-enougH")
    assert not check_password("scrypt$1$1$1$zz$zz", "x") and not check_password("garbage", "x")
    assert hash_password("same", n=2**10) != hash_password("same", n=2**10)  # random salt
    s = Sessions(ttl=10, limit=2)
    a = s.create(1, now=0)
    assert s.valid(a, 1, now=5) and not s.valid(a, 2, now=5)
    b = s.create(1, now=0)
    s.create(1, now=0)
    s.create(1, now=0)
    assert not s.valid(b, 1, now=1)  # evicted: at most `limit` sessions
    assert not s.valid("forged", 1, now=1)


def test_set_password_cli_refuses_short_and_writes_atomically(tmp_path: Path, history: History,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = write_config(tmp_path, history.path, listen=LAN)
    assert set_password(config_path, "short", monkeypatch) == 1
    assert not (tmp_path / "web-password").exists()
    assert set_password(config_path, PASSWORD, monkeypatch) == 0
    assert stat.S_IMODE((tmp_path / "web-password").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".web-password")] == []


# --- review fixes: parallel guesses, odd passwords, what templates see, own names, Secure ---------------


def test_parallel_wrong_attempts_cannot_pass_the_limit(tmp_path: Path, history: History,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from meterpipe.web import guard
    from meterpipe.web.site import MAX_CHECKS

    config_path = write_config(tmp_path, history.path, listen=LAN)
    assert set_password(config_path, PASSWORD, monkeypatch) == 0
    running = [0, 0]  # now, most at once
    lock = threading.Lock()

    def slow_check(stored: str, password: str) -> bool:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return check_password(stored, password)

    monkeypatch.setattr(guard, "check_password", slow_check)
    with client_for(config_for(tmp_path, history, listen=LAN), host="192.168.1.20") as c:
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(lambda i: c.post("/api/login", json={"password": f"guess {i}"}).status_code,
                                  range(12)))
        assert sorted(codes) == [401] * 5 + [429] * 7
        assert running[1] <= MAX_CHECKS
        assert c.post("/api/login", json={"password": PASSWORD}).status_code == 429


def test_a_right_password_does_not_count_as_a_failure(tmp_path: Path, history: History,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = write_config(tmp_path, history.path, listen=LAN)
    assert set_password(config_path, PASSWORD, monkeypatch) == 0
    with client_for(config_for(tmp_path, history, listen=LAN), host="192.168.1.20") as c:
        assert [c.post("/api/login", json={"password": PASSWORD}).status_code for _ in range(7)] == [200] * 7
        assert c.post("/api/login", json={"password": "wrong one"}).status_code == 401


def test_a_lone_surrogate_is_a_wrong_password_and_counts(tmp_path: Path, history: History,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = write_config(tmp_path, history.path, listen=LAN)
    assert set_password(config_path, PASSWORD, monkeypatch) == 0
    body = b'{"password": "\\ud800 not a string"}'
    with client_for(config_for(tmp_path, history, listen=LAN), host="192.168.1.20") as c:
        codes = [c.post("/api/login", content=body, headers={"Content-Type": "application/json"}).status_code
                 for _ in range(6)]
        assert codes == [401] * 5 + [429]


def test_templates_see_no_session_store(tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = write_config(tmp_path, history.path, listen=LAN)
    assert set_password(config_path, PASSWORD, monkeypatch) == 0
    with client_for(config_for(tmp_path, history, listen=LAN), host="192.168.1.20") as c:
        assert c.post("/api/login", json={"password": PASSWORD}).status_code == 200
        token = c.cookies["meterpipe_session"]
        site = c.app.state.site
        assert token not in repr(site) and token not in repr(site.sessions)
        stored = (tmp_path / "web-password").read_text().strip()
        assert stored not in repr(site)
        for url in PAGES:
            r = c.get(url)
            assert r.status_code == 200, url
            assert "site" not in r.context and "hub" not in r.context
            assert not any(token in repr(v) or stored in repr(v) for v in r.context.values()), url


def test_on_a_wildcard_address_the_machine_names_are_accepted(tmp_path: Path, history: History) -> None:
    names = [socket.gethostname(), socket.gethostname().split(".")[0] + ".local", socket.getfqdn(), "localhost"]
    for name in names:
        assert host_allowed(f"{name}:8080", "0.0.0.0", ()), name
        assert host_allowed(name.upper(), "::", ()), name
        with client_for(config_for(tmp_path, history, listen=LAN), host=f"{name}:8080") as c:
            r = c.get("/api/meters")
            assert r.status_code == 403 and "set-password" in r.json()["error"], name  # not 421
    assert not host_allowed("rebind.example", "0.0.0.0", ())
    assert not host_allowed(f"{socket.gethostname()}.evil.example", "0.0.0.0", ())


@pytest.mark.parametrize(("setting", "secure"), [("", False), ("secure_cookie = true", True),
                                                 ("secure_cookie = false", False)])
def test_secure_cookie_setting(tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch,
                               setting: str, secure: bool) -> None:
    config_path = write_config(tmp_path, history.path, listen=LAN)
    text = config_path.read_text().replace('hosts = ["meterpipe.local"]', f'hosts = ["meterpipe.local"]\n{setting}')
    config_path.write_text(text)
    assert set_password(config_path, PASSWORD, monkeypatch) == 0
    from meterpipe.common.config import load_config

    with client_for(load_config(str(config_path)), host="192.168.1.20") as c:
        cookie = c.post("/api/login", json={"password": PASSWORD}).headers["set-cookie"]
        assert ("; secure" in cookie.lower()) is secure
        assert "httponly" in cookie.lower()


def test_secure_cookie_must_be_a_boolean(tmp_path: Path, history: History) -> None:
    from meterpipe.common.config import load_config
    from meterpipe.common.errors import ConfigError

    config_path = write_config(tmp_path, history.path, listen=LAN)
    config_path.write_text(config_path.read_text().replace('hosts = ["meterpipe.local"]',
                                                           'hosts = ["meterpipe.local"]\nsecure_cookie = "yes"'))
    with pytest.raises(ConfigError, match="secure_cookie"):
        load_config(str(config_path))
