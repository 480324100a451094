"""Shared pieces of the reliability tests: a whole pipeline with simulated meters,
a real mosquitto and the MQTT + CSV publishers under supervisord, and the
bookkeeping that matches what the simulators sent against what the MQTT and CSV
sinks received.

Every push a simulator writes is recorded (``--record``) and time-stamped here
when its record line appears (a tail thread polling every 20 ms; the simulator
flushes the line right after writing the push), so a lost push can be placed
against the time a fault was injected.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.integration.harness import (
    Collector,
    SimMeter,
    _comparable,
    record_values,
    start_simulator,
    three_meters,
    write_config,
)
from tests.publishers.mqtt_helpers import Collector as MqttCollector
from tests.support import MOSQUITTO, Broker, Supervisor, stop_process

INTERVAL = 0.5
BASE_TOPIC = "meterpipe"


class RecordTail:
    """Follows the simulators' record files; every record gets the monotonic time it was seen."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths
        self.records: dict[str, list[tuple[dict[str, Any], float]]] = {m: [] for m in paths}
        self._pos = dict.fromkeys(paths, 0)
        self._partial = dict.fromkeys(paths, b"")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            time.sleep(0.02)

    def poll(self) -> None:
        with self._lock:
            for meter, path in self.paths.items():
                try:
                    with path.open("rb") as f:
                        f.seek(self._pos[meter])
                        chunk = f.read()
                except FileNotFoundError:
                    continue
                if not chunk:
                    continue
                now = time.monotonic()
                self._pos[meter] += len(chunk)
                data = self._partial[meter] + chunk
                *lines, self._partial[meter] = data.split(b"\n")
                for line in lines:
                    if line.strip():
                        self.records[meter].append((json.loads(line), now))

    def of(self, meter: str) -> list[tuple[dict[str, Any], float]]:
        with self._lock:
            return list(self.records[meter])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.poll()


class TimedMqttCollector(MqttCollector):
    """mqtt_helpers.Collector that also notes when each message arrived."""

    def __init__(self, port: int, client_id: str) -> None:
        self.arrivals: list[tuple[str, bytes, float]] = []
        super().__init__(port, client_id=client_id, topics=(f"{BASE_TOPIC}/+/json",))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.arrivals.append((msg.topic, bytes(msg.payload), time.monotonic()))
        super()._on_message(client, userdata, msg)

    def json_docs(self, meter: str) -> list[tuple[dict[str, Any], float]]:
        topic = f"{BASE_TOPIC}/{meter}/json"
        with self.lock:
            return [(json.loads(p), t) for tp, p, t in self.arrivals if tp == topic]


Values = dict[str, Any]


def mqtt_values(doc: dict[str, Any]) -> Values:
    return {r["obis"]: _comparable(r["value"]) for r in doc["readings"]}


def explain_unmatched(recs: list[Values], deliveries: list[Values]) -> str:
    """For deliveries that match no single record: the nearest records and the values that differ."""
    lines = []
    for got in deliveries:
        if match(recs, got) is not None:
            continue
        scored = sorted(range(len(recs)), key=lambda i: sum(got.get(k) != v for k, v in recs[i].items()))
        for i in scored[:2]:
            diff = {k: (v, got.get(k)) for k, v in recs[i].items() if got.get(k) != v}
            lines.append(f"record {i} differs in (want, got) {diff}")
    return "; ".join(lines)


NEAR_S = 1.5  # a reader stamps a push within tens of ms of the simulator writing it


def match(recs: list[Values], got: Values, at: float | None = None, stamps: list[float] | None = None) -> int | None:
    """Index of the one record whose values the delivered push carries (None: none or ambiguous).

    A meter with coarse values (whole volts, 10 Wh registers) can repeat all of them
    seconds apart; then the record written nearest the push's receive time ``at``
    (epoch seconds; ``stamps`` are the records' times) is the one.
    """
    hits = [i for i, want in enumerate(recs) if all(got.get(k) == v for k, v in want.items())]
    if len(hits) > 1 and at is not None and stamps is not None:
        hits = [i for i in hits if abs(stamps[i] - at) < NEAR_S]
    return hits[0] if len(hits) == 1 else None


