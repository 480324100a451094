"""Whole pipeline to MQTT and CSV (issue 4): three simulated meters pushing every
second for a minute, a broker outage of 20 s, the MQTT publisher killed during
the outage and the CSV publisher killed mid-run. Nothing may be lost."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.harness import Collector, SimMeter, start_simulator, write_config
from tests.publishers.mqtt_helpers import Collector as MqttCollector
from tests.support import MOSQUITTO, Broker, Supervisor, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")]

RUN_S = float(os.environ.get("METERPIPE_PUBLISH_TEST_SECONDS", "60"))
OUTAGE_S = 20.0


def _wait(seconds: float) -> None:
    time.sleep(max(0.0, seconds))


def test_mqtt_and_csv_lose_nothing_through_outage_and_publisher_kills(rundir: Path) -> None:
    broker = Broker(rundir / "broker").start()
    meters = [
        SimMeter("house", "e450", "000102030405060708090A0B0C0D0E0F", "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"),
        SimMeter("flat", "am550"),
        SimMeter("shop", "e360"),
    ]
    mqtt_settings = {"port": broker.port, "client_id": "meterpipe-test", "spool_path": rundir / "spool.sqlite"}
    config = write_config(rundir, meters, push_interval=1.0, csv_dir=rundir / "csv", mqtt=mqtt_settings)
    zmq_collector = Collector(f"ipc://{rundir}/readings").start()
    mqtt = MqttCollector(broker.port, client_id="test-subscriber", topics=("meterpipe/+/json",))
    supervisor = Supervisor(rundir, config)
    events: list[str] = []
    try:
        for m in meters:
            start_simulator(m, rundir, 1.0)
        zmq_collector.wait_for(lambda: all(len(zmq_collector.of(m.name)) >= 2 for m in meters), 40, "first pushes")
        start = time.monotonic()
        _wait(RUN_S * 0.2)
        broker.stop()
        events.append("broker stopped")
        _wait(OUTAGE_S / 2)
        os.kill(supervisor.pid("mqtt"), signal.SIGKILL)
        events.append("mqtt publisher killed during the outage")
        _wait(OUTAGE_S / 2)
        broker.start()
        events.append("broker started")
        _wait(RUN_S * 0.2)
        os.kill(supervisor.pid("csv"), signal.SIGKILL)
        events.append("csv publisher killed")
        _wait(RUN_S - (time.monotonic() - start))
        for m in meters:
            stop_process(m.proc)
        decoded = {m.name: [r.seq for r in zmq_collector.of(m.name)] for m in meters}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(set(decoded[m.name]) <= set(mqtt.seqs(m.name)) for m in meters):
                break
            time.sleep(0.5)
        time.sleep(2)
    finally:
        for m in meters:
            stop_process(m.proc)
        supervisor.stop()
        zmq_collector.stop()
        mqtt.close()
        broker.stop()

    total = dups = 0
    for m in meters:
        want = [r.seq for r in zmq_collector.of(m.name)]
        got = mqtt.seqs(m.name)
        missing = sorted(set(want) - set(got))
        first_seen: list[int] = []
        for s in got:
            if s not in first_seen:
                first_seen.append(s)
        dups += len(got) - len(first_seen)
        total += len(got)
        print(f"{m.name}: {len(want)} decoded, {len(set(got))} on MQTT ({len(got) - len(first_seen)} duplicates), missing {missing}")
        assert not missing, f"{m.name}: pushes {missing} never reached MQTT"
        assert first_seen == sorted(first_seen), f"{m.name}: MQTT order broken"
        payloads = {json.loads(p)["seq"]: json.loads(p) for p in mqtt.payloads(f"meterpipe/{m.name}/json")}
        for msg in zmq_collector.of(m.name):
            values = {r["obis"]: r["value"] for r in payloads[msg.seq]["readings"]}
            for r in msg.push.readings:
                assert values[r.obis] == r.json_value()
        _check_csv(rundir / "csv" / m.name, zmq_collector.of(m.name))
    print("events:", "; ".join(events), f"; duplicates {dups}/{total}")
    assert dups <= total * 0.01


def _check_csv(folder: Path, decoded: list) -> None:  # type: ignore[type-arg]
    rows: list[dict[str, str]] = []
    for path in sorted(folder.glob("*.csv")):
        text = path.read_text()
        assert text.endswith("\n"), f"{path}: torn last line"
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            for row in reader:
                assert len(row) == len(header), f"{path}: torn row {row}"
                rows.append(dict(zip(header, row)))
    assert len(rows) == len(decoded), f"{folder.name}: {len(rows)} CSV rows for {len(decoded)} pushes"
    for row, msg in zip(rows, decoded):
        for r in msg.push.readings:
            column = f"{r.name} [{r.unit}]" if r.unit else r.name
            cell = row[column]
            if r.is_number:
                assert Decimal(cell) == Decimal(r.text())
            else:
                assert cell == r.text()
