"""Issue 11: a changed meterpipe.toml applied to the running pipeline under supervisord
(deploy/apply.py plans, deploy/control.py carries it out), as the settings page does:
only the programs the change concerns restart."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meterpipe.common.config import load_config
from meterpipe.deploy.apply import Plan, plan
from meterpipe.deploy.control import Supervisor as Control
from meterpipe.deploy.programs import programs_conf
from tests.integration.harness import AUTH, KEY, Collector, SimMeter, start_simulator, write_config
from tests.support import Supervisor, stop_process

pytestmark = pytest.mark.slow

INTERVAL = 0.5
WRONG = "0F1E2D3C4B5A69788796A5B4C3D2E1F0"


def pids(control: Control) -> dict[str, int]:
    return {s.name: s.pid for s in control.states() if s.state == "RUNNING"}


def csv_rows(directory: Path) -> int:
    """Data rows in every CSV file of one meter (header lines not counted)."""
    return sum(max(0, len(p.read_text().splitlines()) - 1) for p in directory.glob("*.csv"))


class Pipeline:
    def __init__(self, rundir: Path, meters: list[SimMeter]) -> None:
        self.rundir = rundir
        self.meters = meters
        self.csv = rundir / "csv"
        self.config = write_config(rundir, meters, push_interval=INTERVAL, csv_dir=self.csv)
        self.collector = Collector(f"ipc://{rundir}/readings").start()
        self.supervisor = Supervisor(rundir, self.config)
        self.control = Control(rundir)

    def change(self, meters: list[SimMeter]) -> tuple[Plan, list[str]]:
        """Rewrite meterpipe.toml for ``meters`` and apply it as the settings page does."""
        old = load_config(self.config)
        write_config(self.rundir, meters, push_interval=INTERVAL, csv_dir=self.csv)
        new = load_config(self.config)
        steps = plan(old, new)
        return steps, self.control.apply(steps, programs_conf(new))

    def stop(self) -> None:
        for m in self.meters:
            stop_process(m.proc)
        self.supervisor.stop()
        self.collector.stop()


Make = Callable[[list[SimMeter]], Pipeline]


@pytest.fixture
def pipeline(rundir: Path) -> Iterator[Make]:
    """Start the pipeline for some meters (their simulators are the test's to start); stop it after."""
    started: list[Pipeline] = []

    def make(meters: list[SimMeter]) -> Pipeline:
        started.append(Pipeline(rundir, meters))
        return started[-1]

    yield make
    for p in started:
        p.stop()
        log = p.supervisor.output()
        for secret in (KEY, AUTH, WRONG):
            assert secret.lower() not in log.lower()


def test_a_new_meter_starts_its_reader_and_nothing_else_restarts(pipeline: Make, rundir: Path) -> None:
    house, garage = SimMeter("house", "am550"), SimMeter("garage", "e450", KEY, AUTH)
    p: Pipeline = pipeline([house])
    p.meters.append(garage)
    start_simulator(house, rundir, INTERVAL)
    p.supervisor.running()
    p.collector.wait_for(lambda: len(p.collector.of("house")) >= 2, 40, "first pushes of house")
    before = pids(p.control)
    assert set(before) == {"decoder", "csv", "reader-house"}
    assert "No file matches" not in p.supervisor.output(), "programs.conf alone must not draw a warning"

    start_simulator(garage, rundir, INTERVAL)
    steps, lines = p.change([house, garage])
    assert steps == Plan(add=("reader-garage",), hup_decoder=True)
    assert lines == ["the decoder re-reads its meters", "started reader-garage"], lines

    states = {s.name: s for s in p.control.states()}
    assert states["reader-garage"].state == "RUNNING"
    p.collector.wait_for(lambda: len(p.collector.of("garage")) >= 3, 40, "pushes of the new meter")
    assert all(r.push.authenticated for r in p.collector.of("garage"))
    deadline = time.monotonic() + 20
    while csv_rows(p.csv / "garage") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert csv_rows(p.csv / "garage") >= 2, "the CSV publisher did not write the new meter's readings"
    after = pids(p.control)
    for name in ("decoder", "csv", "reader-house"):
        assert after[name] == before[name], f"{name} was restarted"
    count = len(p.collector.of("house"))
    p.collector.wait_for(lambda: len(p.collector.of("house")) >= count + 2, 20, "pushes of house go on")
    assert "[program:reader-garage]" in (rundir / "programs.conf").read_text()


def test_a_new_key_is_read_without_a_restart_and_a_removed_meter_stops_only_its_reader(
        pipeline: Make, rundir: Path) -> None:
    house, garage = SimMeter("house", "am550"), SimMeter("garage", "e450", KEY, AUTH)
    for m in (house, garage):  # they read their key files now: the config may write others
        start_simulator(m, rundir, INTERVAL)
    p: Pipeline = pipeline([house, SimMeter("garage", "e450", WRONG, AUTH)])
    p.meters[1] = garage  # the simulator sends with the right key; the config holds a wrong one
    p.supervisor.running()
    p.collector.wait_for(lambda: len(p.collector.of("house")) >= 2, 40, "first pushes of house")
    p.collector.wait_for(lambda: any(s.meter == "garage" and s.counters["frames_ok"] > 0
                                     for s in p.collector.statuses), 40, "garage's frames at the decoder")
    assert p.collector.of("garage") == []
    before = pids(p.control)

    steps, lines = p.change([house, garage])  # the key fixed: the decoder re-reads it
    assert steps == Plan(hup_decoder=True)
    assert lines == ["the decoder re-reads its meters"]
    p.collector.wait_for(lambda: len(p.collector.of("garage")) >= 2, 40, "pushes once the key is right")
    assert pids(p.control) == before, "a new key restarted a program"

    steps, lines = p.change([house])
    assert steps == Plan(remove=("reader-garage",), hup_decoder=True)
    assert lines == ["stopped and removed reader-garage", "the decoder re-reads its meters"]
    after = pids(p.control)
    assert "reader-garage" not in {s.name for s in p.control.states()}
    assert after == {k: v for k, v in before.items() if k != "reader-garage"}
    time.sleep(1)  # what the reader had sent is through
    garage_count, house_count = len(p.collector.of("garage")), len(p.collector.of("house"))
    p.collector.wait_for(lambda: len(p.collector.of("house")) >= house_count + 3, 20, "pushes of house go on")
    assert len(p.collector.of("garage")) == garage_count, "readings of a removed meter"
