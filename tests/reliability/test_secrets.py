"""Issue 6 (security): keys and passwords never appear in logs, status messages,
exceptions or the command lines of running processes.

The integration scenario under supervisord: simulated meters with keys (one of
them configured with the wrong key, so errors are reported), the CSV and MQTT
publishers, the MQTT one logging in with a password to a real mosquitto whose
password file is hashed by ``mosquitto_passwd -U`` (the password is never on a
command line). While it runs, every process's command line is sampled; after,
every log, every file the run wrote, every message on the readings socket and
every MQTT message is searched for every secret: hex in both cases (also
spaced), raw bytes, repr, base64 and half-keys; passwords as text.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import zmq
from paho.mqtt.enums import CallbackAPIVersion

from meterpipe.common.schema import decode_status
from tests.integration.harness import SimMeter, start_simulator
from tests.support import (
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    Broker,
    MeterEntry,
    Supervisor,
    stop_process,
    write_config,
    write_secret,
)

pytestmark = pytest.mark.slow

INTERVAL = 0.5
USER = "meterpipe"


def key_forms(key: bytes) -> set[bytes]:
    """Every way a 16-byte key could show up in a log or a message."""
    low, up = key.hex(), key.hex().upper()
    forms = {low, up, " ".join(f"{b:02x}" for b in key), " ".join(f"{b:02X}" for b in key),
             ":".join(f"{b:02x}" for b in key), repr(key), base64.b64encode(key).decode()}
    forms |= {low[:16], low[16:], up[:16], up[16:]}  # half a key is a leak too
    return {f.encode() for f in forms} | {key}


def password_forms(password: str) -> set[bytes]:
    raw = password.encode()
    return {raw, raw.hex().encode(), raw.hex().upper().encode(), base64.b64encode(raw), repr(password).encode()}


def leaks(data: bytes, secrets_: dict[str, set[bytes]]) -> list[str]:
    return [name for name, forms in secrets_.items() if any(f in data for f in forms)]


def password_broker(workdir: Path, password: str) -> Broker:
    """mosquitto on a free 127.0.0.1 port, logins only from a password file hashed by
    ``mosquitto_passwd -U`` (the password is never on a command line)."""
    assert MOSQUITTO_PASSWD is not None
    workdir.mkdir(mode=0o700)
    passwd = write_secret(workdir / "passwd", f"{USER}:{password}\n")  # plain text, hashed in place by -U
    subprocess.run([MOSQUITTO_PASSWD, "-U", str(passwd)], check=True, capture_output=True, timeout=30)
    assert password.encode() not in passwd.read_bytes()
    extra = f"password_file {passwd}\nlog_type all\nconnection_messages true"
    return Broker(workdir, extra, persistence=False).start()


class MqttTap:
    """A subscriber with the right password, keeping every message."""

    def __init__(self, port: int, password: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.username_pw_set(USER, password)
        self.client.on_connect = lambda c, *_: c.subscribe("#", 1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def topics(self) -> set[str]:
        with self.lock:
            return {t for t, _ in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RawTap:
    """Every [topic, payload] on the readings socket, undecoded."""

    def __init__(self, endpoint: str) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(endpoint,), daemon=True)
        self._thread.start()

    def _run(self, endpoint: str) -> None:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(endpoint)
        while not self._stop.is_set():
            if sub.poll(100):
                topic, payload = sub.recv_multipart()
                self.messages.append((topic, payload))
        sub.close()
        ctx.term()

    def topics(self) -> set[bytes]:
        return {t for t, _ in list(self.messages)}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class CommandLines:
    """Samples /proc/*/cmdline and `ps -eo args` while the pipeline runs."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self.ps_runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    self.seen.add((entry / "cmdline").read_bytes().replace(b"\0", b" "))
                except OSError:
                    pass  # gone meanwhile
        out = subprocess.run(["ps", "-eo", "args"], capture_output=True, check=False, timeout=10).stdout
        self.seen.update(out.splitlines())
        self.ps_runs += 1

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def write_secrets_config(rundir: Path, meters: list[tuple[SimMeter, Path, bytes, bytes]], mqtt_port: int,
                         password_file: Path, name: str = "meterpipe.toml", spool: str = "spool.sqlite") -> Path:
    """``meters``: (meter, its pty, the key and auth key the config gives the decoder)."""
    entries = [MeterEntry(meter.name, pty, meter.model, push_interval=INTERVAL,
                          key_file=write_secret(rundir / f"{meter.name}.cfg.key", key),
                          auth_key_file=write_secret(rundir / f"{meter.name}.cfg.auth", auth))
               for meter, pty, key, auth in meters]
    mqtt = {"port": mqtt_port, "username": USER, "password_file": password_file, "spool_path": rundir / spool}
    return write_config(rundir, entries, csv_dir=rundir / "csv", mqtt=mqtt, name=name)


@pytest.mark.skipif(MOSQUITTO is None or MOSQUITTO_PASSWD is None,
                    reason="mosquitto and mosquitto_passwd not installed (apt-get install mosquitto)")
def test_no_secret_in_logs_status_messages_or_command_lines(rundir: Path) -> None:
    keys = {name: secrets.token_bytes(16) for name in
            ("house key", "house auth key", "shop key", "shop auth key",
             "odd key (config)", "odd auth key (config)", "odd key (meter)", "odd auth key (meter)")}
    password = secrets.token_urlsafe(18)
    wrong_password = secrets.token_urlsafe(18)
    wanted = {name: key_forms(k) for name, k in keys.items()}
    wanted["MQTT password"] = password_forms(password)
    wanted["wrong MQTT password"] = password_forms(wrong_password)

    simdir = rundir / "sim"
    simdir.mkdir(mode=0o700)
    house = SimMeter("house", "e450", keys["house key"].hex(), keys["house auth key"].hex())
    shop = SimMeter("shop", "omnipower", keys["shop key"].hex().upper(), keys["shop auth key"].hex().upper())
    odd = SimMeter("odd", "e450", keys["odd key (meter)"].hex(), keys["odd auth key (meter)"].hex())
    configured = [(house, keys["house key"], keys["house auth key"]), (shop, keys["shop key"], keys["shop auth key"]),
                  (odd, keys["odd key (config)"], keys["odd auth key (config)"])]

    broker = password_broker(rundir / "mosquitto", password)
    password_file = write_secret(rundir / "mqtt.password", password + "\n")
    config = write_secrets_config(rundir, [(m, m.link(simdir), k, a) for m, k, a in configured], broker.port, password_file)
    bad_password_file = write_secret(rundir / "mqtt.wrong", wrong_password + "\n")
    bad_config = write_secrets_config(rundir, [(m, m.link(simdir), k, a) for m, k, a in configured], broker.port,
                                      bad_password_file, name="bad.toml", spool="bad-spool.sqlite")

    lines = CommandLines()
    tap = RawTap(f"ipc://{rundir}/readings")
    mqtt_tap = MqttTap(broker.port, password)
    supervisor = Supervisor(rundir, config)
    bad_publisher: subprocess.Popen[bytes] | None = None
    bad_log = rundir / "bad-publisher.log"
    try:
        for meter in (house, shop, odd):
            start_simulator(meter, simdir, INTERVAL)
        with bad_log.open("wb") as out:  # a publisher whose login the broker refuses
            bad_publisher = subprocess.Popen(
                [sys.executable, "-m", "meterpipe.publishers.mqtt.main", "--config", str(bad_config), "-v"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        want_topics = {b"reading/house", b"reading/shop", b"status/house", b"status/shop", b"status/odd"}
        while time.monotonic() < deadline:
            mqtt_ok = {"meterpipe/house/json", "meterpipe/shop/json"} <= mqtt_tap.topics()
            if want_topics <= tap.topics() and mqtt_ok and "refused the login" in bad_log.read_text():
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"scenario incomplete: zmq {sorted(tap.topics())}, mqtt "
                                 f"{sorted(mqtt_tap.topics())}\n{supervisor.output()[-3000:]}")
        lines.sample()
        check = subprocess.run([sys.executable, "-m", "meterpipe.deploy.cli", "check-config", "--config",
                                str(config)], capture_output=True, timeout=30, check=False)
        assert check.returncode == 0, check.stderr
    finally:
        lines.stop()
        stop_process(bad_publisher)
        for meter in (house, shop, odd):
            stop_process(meter.proc)
        supervisor.stop()
        tap.stop()
        mqtt_tap.close()
        broker.stop()

    # the scenario did what it should: readings, MQTT, errors for the wrong keys
    assert lines.ps_runs >= 3
    assert b"reading/odd" not in tap.topics()
    output = supervisor.output()
    assert "decoder" in output and "reader-house" in output and "mqtt" in output
    odd_status = [decode_status(p) for t, p in tap.messages if t == b"status/odd"]
    assert any(st.counters.get("auth_errors", 0) > 0 and st.last_error for st in odd_status), odd_status

    found: dict[str, list[str]] = {}

    def search(where: str, data: bytes) -> None:
        for name in leaks(data, wanted):
            found.setdefault(name, []).append(where)

    # logs and everything else the run wrote, except the files that hold the secrets on purpose
    holders = {rundir / f"{m.name}.cfg.{s}" for m, _, _ in configured for s in ("key", "auth")}
    holders |= {simdir / f"{m.name}.{s}" for m in (house, shop, odd) for s in ("key", "auth")}
    holders |= {password_file, bad_password_file}
    searched = 0
    for path in sorted(rundir.rglob("*")):
        if path.is_file() and not path.is_symlink() and path not in holders:
            search(str(path.relative_to(rundir)), path.read_bytes())
            searched += 1
    assert searched >= 8
    search("check-config output", check.stdout + check.stderr)
    for topic, payload in tap.messages:
        search(f"ZeroMQ message {topic.decode()}", topic + payload)
    for mqtt_topic, mqtt_payload in list(mqtt_tap.messages):
        search(f"MQTT message {mqtt_topic}", mqtt_topic.encode() + mqtt_payload)
    for line in lines.seen:
        search(f"command line {line[:100]!r}", line)
    assert not found, f"secrets leaked: {found}"


@pytest.mark.skipif(MOSQUITTO is None or MOSQUITTO_PASSWD is None,
                    reason="mosquitto and mosquitto_passwd not installed (apt-get install mosquitto)")
def test_no_secret_in_debug_logs(rundir: Path) -> None:
    """The same processes started by hand with -v: DEBUG lines (raw hex, per-frame errors) hold no secret."""
    keys = {name: secrets.token_bytes(16) for name in ("house key", "house auth key", "odd key (config)",
                                                       "odd auth key (config)", "odd key (meter)")}
    password = secrets.token_urlsafe(18)
    wanted = {name: key_forms(k) for name, k in keys.items()}
    wanted["MQTT password"] = password_forms(password)
    simdir = rundir / "sim"
    simdir.mkdir(mode=0o700)
    house = SimMeter("house", "e450", keys["house key"].hex(), keys["house auth key"].hex())
    odd = SimMeter("odd", "am550", keys["odd key (meter)"].hex())  # the decoder expects GCM with a tag
    broker = password_broker(rundir / "mosquitto", password)
    password_file = write_secret(rundir / "mqtt.password", password + "\n")
    config = write_secrets_config(rundir, [(house, house.link(simdir), keys["house key"], keys["house auth key"]),
                                   (odd, odd.link(simdir), keys["odd key (config)"], keys["odd auth key (config)"])],
                          broker.port, password_file)
    tap = RawTap(f"ipc://{rundir}/readings")
    procs: list[subprocess.Popen[bytes]] = []
    logs = rundir / "logs"
    logs.mkdir()
    try:
        for meter in (house, odd):
            start_simulator(meter, simdir, INTERVAL)
        programs = {"decoder": ["meterpipe.decoder.main"], "mqtt": ["meterpipe.publishers.mqtt.main"],
                    "csv": ["meterpipe.publishers.csv_main"],
                    "reader-house": ["meterpipe.reader.main", "--meter", "house"],
                    "reader-odd": ["meterpipe.reader.main", "--meter", "odd"]}
        for name, args in programs.items():
            with (logs / f"{name}.log").open("wb") as out:
                procs.append(subprocess.Popen([sys.executable, "-m", *args, "--config", str(config), "-v"],
                                              stdout=out, stderr=subprocess.STDOUT,
                                              env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        deadline = time.monotonic() + 40
        while not {b"reading/house", b"status/odd"} <= tap.topics():
            assert time.monotonic() < deadline, f"scenario incomplete: {sorted(tap.topics())}"
            assert all(p.poll() is None for p in procs), [p.args for p in procs if p.poll() is not None]
            time.sleep(0.2)
        time.sleep(2)
    finally:
        for proc in procs:
            stop_process(proc)
        for meter in (house, odd):
            stop_process(meter.proc)
        tap.stop()
        broker.stop()
    decoder_log = (logs / "decoder.log").read_text()
    assert " DEBUG " in decoder_log and "meter odd" in decoder_log
    found = {name: where for name, where in (
        (n, [p.name for p in sorted(logs.iterdir()) if n in leaks(p.read_bytes(), wanted)]) for n in wanted) if where}
    for topic, payload in tap.messages:
        for name in leaks(topic + payload, wanted):
            found.setdefault(name, []).append(f"ZeroMQ message {topic.decode()}")
    assert not found, f"secrets leaked: {found}"
