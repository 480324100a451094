"""Issue 6 (security): a config that holds a key and is readable by group or others
draws a warning that the running processes actually log (and the warning never
shows the key)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meterpipe.deploy.keys import key_pair
from tests.support import Supervisor, free_port, stop_process

KEY = "7D3A9C2B5E8F10467A2B3C4D5E6F7081"
FILE_KEY = "A1B2C3D4E5F60718293A4B5C6D7E8F90"


def wait_for_text(read: Callable[[], str], needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = read()
    while needle not in text:
        assert time.monotonic() < deadline, f"{needle!r} never logged:\n{text[-3000:]}"
        time.sleep(0.1)
        text = read()
    return text


@pytest.mark.slow
def test_processes_under_supervisord_log_the_loose_config_warning(rundir: Path) -> None:
    key_file = rundir / "flat.key"
    key_file.write_text(FILE_KEY + "\n")
    key_file.chmod(0o640)  # group-readable key file
    config = rundir / "meterpipe.toml"
    config.write_text("\n".join([
        "[[meters]]", 'name = "house"', 'port = "/dev/null-nothing"', f'key = "{KEY}"', "",
        "[[meters]]", 'name = "flat"', 'port = "/dev/null-nothing"', f'key_file = "{key_file}"', "",
        "[endpoints]", f'frames = "ipc://{rundir}/frames"', f'readings = "ipc://{rundir}/readings"', "",
        "[publishers.csv]", "enabled = true", f'directory = "{rundir}/csv"', "",
        "[web]", f'listen = "127.0.0.1:{free_port()}"', "",  # history and web on, as by default
    ]))
    config.chmod(0o644)  # key inline, readable by everybody
    supervisor = Supervisor(rundir, config)
    try:
        inline = f"config file {config} holds secrets inline (meters.house.key) and is readable by group or others"
        loose_file = f"meters.flat.key_file: {key_file} is readable by group or others; run chmod 600 {key_file}"
        needed = [f"decoder WARNING meterpipe.common.process: config: {inline}",
                  f"decoder WARNING meterpipe.common.process: config: {loose_file}",
                  f"reader house WARNING meterpipe.common.process: config: {inline}",
                  f"reader flat WARNING meterpipe.common.process: config: {loose_file}",
                  f"csv WARNING meterpipe.common.process: config: {inline}",
                  f"history WARNING meterpipe.common.process: config: {inline}",
                  f"web WARNING meterpipe.common.process: config: {inline}"]
        for needle in needed:
            wait_for_text(supervisor.output, needle, 30)
    finally:
        supervisor.stop()
    output = supervisor.output()
    assert f"run chmod 600 {config} or use key_file/key_env" in output
    for secret in (KEY, FILE_KEY):
        assert secret.lower() not in output.lower()
    # every process that loaded the config warned, once each
    warned = re.findall(r" (\w+(?: \w+)?) WARNING meterpipe\.common\.process: config: config file", output)
    assert sorted(warned) == ["csv", "decoder", "history", "reader flat", "reader house", "web"], warned


def _run_decoder(config: Path, log: Path) -> str:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "meterpipe.decoder.main", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        return wait_for_text(log.read_text, "decoder up", 20)
    finally:
        stop_process(proc)


def test_decoder_logs_a_loose_curve_secret_but_not_a_private_config(rundir: Path) -> None:
    _, secret = key_pair(rundir / "keys", "server")
    authorized = rundir / "keys" / "readers"
    authorized.mkdir()
    reader_public, _ = key_pair(rundir / "keys", "pi")
    (authorized / "pi.key").write_bytes(reader_public.read_bytes())
    secret.chmod(0o644)
    config = rundir / "meterpipe.toml"
    config.write_text("\n".join([
        "[[meters]]", 'name = "house"', 'port = "/dev/null"', f'key = "{KEY}"', "",
        "[endpoints]", 'frames = "tcp://127.0.0.1:*"', f'readings = "ipc://{rundir}/readings"',
        f'curve_server_secret = "{secret}"', f'curve_authorized_dir = "{authorized}"', "",
        "[publishers.csv]", "enabled = false", "",
    ]))
    config.chmod(0o600)  # the inline key is fine in a private file
    text = _run_decoder(config, rundir / "decoder.log")
    assert (f"WARNING meterpipe.common.process: config: endpoints.curve_server_secret: {secret} is readable "
            f"by group or others; run chmod 600 {secret}") in text
    assert "holds secrets inline" not in text
    assert "CurveZMQ server, 1 authorised reader key(s)" in text
    assert KEY.lower() not in text.lower()
    assert secret.read_text().split("secret-key = ")[1].strip().strip('"') not in text
