"""Fixtures of the web tests: a history database filled through the real HistoryWriter,
configs for a loopback and a LAN listen address, and pushes as the decoder sends them."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import zmq

from meterpipe.common.config import Config, load_config
from meterpipe.common.schema import ReadingsMessage
from meterpipe.common.values import Push, Reading
from meterpipe.publishers.history.store import HistoryWriter
from tests.support import cleanup, short_dir, stop_process, wait_port

ZONE = "Europe/Zurich"
TARIFF_ONLY = "dsmr"  # a meter with tariff registers only (no 1.8.0 / 2.8.0), the last DAYS days
DST = "dst"  # a meter with data on the two DST days of 2026 and the day before each
DST_DAYS = (date(2026, 3, 29), date(2026, 10, 25))  # 23 and 25 hours in Europe/Zurich
PUSH_S = 60  # one push a minute keeps the fixture small (and under the 300 s gap limit)
DAYS = 3


@dataclass
class Registers:
    t1: int = 5_000_000  # Wh
    t2: int = 3_000_000
    export: int = 1_000_000


def make_push(meter: str, seq: int, t_s: float, regs: Registers, power: int, export: int = 0,
              *, authenticated: bool = True, tariff_only: bool = False) -> ReadingsMessage:
    """A push as the decoder sends it; ``tariff_only``: like a DSMR meter, only the tariff
    registers 1.8.1/1.8.2 and 2.8.1/2.8.2, no total 1.8.0/2.8.0."""
    per = [power // 3, power // 3, power - 2 * (power // 3)]
    readings = [
        Reading("0-0:96.1.0", "meter_id", "LGZ1030655933512", 0, None),
        Reading("1-0:1.7.0", "active_power_import", power, 0, "W"),
        Reading("1-0:2.7.0", "active_power_export", export, 0, "W"),
        Reading("1-0:1.8.1", "active_energy_import_t1", regs.t1, 0, "Wh"),
        Reading("1-0:1.8.2", "active_energy_import_t2", regs.t2, 0, "Wh"),
    ]
    if tariff_only:
        readings += [Reading("1-0:2.8.1", "active_energy_export_t1", regs.export, 0, "Wh"),
                     Reading("1-0:2.8.2", "active_energy_export_t2", 500_000, 0, "Wh")]
    else:
        readings += [Reading("1-0:1.8.0", "active_energy_import", regs.t1 + regs.t2, 0, "Wh"),
                     Reading("1-0:2.8.0", "active_energy_export", regs.export, 0, "Wh")]
    for i, ph in enumerate(("l1", "l2", "l3")):
        readings.append(Reading(f"1-0:{21 + 20 * i}.7.0", f"active_power_import_{ph}", per[i], 0, "W"))
        readings.append(Reading(f"1-0:{31 + 20 * i}.7.0", f"current_{ph}", per[i] * 100 // 230, -2, "A"))
        readings.append(Reading(f"1-0:{32 + 20 * i}.7.0", f"voltage_{ph}", 2301 + i * 7, -1, "V"))
    push = Push(readings=tuple(readings), meter_id="LGZ1030655933512", time=None, encrypted=True,
                authenticated=authenticated)
    return ReadingsMessage(meter=meter, seq=seq, received_ns=int(t_s * 1e9), push=push)


def load_profile(t_s: float) -> tuple[int, int]:
    """(import W, export W) of a simple day: base load, a midday PV bump."""
    hour = (t_s % 86400) / 3600
    pv = max(0.0, 2500 * (1 - abs(hour - 12) / 5))
    load = 400 + 1200 * (17 <= hour < 21) + 300 * ((int(t_s) // 60) % 7 == 0)
    net = load - pv
    return (int(net), 0) if net > 0 else (0, int(-net))


def fill(writer: HistoryWriter, meter: str, start_s: float, end_s: float, regs: Registers,
         *, tariff_only: bool = False) -> int:
    seq = 0
    t = start_s
    while t <= end_s:
        seq += 1
        power, export = load_profile(t)
        wh = power * PUSH_S / 3600
        hour = (t % 86400) / 3600
        if 7 <= hour < 20:
            regs.t1 += round(wh)
        else:
            regs.t2 += round(wh)
        regs.export += round(export * PUSH_S / 3600)
        writer.add(make_push(meter, seq, t, regs, power, export, tariff_only=tariff_only))
        t += PUSH_S
    writer.flush()
    return seq


@dataclass
class History:
    path: Path
    end_s: float
    regs: Registers
    seq: int


@pytest.fixture(scope="session")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    path = tmp_path_factory.mktemp("history") / "history.sqlite"
    writer = HistoryWriter(path, ZoneInfo(ZONE))
    end = time.time() - 30
    regs = Registers()
    seq = fill(writer, "house", end - DAYS * 86400, end, regs)
    fill(writer, TARIFF_ONLY, end - DAYS * 86400, end, Registers(), tariff_only=True)
    dst_regs = Registers()
    for day in DST_DAYS:  # the day before and the DST day itself, local midnight to midnight
        first = datetime.combine(day - timedelta(days=1), dtime(), ZoneInfo(ZONE)).timestamp()
        last = datetime.combine(day + timedelta(days=1), dtime(), ZoneInfo(ZONE)).timestamp()
        fill(writer, DST, first, last, dst_regs)
    writer.close()
    return History(path, end, regs, seq)


def write_config(directory: Path, history_path: Path, *, listen: str = "127.0.0.1:8080",
                 readings: str | None = None, extra: str = "") -> Path:
    text = f"""
