"""Issue 11: deploy/control.py against a real supervisord (deploy/supervisord.conf) running
stand-in programs (a few lines of Python each), and against no or a hung supervisord.

The stand-ins stand for meterpipe's programs by name only: the whole pipeline under a
changing config is tests/integration/test_apply.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meterpipe.deploy.apply import Plan
from meterpipe.deploy.control import ControlError, ProcessState, Supervisor, runtime_dir_from_env
from meterpipe.deploy.programs import EXTRA_NAME, programs_conf, section
from meterpipe.deploy.supervise import supervisor_env, supervisord_command, write_programs
from tests.support import stop_process

pytestmark = pytest.mark.slow

STANDIN = """\
import pathlib, signal, sys, time
name, out = sys.argv[1], pathlib.Path(sys.argv[2])
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
signal.signal(signal.SIGHUP, lambda *a: out.open("a").write(name + " HUP\\n"))
while not stop:
    time.sleep(0.05)
"""


def table(rundir: Path, *names: str, off: tuple[str, ...] = ()) -> str:
    command = f"%(ENV_METERPIPE_PYTHON)s {rundir / 'standin.py'}"
    return "\n".join(section(n, f"{command} {n} {rundir / 'signals.txt'}", priority=10 if n == "decoder" else 30,
                             startsecs=1, autostart=n not in off) for n in names)


class Running:
    def __init__(self, rundir: Path, programs: str, extra: str | None = None) -> None:
        (rundir / "standin.py").write_text(STANDIN)
        write_programs(rundir, programs)
        if extra is not None:
            (rundir / EXTRA_NAME).write_text(extra)
        self.rundir = rundir
        self.log = rundir / "supervisord.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(supervisord_command(), env=supervisor_env(None, rundir),
                                         stdout=out, stderr=subprocess.STDOUT)
        self.control = Supervisor(rundir, timeout=10)

    def states(self, timeout: float = 20) -> dict[str, ProcessState]:
        """Once no program is STARTING any more: name -> state."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = {s.name: s for s in self.control.states()}
            except ControlError:
                found = {}
            if found and all(s.state != "STARTING" for s in found.values()):
                return found
            assert time.monotonic() < deadline, f"supervisord did not settle: {found}\n{self.log.read_text()}"
            time.sleep(0.1)

    def pids(self) -> dict[str, int]:
        return {n: s.pid for n, s in self.states().items() if s.state == "RUNNING"}


@pytest.fixture
def running(rundir: Path) -> Iterator[Running]:
    r = Running(rundir, table(rundir, "decoder", "csv", "mqtt", "reader-a", "reader-b", off=("mqtt",)),
                extra=table(rundir, "simulator-a"))
    try:
        r.states()  # supervisord is up, every program started
        yield r
    finally:
        stop_process(r.proc, timeout=20)


def test_runtime_dir_from_env() -> None:
    assert runtime_dir_from_env({"METERPIPE_RUNTIME_DIR": "/run/x"}) == Path("/run/x")
    assert runtime_dir_from_env({"METERPIPE_RUNTIME_DIR": ""}) is None
    assert runtime_dir_from_env({}) is None


def test_no_supervisord_is_a_control_error_and_nothing_is_written(rundir: Path) -> None:
    control = Supervisor(rundir, timeout=2)
    with pytest.raises(ControlError, match=r"not running under supervisord \(no control socket") as caught:
        control.states()
    assert caught.value.kind == "control" and str(rundir / "supervisor.sock") in caught.value.message
    with pytest.raises(ControlError, match="not running under supervisord"):
        control.apply(Plan(add=("reader-x",)), "[program:reader-x]\ncommand=/bin/true\n")
    assert not (rundir / "programs.conf").exists()
    # a socket file that nothing listens on any more
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(rundir / "supervisor.sock"))
    with pytest.raises(ControlError, match="nothing listens on the control socket"):
        control.states()


def test_a_hung_supervisord_cannot_hang_the_caller(rundir: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(rundir / "supervisor.sock"))
    server.listen(1)
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True)
    accepting.start()
    try:
        started = time.monotonic()
        with pytest.raises(ControlError, match=r"no answer within 0\.5 s"):
            Supervisor(rundir, timeout=0.5).states()
        assert time.monotonic() - started < 3
    finally:
        accepting.join(2)
        for s in (*held, server):
            s.close()


