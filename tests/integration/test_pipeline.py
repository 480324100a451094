"""The whole pipeline under supervisord: simulated meters on ptys -> readers ->
decoder -> PUB, as `meterpipe run` starts it (issue 3)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.harness import (
    AUTH,
    AUTH2,
    KEY,
    KEY2,
    Collector,
    SimMeter,
    matched_indices,
    records,
    start_simulator,
    three_meters,
    write_config,
)
from tests.support import Supervisor, stop_process

pytestmark = pytest.mark.slow

INTERVAL = 0.5


def test_every_push_arrives_once_with_its_values_and_survives_a_decoder_kill(rundir: Path) -> None:
    meters = three_meters()
    config = write_config(rundir, meters, push_interval=INTERVAL)
    collector = Collector(f"ipc://{rundir}/readings").start()
    supervisor = Supervisor(rundir, config)
    try:
        for m in meters:
            start_simulator(m, rundir, INTERVAL)
        collector.wait_for(lambda: all(len(collector.of(m.name)) >= 4 for m in meters), 40, "first pushes")

        # SIGKILL the decoder; supervisord restarts it; readers queue meanwhile.
        old = supervisor.pid("decoder")
        os.kill(old, signal.SIGKILL)
        killed_at = time.time()
        new = supervisor.pid("decoder")
        deadline = time.monotonic() + 20
        while new == old and time.monotonic() < deadline:
            time.sleep(0.2)
            new = supervisor.pid("decoder")
        assert new != old, "supervisord did not restart the decoder"
        before = {m.name: len(collector.of(m.name)) for m in meters}
        collector.wait_for(
            lambda: all(len(collector.of(m.name)) >= before[m.name] + 6 for m in meters), 40, "pushes after restart"
        )
        for m in meters:
            stop_process(m.proc)
        time.sleep(3)  # let the last frames through
    finally:
        for m in meters:
            stop_process(m.proc)
        supervisor.stop()
        collector.stop()

    for m in meters:
        recs = records(m.record(rundir))
        got = collector.of(m.name)
        idx = list(matched_indices(recs, got))
        assert len(idx) == len(set(idx)), f"{m.name}: a push arrived twice"
        assert idx == sorted(idx), f"{m.name}: pushes out of order"
        first, last = idx[0], idx[-1]
        assert last == len(recs) - 1, f"{m.name}: the last {len(recs) - 1 - last} pushes never arrived"
        missing = sorted(set(range(first, last + 1)) - set(idx))
        # A push whose frames were half consumed when the decoder died may be lost;
        # everything queued while it was down must arrive.
        assert len(missing) <= 1, f"{m.name}: pushes {missing} lost ({len(recs)} sent)"
        queued = [i for i, r in enumerate(recs) if r["time"] and _epoch(r["time"]) > killed_at + 1.0]
        assert queued and set(queued) - set(missing) <= set(idx)
        print(f"{m.name}: {len(recs)} pushes sent, {len(idx)} delivered from #{first + 1}, "
              f"{len(missing)} lost at the decoder kill, {len(queued)} sent after it")
        assert all(g.push.meter_id for g in got)
        encrypted = m.key is not None
        assert all(g.push.authenticated == encrypted for g in got)
    log = supervisor.output()
    for secret in (KEY, AUTH, KEY2, AUTH2):
        assert secret.lower() not in log.lower()


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_reader_reconnects_when_its_pty_vanishes_and_returns(rundir: Path) -> None:
    meters = [SimMeter("house", "am550")]
    config = write_config(rundir, meters, push_interval=INTERVAL)
    collector = Collector(f"ipc://{rundir}/readings").start()
    supervisor = Supervisor(rundir, config)
    meter = meters[0]
    try:
        start_simulator(meter, rundir, INTERVAL)
        collector.wait_for(lambda: len(collector.of("house")) >= 3, 40, "first pushes")
        reader_pid = supervisor.pid("reader-house")
        stop_process(meter.proc)  # the pty and its link vanish
        assert not meter.link(rundir).exists()
        time.sleep(3)
        count = len(collector.of("house"))
        start_simulator(meter, rundir, INTERVAL)  # a new pty behind the same path
        collector.wait_for(lambda: len(collector.of("house")) >= count + 3, 60, "pushes after the port came back")
        assert supervisor.pid("reader-house") == reader_pid, "the reader was restarted instead of reconnecting"
    finally:
        stop_process(meter.proc)
        supervisor.stop()
        collector.stop()
    log = supervisor.output()
    assert log.count("lost") >= 1 and "open again" in log


def test_meterpipe_run_status_and_stop(rundir: Path) -> None:
    """The commands a user types: `meterpipe run` in the foreground, `status`, `stop`."""
    import subprocess
    import sys

    config = write_config(rundir, [SimMeter("house", "am550")], push_interval=INTERVAL)
    env = {**os.environ, "METERPIPE_RUNTIME_DIR": str(rundir / "rt")}
    cli = [sys.executable, "-m", "meterpipe.deploy.cli"]
    with open(rundir / "run.log", "wb") as log:
        run = subprocess.Popen([*cli, "run", "--config", str(config)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        status = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True)
        while status.returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            status = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 0, status.stdout + (rundir / "run.log").read_text()
        assert "decoder" in status.stdout and "reader-house" in status.stdout
        stop = subprocess.run([*cli, "stop"], env=env, capture_output=True, text=True)
        assert stop.returncode == 0
        assert run.wait(timeout=30) == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    stopped = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True)
    assert stopped.returncode == 3 and "not running" in stopped.stdout
