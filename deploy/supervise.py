"""``meterpipe run | status | stop``: the pipeline under supervisord.

``run`` validates the config (exit 2 with one line on error), takes the runtime
directory's instance lock (:mod:`meterpipe.common.instances`; exit 3, touching
nothing, when another ``meterpipe run`` holds it), writes ``programs.conf`` from the program table
(:mod:`meterpipe.deploy.programs`) and replaces itself with supervisord running
``deploy/supervisord.conf`` in the foreground. The lock's descriptor survives
the exec, so it is held exactly as long as that supervisord lives (supervisord
closes it in the processes it starts). ``status`` and ``stop`` talk to that
supervisord over its private control socket. The demo (deploy/demo.py) runs the
same pieces in a runtime directory of its own.
"""

from __future__ import annotations

import importlib.resources
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from meterpipe.common.config import Config
from meterpipe.common.endpoints import demo_runtime_dir, make_private_dir, runtime_dir
from meterpipe.common.files import write_atomic
from meterpipe.common.instances import LOCK_NAME, holder_pid, keep_across_exec, record_holder, take_lock
from meterpipe.common.process import EXIT_UNAVAILABLE, base_parser, load_config_or_exit
from meterpipe.deploy.programs import programs_conf


def supervisord_conf() -> Path:
    """deploy/supervisord.conf as installed with the package."""
    return Path(str(importlib.resources.files("meterpipe.deploy").joinpath("supervisord.conf")))


def supervisor_env(
    config: Config | None, rundir: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment deploy/supervisord.conf and programs.conf expand (also needed by supervisorctl)."""
    env = dict(os.environ if base is None else base)
    env["METERPIPE_RUNTIME_DIR"] = str(rundir)
    env["METERPIPE_PYTHON"] = sys.executable
    env["PYTHONUNBUFFERED"] = "1"
    if config is not None and config.source is not None:
        env["METERPIPE_CONFIG"] = str(Path(config.source).resolve())
    env.setdefault("METERPIPE_CONFIG", "meterpipe.toml")
    return env


def write_programs(rundir: Path, text: str) -> Path:
    """Write ``programs.conf`` (mode 0600) atomically into ``rundir``."""
    make_private_dir(rundir)
    path = rundir / "programs.conf"
    write_atomic(path, text, 0o600)
    return path


def supervisord_command() -> list[str]:
    return [sys.executable, "-m", "supervisor.supervisord", "-c", str(supervisord_conf())]


def supervisorctl(rundir: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(supervisord_conf()), *args]
    return subprocess.run(command, env=supervisor_env(None, rundir), capture_output=capture, text=True, check=False)


def already_running(pid: int, rundir: Path) -> str:
    shown = str(pid) if pid else "starting"
    return (f"meterpipe is already running (supervisord pid {shown}, runtime directory {rundir}): "
            "use 'meterpipe status' or 'meterpipe stop'")


def first_start(path: str | None, listen: str) -> None:
    """No config file yet (a fresh install): write the starter, whose meters the settings page adds."""
    from meterpipe.common.config import CONFIG_ENV, DEFAULT_PATH
    from meterpipe.common.config_file import write_starter

    target = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_PATH).expanduser()
    if target.exists():
        return
    # Under systemd (StateDirectory=meterpipe) the data goes to /var/lib/meterpipe, not beside the config.
    data = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "data"
    try:
        write_starter(target, listen, data)
    except OSError as exc:
        print(f"cannot write a starter config at {target}: {exc.strerror}", file=sys.stderr)
        return
    print(f"meterpipe: no config yet: wrote a starter config at {target.absolute()} (no meter yet); "
          f"add meters on http://{listen}/settings", flush=True)


def setup_line(config: Config) -> str | None:
    """While the web page has no password: a fresh one-time setup code, announced in the log."""
    if not config.web.enabled:
        return None
    from meterpipe.web.setup_code import announce

    host = f"[{config.web.host}]" if ":" in config.web.host else config.web.host
    try:
        return announce(config.web.password_file, f"http://{host}:{config.web.port}/")
    except OSError as exc:
        return f"web page: cannot write the setup code beside {config.web.password_file}: {exc.strerror}"


def run_main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("meterpipe run", "Run every meterpipe process under supervisord, in the foreground. "
                         "Without a config file, writes a starter one first (no meter: add them on the "
                         "web page's settings).", verbose=False)
    parser.add_argument("--web", metavar="HOST:PORT", default="127.0.0.1:8080",
                        help="the web page's address in a starter config (default: %(default)s)")
    args = parser.parse_args(argv)
    first_start(args.config, args.web)
    config = load_config_or_exit(args.config)
    rundir = runtime_dir()
    lock = take_lock(rundir)
    if lock is None:
        print(already_running(holder_pid(rundir) or 0, rundir), file=sys.stderr)
        return EXIT_UNAVAILABLE
    record_holder(lock, os.getpid())  # exec keeps the pid: it is supervisord's
    keep_across_exec(lock)
    write_programs(rundir, programs_conf(config))
    line = setup_line(config)
    if line is not None:
        print(line, flush=True)
    env = supervisor_env(config, rundir)
    command = supervisord_command()
    sys.stdout.flush()
    os.execve(command[0], command, env)


def _not_running(rundir: Path) -> str:
    line = f"meterpipe is not running (no supervisord holds {rundir / LOCK_NAME}); start it with 'meterpipe run'"
    demo = demo_runtime_dir()
    pid = holder_pid(demo)
    if pid is not None:
        line += f"\na meterpipe demo is running (supervisord pid {pid or 'starting'}, runtime directory {demo})"
    return line


def status_main(argv: Sequence[str] | None = None) -> int:
    """Print every process's state; exit 0 when all enabled ones run, 3 otherwise."""
    base_parser("meterpipe status", "Show the state of every process of 'meterpipe run' (exit 0 when every "
                "enabled one runs).", verbose=False, config=False).parse_args(argv)
    rundir = runtime_dir(create=False)
    if holder_pid(rundir) is None:
        print(_not_running(rundir))
        return EXIT_UNAVAILABLE
    result = supervisorctl(rundir, "status", capture=True)
    print(result.stdout, end="")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    # Publishers switched off in the config are never started: that is their normal state.
    healthy = all(" RUNNING " in line or "Not started" in line for line in lines)
    return 0 if lines and healthy else EXIT_UNAVAILABLE


def stop_main(argv: Sequence[str] | None = None) -> int:
    base_parser("meterpipe stop", "Stop a running 'meterpipe run'.", verbose=False, config=False).parse_args(argv)
    rundir = runtime_dir(create=False)
    if holder_pid(rundir) is None:
        print(_not_running(rundir))
        return EXIT_UNAVAILABLE
    return supervisorctl(rundir, "shutdown").returncode

