"""``meterpipe run | status | stop``: the pipeline under supervisord.

``run`` validates the config (exit 2 with one line on error), takes the runtime
directory's instance lock (exit 3, touching nothing, when another ``meterpipe
run`` holds it), writes ``programs.conf`` from the program table
(:mod:`meterpipe.deploy.programs`) and replaces itself with supervisord running
``deploy/supervisord.conf`` in the foreground. The lock's descriptor survives
the exec, so it is held exactly as long as that supervisord lives (supervisord
closes it in the processes it starts). ``status`` and ``stop`` talk to that
supervisord over its private control socket. The demo (deploy/demo.py) runs the
same pieces in a runtime directory of its own.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import importlib.resources
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from meterpipe.common.config import Config
from meterpipe.common.endpoints import demo_runtime_dir, make_private_dir, runtime_dir
from meterpipe.common.process import EXIT_UNAVAILABLE, base_parser, load_config_or_exit
from meterpipe.deploy.programs import programs_conf

LOCK_NAME = "meterpipe.lock"


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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def supervisord_command() -> list[str]:
    return [sys.executable, "-m", "supervisor.supervisord", "-c", str(supervisord_conf())]


def supervisorctl(rundir: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(supervisord_conf()), *args]
    return subprocess.run(command, env=supervisor_env(None, rundir), capture_output=capture, text=True, check=False)


# --- one instance per runtime directory ---------------------------------------------


def take_lock(rundir: Path) -> int | None:
    """The descriptor of ``rundir``'s instance lock, taken; None when another process holds it.

    The descriptor is inheritable so that it survives ``exec`` into supervisord.
    Opening the lock file never changes it, so a refused second instance leaves
    every file of the first one as it was.
    """
    make_private_dir(rundir)
    fd = os.open(rundir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    os.set_inheritable(fd, True)
    return fd


def running_pid(rundir: Path) -> int | None:
    """The pid of the supervisord that holds ``rundir``'s lock, or None when none does."""
    path = rundir / LOCK_NAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        pass  # held: read the pid below
    else:
        return None  # nobody holds it
    finally:
        os.close(fd)
    try:
        return int((rundir / "supervisord.pid").read_text().strip())
    except (OSError, ValueError):
        return 0  # held, but supervisord has not written its pid yet


def already_running(pid: int, rundir: Path) -> str:
    shown = str(pid) if pid else "starting"
    return (f"meterpipe is already running (supervisord pid {shown}, runtime directory {rundir}): "
            "use 'meterpipe status' or 'meterpipe stop'")


def run_main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("meterpipe run", "Run every meterpipe process under supervisord, in the foreground.",
                         verbose=False)
    args = parser.parse_args(argv)
    config = load_config_or_exit(args.config)
    rundir = runtime_dir()
    if take_lock(rundir) is None:
        print(already_running(running_pid(rundir) or 0, rundir), file=sys.stderr)
        return EXIT_UNAVAILABLE
    write_programs(rundir, programs_conf(config))
    env = supervisor_env(config, rundir)
    command = supervisord_command()
    sys.stdout.flush()
    os.execve(command[0], command, env)


def _not_running(rundir: Path) -> str:
    line = f"meterpipe is not running (no supervisord holds {rundir / LOCK_NAME}); start it with 'meterpipe run'"
    demo = demo_runtime_dir()
    pid = running_pid(demo)
    if pid is not None:
        line += f"\na meterpipe demo is running (supervisord pid {pid or 'starting'}, runtime directory {demo})"
    return line


def status_main(argv: Sequence[str] | None = None) -> int:
    """Print every process's state; exit 0 when all enabled ones run, 3 otherwise."""
    argparse.ArgumentParser(prog="meterpipe status", description="Show the state of every process of "
                            "'meterpipe run' (exit 0 when every enabled one runs).").parse_args(argv)
    rundir = runtime_dir(create=False)
    if running_pid(rundir) is None:
        print(_not_running(rundir))
        return EXIT_UNAVAILABLE
    result = supervisorctl(rundir, "status", capture=True)
    print(result.stdout, end="")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    # Publishers switched off in the config are never started: that is their normal state.
    healthy = all(" RUNNING " in line or "Not started" in line for line in lines)
    return 0 if lines and healthy else EXIT_UNAVAILABLE


def stop_main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(prog="meterpipe stop", description="Stop a running 'meterpipe run'.").parse_args(argv)
    rundir = runtime_dir(create=False)
    if running_pid(rundir) is None:
        print(_not_running(rundir))
        return EXIT_UNAVAILABLE
    return supervisorctl(rundir, "shutdown").returncode

