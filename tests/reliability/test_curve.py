"""Issue 6 (security): nobody gets in. Who may bind where, `meterpipe keys`, and
CurveZMQ on the frames socket: an authorised reader's frames arrive, an unknown
key's and a plain client's never do."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from meterpipe.common.config import config_from_dict
from meterpipe.common.curve import FramesAuthenticator, secure_frames_server
from meterpipe.common.curve_keys import exposed_host, is_loopback, secure_frames_client
from meterpipe.common.endpoints import EndpointsConfig
from meterpipe.common.errors import ConfigError
from meterpipe.common.schema import Frame, LinkLayer, decode_frame, encode_frame
from meterpipe.deploy import cli
from meterpipe.deploy.keys import key_pair
from meterpipe.reader.service import connect_frames_socket
from meterpipe.simulator.meter import MeterSimulator
from tests.integration.harness import Collector
from tests.support import free_port

METER = {"meters": [{"name": "house", "port": "/dev/null"}]}


def endpoints(tmp: Path, frames: str, readings: str | None = None, **curve: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"frames": frames, "readings": readings or f"ipc://{tmp}/readings"}
    table.update({k: str(v) for k, v in curve.items()})
    return {**METER, "endpoints": table}


@dataclass
class Keys:
    server_public: Path
    server_secret: Path
    authorized: Path  # holds good.key only
    good_secret: Path
    rogue_public: Path
    rogue_secret: Path

    def secrets(self) -> list[bytes]:
        out = []
        for path in (self.server_secret, self.good_secret, self.rogue_secret):
            secret = zmq.auth.load_certificate(path)[1]
            assert secret is not None
            out.append(secret)
        return out


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    server_public, server_secret = key_pair(tmp_path / "server", "server")
    authorized = tmp_path / "server" / "readers"
    authorized.mkdir()
    good_public, good_secret = key_pair(tmp_path / "good", "good")
    (authorized / "good.key").write_bytes(good_public.read_bytes())
    rogue_public, rogue_secret = key_pair(tmp_path / "rogue", "rogue")
    return Keys(server_public, server_secret, authorized, good_secret, rogue_public, rogue_secret)


def server_settings(k: Keys) -> dict[str, Any]:
    return {"curve_server_secret": k.server_secret, "curve_authorized_dir": k.authorized}


def client_settings(k: Keys, secret: Path | None = None) -> dict[str, Any]:
    return {"curve_server_public": k.server_public, "curve_client_secret": secret or k.good_secret}


# --- who may bind where --------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "localhost", "LOCALHOST", "::1", "::ffff:127.0.0.1"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("endpoint,host", [
    ("tcp://0.0.0.0:5555", "0.0.0.0"),
    ("tcp://*:5555", "*"),
    ("tcp://192.168.1.2:5555", "192.168.1.2"),
    ("tcp://[::]:5555", "::"),
    ("tcp://eth0:5555", "eth0"),
    ("tcp://decoder.lan:5555", "decoder.lan"),
    ("tcp://128.0.0.1:5555", "128.0.0.1"),
])
def test_frames_exposed_without_curve_is_a_config_error_naming_the_field(
        tmp_path: Path, endpoint: str, host: str) -> None:
    assert exposed_host(endpoint) == host
    with pytest.raises(ConfigError) as info:
        config_from_dict(endpoints(tmp_path, endpoint))
    assert info.value.field == "endpoints.frames"
    text = str(info.value)
    assert f"binds {host} without CurveZMQ" in text
    assert "endpoints.curve_server_secret and curve_authorized_dir" in text
    assert "or use 127.0.0.1" in text


@pytest.mark.parametrize("endpoint", [
    "tcp://127.0.0.1:5555", "tcp://127.0.0.2:5555", "tcp://localhost:5555", "tcp://[::1]:5555",
    "tcp://127.0.0.1:*", "ipc:///tmp/x/frames", "inproc://frames",
])
def test_local_frames_endpoints_need_no_curve(tmp_path: Path, endpoint: str) -> None:
    assert exposed_host(endpoint) is None
    assert config_from_dict(endpoints(tmp_path, endpoint)).endpoints.frames == endpoint


def test_defaults_are_ipc_in_a_private_directory(tmp_path: Path) -> None:
    rundir = tmp_path / "run"
    config = config_from_dict(METER, environ={"METERPIPE_RUNTIME_DIR": str(rundir)})
    for endpoint in (config.endpoints.frames, config.endpoints.readings):
        assert endpoint.startswith(f"ipc://{rundir}/")
    assert stat.S_IMODE(rundir.stat().st_mode) == 0o700


def test_frames_on_all_interfaces_with_curve_server_is_accepted(tmp_path: Path, keys: Keys) -> None:
    config = config_from_dict(endpoints(tmp_path, "tcp://0.0.0.0:5555", **server_settings(keys)))
    assert config.endpoints.curve_server_secret == keys.server_secret
    assert config.endpoints.curve_authorized_dir == keys.authorized
    assert config.warnings == ()


def test_reader_on_another_host_with_curve_client_is_accepted(tmp_path: Path, keys: Keys) -> None:
    config = config_from_dict(endpoints(tmp_path, "tcp://192.168.1.10:5555", **client_settings(keys)))
    assert config.endpoints.curve_server_public == keys.server_public
    assert config.endpoints.curve_client_secret == keys.good_secret


@pytest.mark.parametrize("readings", ["tcp://0.0.0.0:5556", "tcp://*:5556", "tcp://10.0.0.1:5556"])
def test_readings_never_leave_the_host_even_with_curve(tmp_path: Path, keys: Keys, readings: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(endpoints(tmp_path, "tcp://0.0.0.0:5555", readings, **server_settings(keys)))
    assert info.value.field == "endpoints.readings"
    assert "127.0.0.1" in str(info.value)


@pytest.mark.parametrize("given,missing", [
    ("curve_server_secret", "curve_authorized_dir"),
    ("curve_authorized_dir", "curve_server_secret"),
    ("curve_server_public", "curve_client_secret"),
    ("curve_client_secret", "curve_server_public"),
])
def test_curve_settings_come_in_pairs(tmp_path: Path, keys: Keys, given: str, missing: str) -> None:
    settings = {**server_settings(keys), **client_settings(keys)}
    with pytest.raises(ConfigError) as info:
        config_from_dict(endpoints(tmp_path, "tcp://127.0.0.1:5555", **{given: settings[given]}))
    assert info.value.field == f"endpoints.{missing}"


def _error(tmp_path: Path, **curve: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_dict(endpoints(tmp_path, "tcp://0.0.0.0:5555", **curve))
    return info.value


def test_public_key_file_given_as_secret_is_refused(tmp_path: Path, keys: Keys) -> None:
    err = _error(tmp_path, curve_server_secret=keys.server_public, curve_authorized_dir=keys.authorized)
    assert err.field == "endpoints.curve_server_secret"
    assert "no secret key" in str(err)


def test_missing_and_broken_key_files_name_the_field(tmp_path: Path, keys: Keys) -> None:
    err = _error(tmp_path, curve_server_secret=tmp_path / "nope.key_secret", curve_authorized_dir=keys.authorized)
    assert err.field == "endpoints.curve_server_secret" and "does not exist" in str(err)
    err = _error(tmp_path, curve_server_secret=keys.server_secret, curve_authorized_dir=tmp_path / "nodir")
    assert err.field == "endpoints.curve_authorized_dir" and "not a directory" in str(err)
    junk = tmp_path / "junk.key"
    junk.write_text("hello\n")
    err = _error(tmp_path, curve_server_public=junk, curve_client_secret=keys.good_secret)
    assert err.field == "endpoints.curve_server_public" and "not a ZeroMQ certificate" in str(err)
    (keys.authorized / "bad.key").write_text("nothing here\n")
    err = _error(tmp_path, **server_settings(keys))
    assert err.field == "endpoints.curve_authorized_dir"


def test_a_damaged_secret_key_is_never_shown(tmp_path: Path, keys: Keys) -> None:
    text = keys.good_secret.read_text()
    secret = zmq.auth.load_certificate(keys.good_secret)[1]
    assert secret is not None
    damaged = tmp_path / "damaged.key_secret"
    damaged.write_text(text.replace(secret.decode(), secret.decode()[:-1]))
    damaged.chmod(0o600)
    err = _error(tmp_path, curve_server_public=keys.server_public, curve_client_secret=damaged)
    assert err.field == "endpoints.curve_client_secret"
    chain = " ".join(str(e) for e in (err, err.__cause__, err.__context__) if e is not None)
    assert secret[:-1].decode() not in chain and secret[:20].decode() not in chain


def test_loose_secret_file_and_empty_authorized_dir_draw_warnings(tmp_path: Path, keys: Keys) -> None:
    keys.server_secret.chmod(0o644)
    empty = tmp_path / "empty"
    empty.mkdir()
    config = config_from_dict(endpoints(tmp_path, "tcp://0.0.0.0:5555", curve_server_secret=keys.server_secret,
                                        curve_authorized_dir=empty))
    text = "\n".join(config.warnings)
    assert f"chmod 600 {keys.server_secret}" in text
    assert "no .key file yet" in text


# --- meterpipe keys -------------------------------------------------------------


def test_keys_server_and_reader_write_loadable_pairs_and_never_print_a_secret(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "server", "--dir", str(tmp_path / "srv")]) == 0
    out_server = capsys.readouterr().out
    assert cli.main(["keys", "reader", "pi-1", "--dir", str(tmp_path / "pi")]) == 0
    out_reader = capsys.readouterr().out
    made = {
        "server": (tmp_path / "srv" / "server.key", tmp_path / "srv" / "server.key_secret", out_server),
        "pi-1": (tmp_path / "pi" / "pi-1.key", tmp_path / "pi" / "pi-1.key_secret", out_reader),
    }
    for public_path, secret_path, out in made.values():
        public, none = zmq.auth.load_certificate(public_path)
        again, secret = zmq.auth.load_certificate(secret_path)
        assert none is None and secret is not None and public == again
        assert len(public) == len(secret) == 40
        assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(public_path.stat().st_mode) == 0o644
        assert stat.S_IMODE(secret_path.parent.stat().st_mode) == 0o700
        assert secret.decode() not in out and secret.decode()[:12] not in out
        assert str(secret_path) in out and str(public_path) in out and public.decode() in out
    assert 'curve_server_secret = "' + str(made["server"][1]) + '"' in out_server
    assert "curve_authorized_dir" in out_server
    assert 'curve_client_secret = "' + str(made["pi-1"][1]) + '"' in out_reader
    assert "curve_server_public" in out_reader
    # the printed snippet is valid config once the paths are filled in
    (tmp_path / "srv" / "readers" / "pi-1.key").write_bytes(made["pi-1"][0].read_bytes())
    config = config_from_dict(endpoints(tmp_path, "tcp://0.0.0.0:5555", curve_server_secret=made["server"][1],
                                        curve_authorized_dir=tmp_path / "srv" / "readers"))
    assert config.warnings == ()


def test_keys_never_overwrite_and_check_the_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "reader", "pi", "--dir", str(tmp_path)]) == 0
    before = (tmp_path / "pi.key_secret").read_bytes()
    assert cli.main(["keys", "reader", "pi", "--dir", str(tmp_path)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert (tmp_path / "pi.key_secret").read_bytes() == before
    for bad in ("../evil", "a b", "server", ".hidden"):
        assert cli.main(["keys", "reader", bad, "--dir", str(tmp_path)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pi.key", "pi.key_secret"]
    assert cli.main(["keys"]) == 2


# --- the sockets -----------------------------------------------------------------


def frames_of(meter: str, count: int = 1) -> list[bytes]:
    sim = MeterSimulator("am550", seed=len(meter))
    start = datetime(2024, 5, 1, 12, 0, 0)
    out, seq = [], 0
    for i in range(count):
        for raw in sim.push(start + timedelta(seconds=i)).frames:
            seq += 1
            out.append(encode_frame(Frame(meter=meter, seq=seq, received_ns=time.time_ns(),
                                          link=LinkLayer.HDLC, data=raw)))
    return out


def raw_push(ctx: zmq.Context[Any], endpoint: str, *, server: Path | None = None,
             secret: Path | None = None) -> zmq.Socket[Any]:
    """A PUSH without IMMEDIATE: it would send the moment any connection came up."""
    sock: zmq.Socket[Any] = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    if server is not None and secret is not None:
        public, secret_key = zmq.auth.load_certificate(secret)
        assert secret_key is not None
        sock.setsockopt(zmq.CURVE_SERVERKEY, zmq.auth.load_certificate(server)[0])
        sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret_key)
    sock.connect(endpoint)
    return sock


def send_all(sock: zmq.Socket[Any], payloads: list[bytes]) -> None:
    for payload in payloads:
        try:
            sock.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            pass


def test_curve_server_accepts_only_authorised_readers(
        tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ctx: zmq.Context[Any] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    server_side = EndpointsConfig(frames="tcp://127.0.0.1:*", readings=f"ipc://{tmp_path}/r",
                                  **server_settings(keys))
    auth = secure_frames_server(ctx, pull, server_side)
    assert isinstance(auth, FramesAuthenticator)
    socks: list[zmq.Socket[Any]] = []
    try:
        pull.bind("tcp://127.0.0.1:*")
        endpoint = pull.getsockopt_string(zmq.LAST_ENDPOINT)
        wrong_server_public, _ = key_pair(tmp_path / "other", "other")
        good = connect_frames_socket(ctx, EndpointsConfig(frames=endpoint, readings=server_side.readings,
                                                          **client_settings(keys)))
        socks = [good,
                 raw_push(ctx, endpoint, server=keys.server_public, secret=keys.rogue_secret),
                 raw_push(ctx, endpoint),
                 raw_push(ctx, endpoint, server=wrong_server_public, secret=keys.good_secret)]
        payloads = {name: frames_of(name) for name in ("good", "rogue", "plain", "mitm")}
        got: list[str] = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and got.count("good") < 5:
            for sock, name in zip(socks, payloads):
                send_all(sock, payloads[name])
            while pull.poll(50):
                got.append(decode_frame(pull.recv()).meter)
        deadline = time.monotonic() + 1  # the others get more time to sneak in
        while time.monotonic() < deadline:
            for sock, name in zip(socks[1:], list(payloads)[1:]):
                send_all(sock, payloads[name])
            while pull.poll(50):
                got.append(decode_frame(pull.recv()).meter)
        assert got.count("good") >= 5
        assert set(got) == {"good"}
    finally:
        for sock in socks:
            sock.close(0)
        pull.close(0)
        auth.stop()
        ctx.term()
    rogue = zmq.auth.load_certificate(keys.rogue_public)[0].decode()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and rogue in refusals[0]  # once per key, not per attempt
    assert "CurveZMQ server, 1 authorised reader key(s)" in caplog.text
    for secret in keys.secrets():
        assert secret.decode() not in caplog.text


def test_no_curve_settings_leave_the_sockets_plain(tmp_path: Path) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    plain = EndpointsConfig(frames=f"ipc://{tmp_path}/f", readings=f"ipc://{tmp_path}/r")
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    try:
        assert secure_frames_server(ctx, pull, plain) is None
        assert secure_frames_client(push, plain) is False
        assert pull.getsockopt(zmq.MECHANISM) == zmq.NULL == push.getsockopt(zmq.MECHANISM)
    finally:
        pull.close(0)
        push.close(0)
        ctx.term()


# --- the real decoder process ------------------------------------------------------


@pytest.mark.slow
def test_decoder_process_with_curve_decodes_authorised_frames_only(rundir: Path, keys: Keys) -> None:
    frames = f"tcp://127.0.0.1:{free_port()}"
    readings = f"ipc://{rundir}/readings"
    lines = []
    for name in ("good", "rogue", "plain"):
        lines += ["[[meters]]", f'name = "{name}"', 'port = "/dev/null"', 'link = "hdlc"', 'model = "am550"', ""]
    lines += ["[endpoints]", f'frames = "{frames}"', f'readings = "{readings}"',
              f'curve_server_secret = "{keys.server_secret}"', f'curve_authorized_dir = "{keys.authorized}"',
              "", "[publishers.csv]", "enabled = false", ""]
    config = rundir / "meterpipe.toml"
    config.write_text("\n".join(lines))
    config.chmod(0o600)
    log_path = rundir / "decoder.log"
    collector = Collector(readings).start()
    ctx: zmq.Context[Any] = zmq.Context()
    socks: list[zmq.Socket[Any]] = []
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "meterpipe.decoder.main", "--config", str(config), "-v"],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        good = connect_frames_socket(ctx, EndpointsConfig(frames=frames, readings=readings,
                                                          **client_settings(keys)))
        socks = [good, raw_push(ctx, frames, server=keys.server_public, secret=keys.rogue_secret),
                 raw_push(ctx, frames)]
        names = ("good", "rogue", "plain")
        pushes = {name: frames_of(name, 40) for name in names}
        per_push = len(pushes["good"]) // 40
        for i in range(40):
            for sock, name in zip(socks, names):
                send_all(sock, pushes[name][i * per_push:(i + 1) * per_push])
            if len(collector.of("good")) >= 5 and i >= 15:
                break
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.25)
        collector.wait_for(lambda: len(collector.of("good")) >= 5, 20, "the authorised reader's pushes")
        time.sleep(1.0)
    finally:
        for sock in socks:
            sock.close(0)
        ctx.term()
        proc.terminate()
        rc = proc.wait(10)
        collector.stop()
    assert rc == 0
    assert {r.meter for r in collector.readings} == {"good"}
    for status in collector.statuses:
        if status.meter != "good":
            assert status.counters.get("bytes", 0) == 0 and status.counters.get("frames_ok", 0) == 0
    log_text = log_path.read_text()
    assert "CurveZMQ server, 1 authorised reader key(s)" in log_text
    rogue = zmq.auth.load_certificate(keys.rogue_public)[0].decode()
    assert f"refused a reader whose CurveZMQ public key {rogue}" in log_text
    for secret in keys.secrets():
        assert secret.decode() not in log_text
