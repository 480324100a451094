"""Soak (issue 6 part 4): 50 simulated meters for 10 minutes under supervisord
(50 readers, the decoder, the CSV publisher). The RSS of every meterpipe process
must stay within 10 % of its value after the first minute, and no process may
open more file descriptors than it had then.

The meters are simulated cheaply: one thread of this test drives 50 ptys it
opened itself with :class:`MeterSimulator` (40 Iskraemeco AM550, HDLC segments;
10 Landis+Gyr E450, GBT blocks, encrypted and authenticated), one push per meter
per second. ``METERPIPE_SOAK_SECONDS`` sets the duration (default 600; CI runs
the full 10 minutes). ``pytest -s`` prints RSS and descriptors per process kind.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import tty
from datetime import datetime
from pathlib import Path

import pytest

from meterpipe.simulator.meter import MeterSimulator
from tests.integration.harness import SimMeter, write_config
from tests.support import Supervisor

pytestmark = pytest.mark.slow

METERS = 50
ENCRYPTED = 10
INTERVAL = 1.0
SECONDS = float(os.environ.get("METERPIPE_SOAK_SECONDS", "600"))
BASELINE_AT = 60.0 if SECONDS >= 120 else SECONDS / 2
SAMPLE_EVERY = 30.0
RSS_GROWTH = 1.10


def _key(i: int) -> str:
    return bytes((i + j) % 256 for j in range(16)).hex().upper()


def _auth(i: int) -> str:
    return bytes((0xA0 + i + j) % 256 for j in range(16)).hex().upper()


class PtyMeters:
    """50 meters on ptys opened here, pushed from one thread."""

    def __init__(self, rundir: Path, meters: list[SimMeter]) -> None:
        self.sims: list[tuple[int, MeterSimulator]] = []
        self.fds: list[int] = []
        for i, m in enumerate(meters):
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            os.symlink(os.ttyname(slave), m.link(rundir))
            key = bytes.fromhex(m.key) if m.key else None
            auth = bytes.fromhex(m.auth_key) if m.auth_key else None
            self.sims.append((master, MeterSimulator(m.model, key=key, auth_key=auth, seed=i)))
            self.fds += [master, slave]
        self.pushes = 0
        self.dropped_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        step = INTERVAL / len(self.sims)
        next_at = time.monotonic()
        while not self._stop.is_set():
            for master, sim in self.sims:
                push = sim.push(datetime.now().astimezone())
                for frame in push.frames:
                    try:
                        written = os.write(master, frame)
                    except BlockingIOError:
                        written = 0
                    self.dropped_bytes += len(frame) - written
                self.pushes += 1
                next_at += step
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for fd in self.fds:
            os.close(fd)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _kind(program: str) -> str:
    return "reader" if program.startswith("reader-") else program


def test_fifty_meters_for_ten_minutes_keep_memory_and_descriptors_flat(rundir: Path) -> None:
    meters = [SimMeter(f"m{i:02d}", "e450", _key(i), _auth(i)) if i < ENCRYPTED else SimMeter(f"m{i:02d}", "am550")
              for i in range(METERS)]
    csv_dir = rundir / "csv"
    config = write_config(rundir, meters, f'[publishers.csv]\nenabled = true\ndirectory = "{csv_dir}"\n',
                          push_interval=INTERVAL)
    sims = PtyMeters(rundir, meters)
    supervisor = Supervisor(rundir, config)
    samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
    try:
        started = time.monotonic()
        deadline = started + 120
        pids: dict[str, int] = {}
        while len(pids) < METERS + 2:
            assert time.monotonic() < deadline, f"not all programs running: {supervisor.ctl('status')}"
            time.sleep(1)
            pids = supervisor.status_pids()
        times = [BASELINE_AT + k * SAMPLE_EVERY for k in range(int((SECONDS - BASELINE_AT) // SAMPLE_EVERY) + 1)]
        for t in [*[x for x in times if x < SECONDS], SECONDS]:
            time.sleep(max(0.0, started + t - time.monotonic()))
            now = supervisor.status_pids()
            assert now == pids, f"a process was restarted during the soak: {set(now.items()) ^ set(pids.items())}"
            samples.append((t, {p: (_rss_kb(pid), _fds(pid)) for p, pid in pids.items()}))
        rows = {m.name: _rows(csv_dir / m.name) for m in meters}
    finally:
        sims.stop()
        supervisor.stop()

    base, end = samples[0][1], samples[-1][1]
    print(f"\nsoak: {METERS} meters, {SECONDS:.0f} s, {sims.pushes} pushes written "
          f"({sims.dropped_bytes} bytes the ptys could not take), {sum(rows.values())} CSV rows")
    print(f"{'kind':<8} {'n':>3} {'RSS at ' + str(int(BASELINE_AT)) + ' s (KiB)':>22} {'RSS at end (KiB)':>18} "
          f"{'max growth':>10} {'fds 1 min -> end':>18}")
    for kind in ("decoder", "csv", "reader"):
        progs = [p for p in base if _kind(p) == kind]
        b = [base[p][0] for p in progs]
        e = [end[p][0] for p in progs]
        growth = max(max(s[p][0] for _, s in samples) / base[p][0] for p in progs)
        fd_b = sorted({base[p][1] for p in progs})
        fd_e = sorted({end[p][1] for p in progs})
        shown_b = f"{statistics.median(b):.0f}" if len(b) == 1 else f"{min(b)}..{max(b)} (med {statistics.median(b):.0f})"
        shown_e = f"{statistics.median(e):.0f}" if len(e) == 1 else f"{min(e)}..{max(e)}"
        print(f"{kind:<8} {len(progs):>3} {shown_b:>22} {shown_e:>18} {(growth - 1) * 100:>9.1f}% "
              f"{str(fd_b) + ' -> ' + str(fd_e):>18}")
    problems = []
    for program in base:
        rss0, fds0 = base[program]
        for t, s in samples[1:]:
            rss, fds = s[program]
            if rss > rss0 * RSS_GROWTH:
                problems.append(f"{program}: RSS {rss0} KiB at {BASELINE_AT:.0f} s, {rss} KiB at {t:.0f} s")
            if fds > fds0:
                problems.append(f"{program}: {fds0} descriptors at {BASELINE_AT:.0f} s, {fds} at {t:.0f} s")
    assert not problems, "\n".join(problems)
    quiet = [m for m, n in rows.items() if n < (SECONDS / INTERVAL) * 0.5]
    assert not quiet, f"meters with few CSV rows (pipeline fell behind?): {quiet}"


def _rows(folder: Path) -> int:
    return sum(max(0, len(f.read_text().splitlines()) - 1) for f in folder.glob("*.csv")) if folder.is_dir() else 0
