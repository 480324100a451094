"""MQTT publisher against a real mosquitto on 127.0.0.1 (skipped when it is not installed)."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meterpipe.common.publisher_config import MqttConfig
from meterpipe.publishers.mqtt.link import LOGIN_REFUSED, MqttLink
from meterpipe.publishers.mqtt.spool import Spool
from tests.publishers.conftest import Feeder, make_msg, needs_mosquitto, spawn, wait_for, write_config
from tests.publishers.mqtt_helpers import Collector, ThreadPublisher, make_ca
from tests.support import Broker

pytestmark = needs_mosquitto

BrokerFactory = Callable[..., Broker]


def warm_up(feeder: Feeder, collector: Collector, start: int = 1) -> int:
    """Send pushes until one arrives (PUB drops for late joiners); return the next seq."""
    seq = start - 1

    def arrived() -> bool:
        nonlocal seq
        seq += 1
        feeder.send(make_msg(seq))
        time.sleep(0.05)
        return bool(collector.seqs())

    wait_for(arrived, 10, "the first push to reach the broker")
    return seq + 1


def check_delivery(seqs: list[int], first: int, last: int) -> None:
    unique = list(dict.fromkeys(seqs))
    assert unique == sorted(unique), "pushes arrived out of order"
    assert unique[unique.index(first):] == list(range(first, last + 1))
    dups = len(seqs) - len(unique)
    assert dups < 0.01 * len(unique) + 1, f"{dups} duplicates for {len(unique)} pushes"


def test_every_push_delivered_with_values_and_discovery(
        broker_factory: BrokerFactory, feeder: Feeder, tmp_path: Path) -> None:
    broker = broker_factory()
    collector = Collector(broker.port)
    pub = ThreadPublisher(feeder.endpoint, MqttConfig(enabled=True, port=broker.port,
                                                      spool_path=tmp_path / "spool.sqlite"))
    try:
        nxt = warm_up(feeder, collector)
        first = collector.seqs()[0]
        for seq in range(nxt, nxt + 200):
            feeder.send(make_msg(seq))
        last = nxt + 199
        wait_for(lambda: last in collector.seqs(), 10, f"seq {last}")
        check_delivery(collector.seqs(), first, last)
        assert len(collector.seqs()) == last - first + 1  # no duplicates without an outage
        assert collector.payloads("meterpipe/house/active_energy_import")[-1] == make_msg(last).push.readings[1].text().encode()
        assert collector.payloads("meterpipe/house/voltage_l1")[-1] == b"230.1"
        assert collector.payloads("meterpipe/status") == [b"online"]
        config = json.loads(collector.payloads("homeassistant/sensor/meterpipe_house/active_energy_import/config")[0])
        assert config["device_class"] == "energy" and config["state_class"] == "total_increasing"
    finally:
        pub.close()
        collector.close()
    assert pub.rc == 0
    spool = Spool(tmp_path / "spool.sqlite", 10**6)
    assert len(spool) == 0
    spool.close()


def test_smartmeter_datacollector_layout_on_the_wire(
        broker_factory: BrokerFactory, feeder: Feeder, tmp_path: Path) -> None:
    broker = broker_factory()
    collector = Collector(broker.port)
    pub = ThreadPublisher(feeder.endpoint, MqttConfig(enabled=True, port=broker.port, discovery=False,
                                                      layout="smartmeter-datacollector",
                                                      spool_path=tmp_path / "spool.sqlite"))
    try:
        def arrived() -> bool:
            feeder.send(make_msg(1))
            time.sleep(0.05)
            return bool(collector.payloads("smartmeter/LGZ1030655933512/VOLTAGE_L1"))

        wait_for(arrived, 10, "a smartmeter-datacollector message")
    finally:
        pub.close()
        collector.close()
    assert collector.payloads("smartmeter/LGZ1030655933512/VOLTAGE_L1")[0] == \
        b'{"value": 230.1, "timestamp": 1714564800, "obis": "32.7.0"}'
    assert not [t for t, _, _ in collector.messages if t.startswith("meterpipe/house")]


@pytest.mark.slow
def test_broker_outage_loses_nothing(broker_factory: BrokerFactory, feeder: Feeder, tmp_path: Path) -> None:
    broker = broker_factory()
    collector = Collector(broker.port, client_id="outage-collector")  # persistent session
    pub = ThreadPublisher(feeder.endpoint, MqttConfig(enabled=True, port=broker.port,
                                                      spool_path=tmp_path / "spool.sqlite"))
    try:
        seq = warm_up(feeder, collector)
        first = collector.seqs()[0]
        t0 = time.monotonic()
        stopped = restarted = False
        while time.monotonic() - t0 < 7:
            feeder.send(make_msg(seq))
            seq += 1
            time.sleep(0.02)
            elapsed = time.monotonic() - t0
            if elapsed > 1 and not stopped:
                broker.stop()
                stopped = True
            if elapsed > 4 and not restarted:
                broker.start()
                restarted = True
        last = seq - 1
        wait_for(lambda: last in collector.seqs(), 30, f"seq {last} after the outage")
        check_delivery(collector.seqs(), first, last)
    finally:
        pub.close()
        collector.close()


@pytest.mark.slow
def test_spool_survives_a_killed_publisher(broker_factory: BrokerFactory, feeder: Feeder, tmp_path: Path) -> None:
    broker = broker_factory()
    collector = Collector(broker.port, client_id="kill-collector")
    spool_path = tmp_path / "spool.sqlite"
    config = write_config(tmp_path / "meterpipe.toml", feeder.endpoint,
                          f"[publishers.mqtt]\nenabled = true\nport = {broker.port}\n"
                          f'spool_path = "{spool_path}"\n[publishers.csv]\nenabled = false\n')
    log = tmp_path / "mqtt.log"
    proc = spawn("meterpipe.publishers.mqtt.main", config, log)
    proc2: subprocess.Popen[bytes] | None = None
    try:
        seq = warm_up(feeder, collector)
        first = collector.seqs()[0]
        broker.stop()
        outage_first = seq
        for _ in range(50):
            feeder.send(make_msg(seq))
            seq += 1
            time.sleep(0.01)

        def spooled() -> bool:
            with sqlite3.connect(spool_path) as db:
                n = db.execute("SELECT COUNT(*) FROM outbox WHERE topic = 'meterpipe/house/json'").fetchone()[0]
            return int(n) >= seq - outage_first

        wait_for(spooled, 10, "the outage pushes in the spool")
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        broker.start()
        proc2 = spawn("meterpipe.publishers.mqtt.main", config, log)
        last = seq - 1
        wait_for(lambda: last in collector.seqs(), 30, f"seq {last} from the spool after the restart")
        # and the restarted publisher goes on with new pushes
        nxt = warm_up(feeder, collector, start=seq)
        wait_for(lambda: nxt - 1 in collector.seqs(), 10, "a push to the restarted publisher")
        check_delivery([s for s in collector.seqs() if s <= last], first, last)
        assert "from before; they are sent first" in log.read_text()
    finally:
        for p in (proc, proc2):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        collector.close()
    assert proc2 is not None and proc2.returncode == 0


def test_tls_with_ca_file_delivers(broker_factory: BrokerFactory, feeder: Feeder, tmp_path: Path) -> None:
    ca, cert, key = make_ca(tmp_path / "pki")
    broker = broker_factory(listener_extra=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}")
    collector = Collector(broker.port, ca_file=ca)
    pub = ThreadPublisher(feeder.endpoint, MqttConfig(enabled=True, port=broker.port, tls=True, ca_file=ca,
                                                      spool_path=tmp_path / "spool.sqlite"))
    try:
        warm_up(feeder, collector)
    finally:
        pub.close()
        collector.close()
    assert collector.payloads("meterpipe/status")[0] == b"online"


def drive(link: MqttLink, until: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out driving the MQTT link"
        link.tick()
        time.sleep(0.01)


def test_tls_without_ca_file_names_ca_file(broker_factory: BrokerFactory, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    ca, cert, key = make_ca(tmp_path / "pki")
    broker = broker_factory(listener_extra=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}")
    spool = Spool(tmp_path / "spool.sqlite", 10**6)
    link = MqttLink(MqttConfig(enabled=True, port=broker.port, tls=True), spool,
                    availability_topic="meterpipe/status", clock=time.monotonic)
    drive(link, lambda: link.attempts >= 1 and not link.connected and link._client is None)
    spool.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "cannot verify the certificate" in errors[0]
    assert "publishers.mqtt.ca_file (not set: the system CAs were used)" in errors[0]


def test_wrong_password_clear_error_no_secret_and_backoff(
        broker_factory: BrokerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pw_file = tmp_path / "passwd"
    pw_file.write_text("meter:right-horse-battery\n")
    subprocess.run(["mosquitto_passwd", "-U", str(pw_file)], check=True)  # hash in place, no secret in argv
    broker = broker_factory(extra=f"password_file {pw_file}")
    now = [1000.0]
    secret = "wrong-staple-7f3a"
    spool = Spool(tmp_path / "spool.sqlite", 10**6)
    link = MqttLink(MqttConfig(enabled=True, port=broker.port, username="meter", password=secret), spool,
                    availability_topic="meterpipe/status", clock=lambda: now[0])
    drive(link, lambda: link.attempts == 1 and link._client is None)
    for _ in range(20):  # no new attempt before the backoff expires
        link.tick()
        time.sleep(0.005)
    assert link.attempts == 1
    now[0] += 1.1
    drive(link, lambda: link.attempts == 2 and link._client is None)
    now[0] += 1.5  # backoff doubled to 2 s: not yet
    link.tick()
    assert link.attempts == 2
    spool.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(LOGIN_REFUSED)
    assert "failed again" in caplog.text
    assert secret not in caplog.text

    # the right password connects
    spool = Spool(tmp_path / "spool2.sqlite", 10**6)
    link = MqttLink(MqttConfig(enabled=True, port=broker.port, username="meter", password="right-horse-battery"),
                    spool, availability_topic="meterpipe/status", clock=time.monotonic)
    drive(link, lambda: link.connected)
    link.close()
    spool.close()
