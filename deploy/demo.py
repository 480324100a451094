"""``meterpipe demo``: the whole pipeline on simulated meters, no hardware, no broker.

    meterpipe demo [--seconds N] [--data-dir DIR] [--interval S] [--mqtt HOST:PORT]
                   [--web HOST:PORT | --no-web] [--history-days N]

Runs supervisord with two simulated meters on ptys (an encrypted and
authenticated Landis+Gyr E450 with fresh random keys, and an Iskraemeco AM550),
one reader per meter, the decoder, the CSV and history publishers and the web
page (plus MQTT with ``--mqtt``), and prints the readings as they arrive.
Before the start, the history is filled with ``--history-days`` of the
simulated meters' pushes (see :mod:`meterpipe.deploy.backfill`), so the charts
are not empty. Ctrl-C, or the end of ``--seconds``, stops everything and leaves
no process behind. The data (``csv/``, ``history.sqlite``, the meters' state
files) stays in ``--data-dir`` for the next run, which carries on from it.

The demo is an instance of its own: its sockets, config, keys, control socket
and log live in ``<runtime dir>/demo``, never shared with a ``meterpipe run``
going at the same time, and a second demo is refused while one runs.
``meterpipe tap --config <runtime dir>/demo/meterpipe.toml`` in a second
terminal shows its readings.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from meterpipe.common.config import Config
from meterpipe.common.endpoints import default_endpoints, demo_runtime_dir, make_private_dir
from meterpipe.common.files import write_atomic
from meterpipe.common.instances import holder_pid, record_holder, take_lock
from meterpipe.common.process import EXIT_UNAVAILABLE, StopFlag, load_config_or_exit
from meterpipe.deploy.programs import EXTRA_NAME, programs_conf, section
from meterpipe.deploy.supervise import (
    already_running,
    setup_line,
    supervisor_env,
    supervisorctl,
    supervisord_command,
    write_programs,
)

if TYPE_CHECKING:
    from meterpipe.deploy.backfill import Planned

DEMO_METERS = (("house", "e450", True), ("flat", "am550", False))
MAX_HISTORY_DAYS = 31  # the backfill's first pass runs before the start: about a second a week


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data.hex().upper() + "\n")


def write_demo_config(rundir: Path, data_dir: Path, interval: float, mqtt: str | None, web: str | None) -> Path:
    endpoints = default_endpoints(environ={"METERPIPE_RUNTIME_DIR": str(rundir)})
    lines = []
    for name, model, encrypted in DEMO_METERS:
        lines += ["[[meters]]", f'name = "{name}"', f'port = "{rundir / (name + ".pty")}"', 'link = "hdlc"']
        lines += [f'model = "{model}"', f"push_interval = {interval}"]
        if encrypted:
            for which in ("key", "auth_key"):
                path = rundir / f"{name}.{which}"
                _write_secret(path, os.urandom(16))
                lines.append(f'{which}_file = "{path}"')
        lines.append("")
    lines += ["[endpoints]", f'frames = "{endpoints.frames}"', f'readings = "{endpoints.readings}"', ""]
    lines += ["[publishers.csv]", "enabled = true", f'directory = "{data_dir / "csv"}"', ""]
    lines += ["[publishers.history]", "enabled = true", f'path = "{data_dir / "history.sqlite"}"', ""]
    lines += ["[web]", f"enabled = {'true' if web else 'false'}", f'listen = "{web or "127.0.0.1:8080"}"', ""]
    # example prices, so that the cost views have something to show
    lines += ["[web.tariff]", 'currency = "EUR"', "import_price = 0.30", "export_price = 0.08", "monthly_fee = 12.0", ""]
    if mqtt:
        host, _, port = mqtt.rpartition(":")
        lines += ["[publishers.mqtt]", "enabled = true", f'host = "{host or "127.0.0.1"}"', f"port = {int(port)}"]
        lines += [f'spool_path = "{rundir / "mqtt-spool.sqlite"}"', ""]
    path = rundir / "meterpipe.toml"
    path.write_text("\n".join(lines))
    os.chmod(path, 0o600)
    return path


def state_file(data_dir: Path, meter: str) -> Path:
    """Where a simulated meter keeps its registers between runs (and the backfill leaves them)."""
    return data_dir / f"simulator-{meter}.json"


def simulator_programs(rundir: Path, interval: float, data_dir: Path) -> str:
    parts = []
    for name, model, encrypted in DEMO_METERS:
        command = (
            f"%(ENV_METERPIPE_PYTHON)s -m meterpipe.simulator.main --model {model} "
            f"--link {rundir / (name + '.pty')} --interval {interval} --state {state_file(data_dir, name)}"
        )
        if encrypted:
            command += f" --key-file {rundir / (name + '.key')} --auth-key-file {rundir / (name + '.auth_key')}"
        parts.append(section(f"simulator-{name}", command, priority=5, startsecs=1))
    return "\n".join(parts)


def write_extra(rundir: Path, text: str) -> Path:
    """Write ``extra-programs.conf`` (mode 0600) atomically into ``rundir``: programs that are
    not meterpipe's own, which deploy/supervisord.conf includes beside ``programs.conf``."""
    path = rundir / EXTRA_NAME
    write_atomic(path, text, 0o600)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="meterpipe demo",
        description="Run the whole pipeline on two simulated meters (no hardware, no broker) and print "
        "the readings as they arrive. It runs in a runtime directory of its own, beside any 'meterpipe run'.",
    )
    parser.add_argument("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--data-dir", type=Path, default=Path("meterpipe-demo-data"),
                        help="where the CSV files, the history database and the meters' state go "
                        "(kept for the next run)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pushes of each meter")
    parser.add_argument("--mqtt", metavar="HOST:PORT", help="also publish to this MQTT broker")
    parser.add_argument("--web", metavar="HOST:PORT", default="127.0.0.1:8080",
                        help="serve the web page here (default 127.0.0.1:8080, this machine only)")
    parser.add_argument("--no-web", action="store_true", help="no web page")
    parser.add_argument("--history-days", type=float, default=7.0, metavar="N",
                        help=f"first fill the history with N days of simulated pushes (default 7, at most "
                        f"{MAX_HISTORY_DAYS}; 0: none)")
    parser.add_argument("--json", action="store_true", help="print readings as JSON lines")
    args = parser.parse_args(argv)
    if args.interval < 0.05:
        parser.error("--interval must be at least 0.05 s")
    if not 0 <= args.history_days <= MAX_HISTORY_DAYS:
        parser.error(f"--history-days must be between 0 and {MAX_HISTORY_DAYS}")
    web = None if args.no_web else args.web
    if web is not None and (problem := _port_problem(web)):
        parser.error(f"--web {web}: {problem}")
    rundir = demo_runtime_dir()
    make_private_dir(rundir.parent)  # the main runtime directory is private too
    lock = take_lock(rundir)
    if lock is None:
        print(already_running(holder_pid(rundir) or 0, rundir).replace("meterpipe is", "a meterpipe demo is"),
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = write_demo_config(rundir, data_dir, args.interval, args.mqtt, web)
    config = load_config_or_exit(str(config_path))
    plans = _plan(config, data_dir, args.history_days) if args.history_days > 0 else None
    held = ("history",) if plans is not None else ()
    # The simulators go beside programs.conf, which the settings page rewrites from the config alone.
    write_extra(rundir, simulator_programs(rundir, args.interval, data_dir))
    write_programs(rundir, programs_conf(config, held=held))
    log_path = rundir / "supervisord.log"
    print(f"meterpipe demo: 2 simulated meters, decoder, CSV and history into {data_dir}"
          + (f", MQTT to {args.mqtt}" if args.mqtt else ""), flush=True)
    if web is not None:
        print(f"  web page: http://{_url_host(config.web.host)}:{config.web.port}/", flush=True)
        setup = setup_line(config)  # the Settings pages need the owner's password, even here
        if setup is not None:
            print("  settings: " + setup.removeprefix("web page: "), flush=True)
    print(f"  process log: {log_path}", flush=True)
    print(f"  watch from another terminal: meterpipe tap --config {config_path}", flush=True)
    with open(log_path, "ab") as log_file:
        supervisord = subprocess.Popen(
            supervisord_command(), env=supervisor_env(config, rundir), stdout=log_file, stderr=subprocess.STDOUT,
            pass_fds=(lock,),  # supervisord holds the instance lock too, for as long as it runs
        )
    record_holder(lock, supervisord.pid)
    backfill: threading.Thread | None = None
    try:
        if plans is not None:  # while the pipeline starts and the readings show
            backfill = threading.Thread(target=_store, args=(config, plans, rundir), name="backfill")
            backfill.start()
        return _show(config.endpoints.readings, args.seconds, args.json, supervisord)
    finally:
        if backfill is not None and backfill.is_alive():  # a half-written week would stay a hole
            print("meterpipe demo: finishing the history backfill first ...", flush=True)
            backfill.join()
        _stop(supervisord)
        os.close(lock)


def _plan(config: Config, data_dir: Path, days: float) -> list[Planned]:
    """The backfill's plan; the live simulators start from the registers it ends with."""
    from meterpipe.deploy.backfill import BackfillMeter, plan

    meters = [BackfillMeter(name, model, state_file(data_dir, name)) for name, model, _ in DEMO_METERS]
    return plan(config, meters, days)


def _store(config: Config, plans: list[Planned], rundir: Path) -> None:
    """Write the backfill while the live pipeline starts, then start the history process."""
    from meterpipe.deploy.backfill import store

    started = time.monotonic()
    stored = store(config, plans)
    deadline = time.monotonic() + 30
    while True:  # supervisord may still be starting up: its control socket comes first
        out = supervisorctl(rundir, "start", "history", capture=True).stdout
        if "started" in out or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    print(f"meterpipe demo: history filled with {stored} simulated pushes in {time.monotonic() - started:.1f} s",
          flush=True)


def _port_problem(listen: str) -> str | None:
    """Why the web page could not listen on ``listen`` (None: it can)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or not host:
        return "give HOST:PORT, e.g. 127.0.0.1:8080"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, int(port)))
    except OSError as exc:
        return f"cannot listen there ({exc.strerror}); pick another port, e.g. --web {host}:8081"
    except (OverflowError, ValueError):
        return "give HOST:PORT, e.g. 127.0.0.1:8080"
    return None


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def _show(endpoint: str, seconds: float | None, as_json: bool, supervisord: subprocess.Popen[bytes]) -> int:
    from meterpipe.publishers.subscriber import run_subscriber
    from meterpipe.publishers.tap import TapHandler

    stop = StopFlag().install()
    deadline = time.monotonic() + seconds if seconds else None

    class _Until(TapHandler):
        def tick(self, now: float) -> None:
            if (deadline is not None and time.monotonic() >= deadline) or supervisord.poll() is not None:
                stop.set()

    run_subscriber(endpoint, _Until(b"reading/", as_json, sys.stdout, None, stop), stop)
    if supervisord.poll() is not None:
        print(f"meterpipe demo: supervisord exited with {supervisord.returncode}; see the process log", file=sys.stderr)
        return 1
    return 0


def _stop(supervisord: subprocess.Popen[bytes]) -> None:
    if supervisord.poll() is None:
        supervisord.send_signal(signal.SIGTERM)
        try:
            supervisord.wait(timeout=20)
        except subprocess.TimeoutExpired:
            supervisord.kill()
            supervisord.wait()
    print("meterpipe demo: stopped", flush=True)