def record_stamp(rec: dict[str, Any]) -> float:
    return datetime.fromisoformat(rec["time"]).timestamp()


def csv_stamp(row: dict[str, str]) -> float | None:
    try:
        return datetime.fromisoformat(row["time"]).timestamp()
    except (KeyError, ValueError):
        return None


@dataclass
class SinkResult:
    """One sink (MQTT or CSV) for one meter: which records arrived."""

    delivered: list[int]  # record index per delivery, in arrival order (None-free)
    unmatched: int  # deliveries that matched no record or several
    first: int | None  # first record index delivered
    lost: list[int]  # record indices from `first` on that never arrived

    @property
    def duplicates(self) -> int:
        return len(self.delivered) - len(set(self.delivered))


def sink_result(n_records: int, indices: list[int | None]) -> SinkResult:
    delivered = [i for i in indices if i is not None]
    first = min(delivered) if delivered else None
    lost = [] if first is None else sorted(set(range(first, n_records)) - set(delivered))
    return SinkResult(delivered, len(indices) - len(delivered), first, lost)


@dataclass
class Pipeline:
    """Simulated meters -> readers -> decoder -> MQTT (mosquitto) + CSV, under supervisord."""

    rundir: Path
    meters: list[SimMeter]
    queue_frames: int | None = None
    csv_dir: Path | None = None
    broker: Broker | None = None
    supervisor: Supervisor | None = None
    zmq: Collector | None = None
    mqtt: TimedMqttCollector | None = None
    tail: RecordTail | None = None
    seeds: dict[str, int] = field(default_factory=dict)

    def start(self, before_supervisor: Callable[[Pipeline], None] | None = None) -> Pipeline:
        assert MOSQUITTO is not None
        self.broker = Broker(self.rundir / "broker").start()
        self.csv_dir = self.rundir / "csv"
        self.csv_dir.mkdir()
        mqtt_settings = {"port": self.broker.port, "spool_path": self.rundir / "spool.sqlite", "discovery": False,
                         "base_topic": BASE_TOPIC}
        options = {} if self.queue_frames is None else {"queue_frames": self.queue_frames}
        config = write_config(self.rundir, self.meters, push_interval=INTERVAL, meter_options=options,
                              csv_dir=self.csv_dir, mqtt=mqtt_settings)
        if before_supervisor is not None:
            before_supervisor(self)
        # A persistent session (QoS 1): the test's subscriber misses nothing while the broker restarts.
        self.mqtt = TimedMqttCollector(self.broker.port, client_id=f"reliability-{os.getpid()}")
        self.zmq = Collector(f"ipc://{self.rundir}/readings").start()
        self.supervisor = Supervisor(self.rundir, config)
        self.tail = RecordTail({m.name: m.record(self.rundir) for m in self.meters})
        for i, m in enumerate(self.meters):
            self.seeds[m.name] = 10 + i
            start_simulator(m, self.rundir, INTERVAL, self.seeds[m.name])
        return self

    # --- what arrived ----------------------------------------------------------------

    def csv_rows(self, meter: str) -> list[dict[str, str]]:
        """Rows of every CSV file of the meter (column title -> text), file by file in name order."""
        assert self.csv_dir is not None
        rows: list[dict[str, str]] = []
        folder = self.csv_dir / meter
        if not folder.is_dir():
            return rows
        for path in sorted(folder.glob("*.csv"), key=_day_file_order):
            with path.open(newline="", encoding="utf-8") as f:
                lines = list(csv.reader(f))
            rows += [dict(zip(lines[0], r)) for r in lines[1:] if lines]
        return rows

    def column_obis(self, meter: str) -> dict[str, str]:
        """CSV column title -> OBIS code of a meter, learnt from its decoded pushes on the readings socket."""
        assert self.zmq is not None
        out: dict[str, str] = {}
        for msg in self.zmq.of(meter):
            for r in msg.push.readings:
                out[f"{r.name} [{r.unit}]" if r.unit else r.name] = r.obis
        return out

    def counts(self, meter: str) -> tuple[int, int]:
        """(MQTT json messages, CSV rows) received so far for the meter."""
        assert self.mqtt is not None
        return len(self.mqtt.json_docs(meter)), len(self.csv_rows(meter))

    def wait_counts(self, at_least: int, timeout: float, what: str, base: dict[str, tuple[int, int]] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            now = {m.name: self.counts(m.name) for m in self.meters}
            if all(min(a - b for a, b in zip(now[m], (base or {}).get(m, (0, 0)))) >= at_least for m in now):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {now} (base {base})\n{self.log_tail()}")
            time.sleep(0.1)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return {m.name: self.counts(m.name) for m in self.meters}

    def results(self, meter: str) -> tuple[int, SinkResult, SinkResult]:
        """(records written, MQTT result, CSV result) for one meter."""
        assert self.tail is not None and self.mqtt is not None
        records = [r for r, _ in self.tail.of(meter)]
        recs = [record_values(r) for r in records]
        stamps = [record_stamp(r) for r in records]
        mq = [match(recs, mqtt_values(doc), doc.get("received"), stamps) for doc, _ in self.mqtt.json_docs(meter)]
        columns = self.column_obis(meter)
        rows = [match(recs, {columns[k]: _comparable(v) for k, v in row.items() if k in columns}, csv_stamp(row),
                      stamps)
                for row in self.csv_rows(meter)]
        return len(recs), sink_result(len(recs), mq), sink_result(len(recs), rows)

    def explain(self, meter: str, sink: str) -> str:
        """Why deliveries of one sink ("mqtt" or "csv") match no single record of the meter."""
        assert self.tail is not None and self.mqtt is not None
        recs = [record_values(r) for r, _ in self.tail.of(meter)]
        if sink == "mqtt":
            got = [mqtt_values(doc) for doc, _ in self.mqtt.json_docs(meter)]
        else:
            columns = self.column_obis(meter)
            got = [{columns[k]: _comparable(v) for k, v in row.items() if k in columns} for row in self.csv_rows(meter)]
        return explain_unmatched(recs, got)

    def write_times(self, meter: str) -> list[float]:
        assert self.tail is not None
        return [t for _, t in self.tail.of(meter)]

    def drain(self, timeout: float = 20) -> None:
        """Stop the simulators, then wait until both sinks have the last push of every meter."""
        for m in self.meters:
            stop_process(m.proc)
        assert self.tail is not None
        time.sleep(0.3)
        self.tail.poll()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = True
            for m in self.meters:
                n, mq, cs = self.results(m.name)
                if not (n - 1 in mq.delivered and n - 1 in cs.delivered):
                    done = False
            if done:
                break
            time.sleep(0.3)
        time.sleep(0.5)  # stragglers (duplicates) still on their way

    def log_tail(self, lines: int = 40) -> str:
        if self.supervisor is None:
            return ""
        return "\n".join(self.supervisor.output().splitlines()[-lines:])

    def stop(self) -> None:
        for m in self.meters:
            stop_process(m.proc)
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.zmq is not None:
            self.zmq.stop()
        if self.mqtt is not None:
            self.mqtt.close()
        if self.tail is not None:
            self.tail.stop()
        if self.broker is not None:
            self.broker.stop()


def _day_file_order(path: Path) -> tuple[str, int]:
    stem, _, rest = path.name.partition(".")
    n = rest.removesuffix("csv").rstrip(".")
    return stem, int(n) if n.isdigit() else 0


def wait_new_pid(supervisor: Supervisor, program: str, old: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = supervisor.ctl("pid", program).strip()
        if out.isdigit() and int(out) not in (0, old):
            return int(out)
        time.sleep(0.05)
    raise AssertionError(f"supervisord did not restart {program}: {supervisor.ctl('status')}")


def has_open(pid: int, target: str) -> bool:
    """Whether process ``pid`` has ``target`` (a pty path) open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def wait_open(pid_of: Callable[[], int], target: Callable[[], str], timeout: float = 30) -> float:
    """Monotonic time at which the process opened the pty (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if has_open(pid_of(), target()):
                return time.monotonic()
        except (OSError, AssertionError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"{target()} was not opened in {timeout} s")


def kill(pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


@pytest.fixture
def pipeline(rundir: Path) -> Iterator[Pipeline]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto broker not installed (apt-get install mosquitto)")
    p = Pipeline(rundir, three_meters())
    yield p
    p.stop()