def test_states_name_every_program(running: Running) -> None:
    states = running.states()
    assert set(states) == {"decoder", "csv", "mqtt", "reader-a", "reader-b", "simulator-a"}
    assert states["mqtt"].state == "STOPPED" and states["mqtt"].pid == 0
    assert states["reader-a"].state == "RUNNING" and states["reader-a"].pid > 0
    assert "pid" in states["reader-a"].description
    assert "No file matches" not in running.log.read_text()


def test_apply_touches_only_what_the_plan_names(running: Running) -> None:
    rundir = running.rundir
    before = running.pids()
    # mqtt's autostart flips in the new table but the plan does not name it: it stays as it is
    new = table(rundir, "decoder", "csv", "mqtt", "reader-b", "reader-c")
    plan = Plan(add=("reader-c",), remove=("reader-a",), restart=("csv",), hup_decoder=True)
    lines = running.control.apply(plan, new)
    assert lines == ["stopped and removed reader-a", "the decoder re-reads its meters", "started reader-c",
                     "restarted csv"], lines
    assert (rundir / "programs.conf").read_text() == new
    after = running.pids()
    assert set(after) == {"decoder", "csv", "reader-b", "reader-c", "simulator-a"}
    for name in ("decoder", "reader-b", "simulator-a"):
        assert after[name] == before[name], f"{name} was restarted"
    assert after["csv"] != before["csv"]
    assert running.states()["mqtt"].state == "STOPPED"
    deadline = time.monotonic() + 5
    while not (rundir / "signals.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (rundir / "signals.txt").read_text() == "decoder HUP\n"


def test_apply_starts_and_stops_publishers(running: Running) -> None:
    rundir = running.rundir
    before = running.pids()
    new = table(rundir, "decoder", "csv", "mqtt", "reader-a", "reader-b", off=("csv",))
    lines = running.control.apply(Plan(start=("mqtt",), stop=("csv",)), new)
    assert lines == ["stopped csv", "started mqtt"]
    states = running.states()
    assert states["csv"].state == "STOPPED" and states["mqtt"].state == "RUNNING"
    assert {n: p for n, p in running.pids().items() if n != "mqtt"} == {n: p for n, p in before.items() if n != "csv"}


def test_apply_says_what_did_not_work(running: Running) -> None:
    rundir = running.rundir
    broken = section("reader-bad", "/nonexistent/python", priority=30, startsecs=1, startretries=0)
    new = table(rundir, "decoder", "csv", "mqtt", "reader-a", "reader-b") + "\n" + broken
    lines = running.control.apply(Plan(add=("reader-bad", "reader-ghost"), start=("nothing",)), new)
    assert lines == ["could not start reader-bad: NO_FILE: can't find command '/nonexistent/python'",
                     "could not start reader-ghost: BAD_NAME: reader-ghost",
                     "could not start nothing: BAD_NAME: nothing"]
    assert running.states()["reader-bad"].state in ("STOPPED", "FATAL")  # FATAL: autostart tried first


def test_apply_refuses_a_table_supervisord_cannot_read(running: Running) -> None:
    before = running.pids()
    kept = (running.rundir / "programs.conf").read_text()
    with pytest.raises(ControlError, match="refused the new program table"):
        running.control.apply(Plan(restart=("csv",)), "[program:broken]\n")  # no command
    assert running.pids() == before
    assert (running.rundir / "programs.conf").read_text() == kept


def test_no_group_in_the_program_table() -> None:
    from meterpipe.common.config import config_from_dict

    config = config_from_dict({"meters": [{"name": "a", "port": "/dev/a"}, {"name": "b", "port": "/dev/b"}]},
                              environ={"METERPIPE_RUNTIME_DIR": "/tmp/mp-x"})
    text = programs_conf(config)
    assert "[group:" not in text
    assert "[program:reader-a]" in text and "[program:reader-b]" in text
    assert "--meter a --config" in text and sys.executable not in text
