"""One instance per runtime directory (issue 9): a demo beside `meterpipe run` is a
pipeline of its own, and a second `meterpipe run` is refused without touching the first."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import Collector, SimMeter, start_simulator
from tests.support import free_port, stop_process

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "meterpipe.deploy.cli"]
INTERVAL = 0.5


def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _wait_running(env: dict[str, str], log: Path) -> None:
    deadline = time.monotonic() + 30
    while _cli("status", env=env).returncode != 0:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)


@dataclass
class Running:
    """A `meterpipe run` of one simulated AM550 in ``rundir/rt``, as a user starts it."""

    run: subprocess.Popen[bytes]
    config: Path
    runtime: Path
    env: dict[str, str]
    log: Path
    stop: subprocess.CompletedProcess[str] | None = None


@contextmanager
def meterpipe_run(rundir: Path) -> Iterator[Running]:
    """Start it, wait until every program runs, and on the way out `meterpipe stop` it."""
    meter = SimMeter("house", "am550")
    start_simulator(meter, rundir, INTERVAL)
    config = rundir / "meterpipe.toml"
    # No [endpoints]: the defaults in the runtime directory, as a user's config has them.
    config.write_text(f'[[meters]]\nname = "house"\nport = "{meter.link(rundir)}"\nlink = "hdlc"\n'
                      f'model = "am550"\npush_interval = {INTERVAL}\n\n[publishers.csv]\nenabled = false\n\n'
                      f'[web]\nlisten = "127.0.0.1:{free_port()}"\n')
    runtime = rundir / "rt"
    env = {**os.environ, "METERPIPE_RUNTIME_DIR": str(runtime)}
    log = rundir / "run.log"
    with open(log, "wb") as out:
        run = subprocess.Popen([*CLI, "run", "--config", str(config)], env=env, stdout=out, stderr=subprocess.STDOUT)
    running = Running(run, config, runtime, env, log)
    try:
        _wait_running(env, log)
        yield running
    finally:
        running.stop = _cli("stop", env=env)
        try:
            run.wait(timeout=30)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
            stop_process(meter.proc)


def test_demo_and_second_run_leave_the_running_pipeline_alone(rundir: Path) -> None:
    runtime = rundir / "rt"
    collector = Collector(f"ipc://{runtime}/readings").start()
    try:
        with meterpipe_run(rundir) as running:
            run, config, env, log = running.run, running.config, running.env, running.log
            collector.wait_for(lambda: len(collector.of("house")) >= 2, 20, "the running pipeline's first pushes")
            pid_file = runtime / "supervisord.pid"
            before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (runtime / "programs.conf", pid_file)}

            second = _cli("run", "--config", str(config), env=env)
            assert second.returncode == 3, second.stderr
            pid = pid_file.read_text().strip()
            assert second.stderr.strip() == (
                f"meterpipe is already running (supervisord pid {pid}, runtime directory {runtime}): "
                "use 'meterpipe status' or 'meterpipe stop'"
            )
            after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (runtime / "programs.conf", pid_file)}
            assert after == before, "the refused second run touched the first one's files"

            started = time.monotonic()
            demo = _cli("demo", "--seconds", "20", "--data-dir", str(rundir / "demo-data"), "--json",
                        "--web", f"127.0.0.1:{free_port()}", "--history-days", "0.5", env=env, timeout=90)
            demo_s = time.monotonic() - started
            assert demo.returncode == 0, demo.stdout + demo.stderr
            demo_meters = {m for m in re.findall(r'"meter": "(\w+)"', demo.stdout)}
            assert demo_meters == {"house", "flat"}, demo.stdout[-2000:]
            time.sleep(2 * INTERVAL)
            assert run.poll() is None and _cli("status", env=env).returncode == 0
    finally:
        collector.stop()
    assert running.stop is not None and running.stop.returncode == 0
    got = collector.of("house")
    seqs = [m.seq for m in got]
    frames = [m.frame_seq for m in got]
    # Every push of the running pipeline arrived, in order, while the demo ran beside it: no
    # decoder restart (seq), no push lost or rejected between them (the reader's frame
    # numbers grow by the same number of frames from push to push).
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    steps = {b - a for a, b in itertools.pairwise(frames)}
    assert len(steps) == 1, f"frames per push varied (a push lost or rejected): {frames}"
    assert len(seqs) >= (demo_s - 2) / INTERVAL, f"only {len(seqs)} pushes in {demo_s:.0f} s"
    output = log.read_text()
    for sign in ("not in the config", "authentication tag", "decrypt"):  # the demo's frames reaching this decoder
        assert sign not in output, output[-3000:]


def test_status_says_when_only_a_demo_runs(rundir: Path) -> None:
    env = {**os.environ, "METERPIPE_RUNTIME_DIR": str(rundir / "rt")}
    demo = subprocess.Popen([*CLI, "demo", "--seconds", "12", "--data-dir", str(rundir / "d"),
                             "--web", f"127.0.0.1:{free_port()}", "--history-days", "0.5"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        for line in demo.stdout:  # the first reading means the demo's supervisord is up
            if "active_power" in line or "voltage" in line:
                break
        status = _cli("status", env=env)
        assert status.returncode == 3
        assert "meterpipe is not running" in status.stdout
        assert "a meterpipe demo is running (supervisord pid " in status.stdout
        assert str(rundir / "rt" / "demo") in status.stdout
        second = _cli("demo", "--seconds", "1", env=env)
        assert second.returncode == 3 and "a meterpipe demo is already running" in second.stderr
    finally:
        demo.communicate(timeout=60)
    assert demo.returncode == 0


def test_the_lock_outlives_a_supervisord_reload(rundir: Path) -> None:
    """supervisord closes descriptors from 5 up when it reloads; the lock sits below that."""
    from meterpipe.deploy.supervise import supervisorctl

    with meterpipe_run(rundir) as running:
        assert supervisorctl(running.runtime, "reload", capture=True).returncode == 0
        _wait_running(running.env, running.log)
        second = _cli("run", "--config", str(running.config), env=running.env)
        assert second.returncode == 3 and f"supervisord pid {running.run.pid}," in second.stderr, second.stderr