[[meters]]
name = "house"
port = "/dev/null"
link = "hdlc"
model = "e450"

[endpoints]
frames = "ipc://{directory}/frames"
readings = "{readings or f'ipc://{directory}/readings'}"

[publishers.csv]
enabled = false

[publishers.history]
enabled = true
path = "{history_path}"

[web]
listen = "{listen}"
timezone = "{ZONE}"
password_file = "{directory}/web-password"
hosts = ["meterpipe.local"]

[web.tariff]
currency = "CHF"
import_price = 0.30
export_price = 0.10
monthly_fee = 9.0
{extra}
"""
    path = directory / "meterpipe.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def config_for(directory: Path, history: History, **kw: str) -> Config:
    return load_config(str(write_config(directory, history.path, **kw)))


def client_for(config: Config, *, host: str = "127.0.0.1:8080") -> Any:
    """Starlette's TestClient on the app (no live socket), sending ``Host: host``."""
    import warnings

    from starlette.exceptions import StarletteDeprecationWarning

    with warnings.catch_warnings():  # it prefers httpx2, which is not packaged yet; httpx works
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from starlette.testclient import TestClient

    from meterpipe.web.app import build_app
    from meterpipe.web.main import make_site

    return TestClient(build_app(make_site(config), start_live=False), base_url=f"http://{host}")


@contextlib.contextmanager
def web_process(config_path: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m meterpipe.web.main`` on ``port``; stopped with SIGTERM, which must exit 0."""
    proc = subprocess.Popen([sys.executable, "-m", "meterpipe.web.main", "--config", str(config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, timeout=15, proc=proc)
        yield proc
    finally:
        stop_process(proc)
        out = proc.stdout.read().decode() if proc.stdout else ""
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == 0, out


@contextlib.contextmanager
def readings_pub(prefix: str) -> Iterator[tuple[zmq.Socket[bytes], str, Path]]:
    """A PUB socket bound where the web subscribes (``ipc://<dir>/readings``): the decoder's part."""
    rundir = short_dir(prefix)
    ctx = zmq.Context()
    sock: zmq.Socket[bytes] = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{rundir}/readings"
    sock.bind(endpoint)
    try:
        yield sock, endpoint, rundir
    finally:
        sock.close(linger=0)
        ctx.term()
        cleanup(rundir)


def ca_pem() -> bytes:
    """A real self-signed CA certificate (generated here, never a fixture file)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meterpipe test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)
