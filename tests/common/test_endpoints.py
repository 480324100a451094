"""meterpipe.common.endpoints: runtime directory, defaults and endpoint syntax."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meterpipe.common.endpoints import (
    check_endpoint,
    default_endpoints,
    ensure_ipc_dir,
    ipc_path,
    runtime_dir,
)
from meterpipe.common.errors import ConfigError


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_runtime_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"METERPIPE_RUNTIME_DIR": str(tmp_path / "mp"), "XDG_RUNTIME_DIR": str(tmp_path / "xdg")}
    assert runtime_dir(False, environ=env) == tmp_path / "mp"
    del env["METERPIPE_RUNTIME_DIR"]
    assert runtime_dir(False, environ=env) == tmp_path / "xdg" / "meterpipe"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert runtime_dir(False, environ={}) == Path("/run/meterpipe")
    monkeypatch.setattr(os, "geteuid", lambda: 4321)
    assert runtime_dir(False, environ={}) == Path("/tmp/meterpipe-4321")
    assert runtime_dir(False, environ={"METERPIPE_RUNTIME_DIR": ""}) == Path("/tmp/meterpipe-4321")


def test_runtime_dir_is_created_0700(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = runtime_dir(environ={"METERPIPE_RUNTIME_DIR": str(tmp_path / "a" / "b")})
    finally:
        os.umask(old)
    assert path == tmp_path / "a" / "b" and path.is_dir()
    assert _mode(path) == 0o700


def test_existing_loose_runtime_dir_is_tightened(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    assert runtime_dir(environ={"METERPIPE_RUNTIME_DIR": str(loose)}) == loose
    assert _mode(loose) == 0o700


def test_runtime_dir_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    real_uid = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real_uid + 1 if real_uid else 1000)
    with pytest.raises(ConfigError, match="belongs to another user"):
        runtime_dir(environ={"METERPIPE_RUNTIME_DIR": str(theirs)})


def test_runtime_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError) as info:
        runtime_dir(environ={"METERPIPE_RUNTIME_DIR": str(tmp_path / "f")})
    assert info.value.field == "endpoints" and "METERPIPE_RUNTIME_DIR" in str(info.value)
    with pytest.raises(ConfigError, match="cannot create"):
        runtime_dir(environ={"METERPIPE_RUNTIME_DIR": str(tmp_path / "f" / "sub")})


def test_default_endpoints(tmp_path: Path) -> None:
    ep = default_endpoints(environ={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert ep.frames == f"ipc://{tmp_path}/meterpipe/frames"
    assert ep.readings == f"ipc://{tmp_path}/meterpipe/readings"
    assert _mode(tmp_path / "meterpipe") == 0o700
    assert default_endpoints(False, environ={"METERPIPE_RUNTIME_DIR": str(tmp_path / "x")}).frames \
        == f"ipc://{tmp_path}/x/frames"
    assert not (tmp_path / "x").exists()


def test_default_endpoints_reject_long_runtime_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at most 107"):
        default_endpoints(False, environ={"METERPIPE_RUNTIME_DIR": "/" + "r" * 100})


def test_ipc_path() -> None:
    assert ipc_path("ipc:///run/meterpipe/frames") == Path("/run/meterpipe/frames")
    assert ipc_path("ipc://relative/sock") == Path("relative/sock")
    assert ipc_path("ipc://@abstract") is None
    assert ipc_path("tcp://127.0.0.1:5555") is None
    assert ipc_path("inproc://frames") is None


def test_ensure_ipc_dir(tmp_path: Path) -> None:
    ensure_ipc_dir(f"ipc://{tmp_path}/new/frames")
    assert _mode(tmp_path / "new") == 0o700
    ensure_ipc_dir("tcp://127.0.0.1:1")  # nothing to do


@pytest.mark.parametrize("endpoint", [
    "ipc:///run/meterpipe/frames",
    "ipc://@abstract-name",
    "ipc:///" + "a" * 106,  # 107 bytes of path: the limit
    "tcp://127.0.0.1:5555",
    "tcp://localhost:1",
    "tcp://*:65535",
    "tcp://127.0.0.1:*",
    "tcp://[::1]:5555",
    "tcp://eth0;192.168.1.2:5555",
    "inproc://frames",
])
def test_valid_endpoints(endpoint: str) -> None:
    assert check_endpoint(endpoint, "endpoints.frames") == endpoint


@pytest.mark.parametrize(("endpoint", "message"), [
    ("frames", "must start with ipc://, tcp:// or inproc://"),
    ("http://host:80", "must start with"),
    ("pgm://eth0;239.1.1.1:5555", "must start with"),
    ("ipc://", "nothing after ipc://"),
    ("inproc://", "nothing after"),
    ("ipc:///" + "a" * 107, "108 bytes"),
    ("ipc:///" + "é" * 54, "109 bytes"),  # counted in bytes, not characters
    ("tcp://127.0.0.1", "tcp://HOST:PORT"),
    ("tcp://:5555", "tcp://HOST:PORT"),
    ("tcp://host name:5555", "tcp://HOST:PORT"),
    ("tcp://127.0.0.1:0", "port must be 1-65535"),
    ("tcp://127.0.0.1:65536", "port must be 1-65535"),
    ("tcp://127.0.0.1:http", "tcp://HOST:PORT"),
    (5555, "expected a quoted endpoint"),
])
def test_invalid_endpoints(endpoint: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_endpoint(endpoint, "endpoints.readings")
    assert info.value.field == "endpoints.readings"
    assert message in str(info.value)
