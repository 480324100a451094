"""The history process under supervisord, fed by the real pipeline (issue 10).

simulator -> reader -> decoder -> meterpipe-history. The history process commits
once a minute, so a SIGKILL throws away up to a minute of pushes held in memory;
the restarted process asks the decoder to replay what came after its last
commit. These tests kill it in the middle of minutes and check that every
minute the pipeline delivered is in the database with the same values.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from meterpipe.common.schema import ReadingsMessage
from meterpipe.publishers.history.query import HistoryReader
from tests.integration.harness import Collector, SimMeter, start_simulator, write_config
from tests.support import Supervisor, stop_process

pytestmark = pytest.mark.slow

INTERVAL = 0.5


def _value(msg: ReadingsMessage, name: str) -> float:
    for r in msg.push.readings:
        if r.name == name:
            return float(r.text())
    raise KeyError(name)


def _restarted(supervisor: Supervisor, old: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = supervisor.status_pids().get("history")
        if new and new != old:
            return new
        time.sleep(0.2)
    raise AssertionError("supervisord did not restart the history process:\n" + supervisor.ctl("status"))


def _mid_minute(second: float) -> None:
    """Sleep until ``second`` seconds past a full minute: in this minute if still ahead, else the next."""
    now = time.time()
    target = now - now % 60 + second
    if target <= now + 1:
        target += 60
    time.sleep(target - now)


def test_a_killed_history_process_loses_no_minute(rundir: Path) -> None:
    meter = SimMeter("house", "am550")
    db = rundir / "history.sqlite"
    config = write_config(rundir, [meter], push_interval=INTERVAL, history=db)
    collector = Collector(f"ipc://{rundir}/readings").start()
    supervisor = Supervisor(rundir, config)
    try:
        supervisor.running()  # the history process subscribes before the first push
        start_simulator(meter, rundir, INTERVAL)
        collector.wait_for(lambda: len(collector.of("house")) >= 4, 40, "first pushes")
        # two kills, each in the middle of a minute with pushes held in memory, a commit between them
        for second in (40, 20):
            _mid_minute(second)
            old = supervisor.pid("history")
            os.kill(old, signal.SIGKILL)
            _restarted(supervisor, old)
        _mid_minute(10)
        stop_process(meter.proc)
        time.sleep(3)  # the last frames through the pipeline
        supervisor.ctl("stop", "history")  # a clean stop commits the open minute too
    finally:
        collector.stop()
        supervisor.stop()
    got = collector.of("house")
    assert len(got) > 120, len(got)
    by_minute: dict[datetime, list[ReadingsMessage]] = {}
    for msg in got:
        at = datetime.fromtimestamp(msg.received_ns / 1e9, UTC)
        by_minute.setdefault(at.replace(second=0, microsecond=0), []).append(msg)
    reader = HistoryReader(db, ZoneInfo("UTC"))
    try:
        start = min(by_minute)
        header, rows = reader.minutes("house", start, max(by_minute) + timedelta(minutes=1))
        stored = {datetime.fromisoformat(str(row[0])).astimezone(UTC): dict(zip(header, row)) for row in rows}
        assert sorted(stored) == sorted(by_minute), "minutes missing or extra in the history"
        for minute, msgs in by_minute.items():
            row = stored[minute]
            powers = [_value(m, "active_power_import") for m in msgs]
            assert float(row["active_power_import_mean"]) == pytest.approx(statistics.fmean(powers)), minute
            assert float(row["active_power_import_max"]) == max(powers), minute
            assert float(row["active_power_import_min"]) == min(powers), minute
            assert float(row["active_energy_import"]) == _value(msgs[-1], "active_energy_import"), minute
        # The energy of the whole run, from register differences: nothing counted twice by the replay.
        days = reader.energy("house", "day", start.date(), max(by_minute).date())
        total = sum(row.deltas.get("active_energy_import", 0) for row in days)
        first, last = got[0], got[-1]
        assert total == _value(last, "active_energy_import") - _value(first, "active_energy_import")
    finally:
        reader.close()
