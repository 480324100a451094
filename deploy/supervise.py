"""``meterpipe run | status | stop``: the pipeline under supervisord.

``run`` validates the config (exit 2 with one line on error), writes
``programs.conf`` (one ``[program:reader-<meter>]`` per configured meter and the
``[group:readers]`` holding them) into the runtime directory, and replaces
itself with supervisord running ``deploy/supervisord.conf`` in the foreground.
``status`` and ``stop`` talk to that supervisord over its private control
socket. The demo (deploy/demo.py) builds on the same pieces.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from meterpipe.common.config import Config
from meterpipe.common.endpoints import make_private_dir, runtime_dir
from meterpipe.common.process import add_config_argument, load_config_or_exit

PROGRAM_OPTIONS = """\
autorestart=unexpected
exitcodes=0,2
stopsignal=TERM
stopwaitsecs=5
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
redirect_stderr=true
"""


def supervisord_conf() -> Path:
    """deploy/supervisord.conf as installed with the package."""
    return Path(str(importlib.resources.files("meterpipe.deploy").joinpath("supervisord.conf")))


def program(name: str, command: str, *, priority: int, startsecs: int = 2) -> str:
    return (
        f"[program:{name}]\ncommand={command}\npriority={priority}\n"
        f"startsecs={startsecs}\nstartretries=1000\n{PROGRAM_OPTIONS}\n"
    )


def reader_programs(config: Config) -> str:
    """One program per meter, grouped: the part of the supervisord config that follows meterpipe.toml."""
    parts = []
    for meter in config.meters:
        command = (
            "%(ENV_METERPIPE_PYTHON)s -m meterpipe.reader.main "
            f"--meter {meter.name} --config %(ENV_METERPIPE_CONFIG)s"
        )
        parts.append(program(f"reader-{meter.name}", command, priority=30))
    names = ",".join(f"reader-{m.name}" for m in config.meters)
    parts.append(f"[group:readers]\nprograms={names}\n")
    return "\n".join(parts)


def supervisor_env(
    config: Config | None, rundir: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment deploy/supervisord.conf expands (also needed by supervisorctl)."""
    env = dict(os.environ if base is None else base)
    env["METERPIPE_RUNTIME_DIR"] = str(rundir)
    env["METERPIPE_PYTHON"] = sys.executable
    env["PYTHONUNBUFFERED"] = "1"
    if config is not None and config.source is not None:
        env["METERPIPE_CONFIG"] = str(Path(config.source).resolve())
    env.setdefault("METERPIPE_CONFIG", "meterpipe.toml")
    for name in ("csv", "mqtt", "journal"):
        enabled = config is not None and getattr(config.publishers, name).enabled
        env[f"METERPIPE_{name.upper()}_ENABLED"] = "true" if enabled else "false"
    return env


def write_programs(rundir: Path, sections: Iterable[str]) -> Path:
    make_private_dir(rundir)
    path = rundir / "programs.conf"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(sections))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def supervisord_command() -> list[str]:
    return [sys.executable, "-m", "supervisor.supervisord", "-c", str(supervisord_conf())]


def supervisorctl(rundir: Path, *args: str) -> int:
    env = supervisor_env(None, rundir)
    command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(supervisord_conf()), *args]
    return subprocess.run(command, env=env, check=False).returncode


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_config_argument(parser)
    return parser


def run_main(argv: Sequence[str] | None = None) -> int:
    args = _parser("meterpipe run", "Run every meterpipe process under supervisord, in the foreground.").parse_args(argv)
    config = load_config_or_exit(args.config)
    rundir = runtime_dir()
    write_programs(rundir, [reader_programs(config)])
    env = supervisor_env(config, rundir)
    command = supervisord_command()
    sys.stdout.flush()
    os.execve(command[0], command, env)


def status_main(argv: Sequence[str] | None = None) -> int:
    """Print every process's state; exit 0 when all enabled ones run, 3 otherwise."""
    _parser("meterpipe status", "Show the state of every meterpipe process.").parse_args(argv)
    rundir = runtime_dir(create=False)
    if not (rundir / "supervisor.sock").exists():
        print(f"meterpipe is not running (no control socket in {rundir}); start it with `meterpipe run`")
        return 3
    command = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(supervisord_conf()), "status"]
    result = subprocess.run(command, env=supervisor_env(None, rundir), capture_output=True, text=True, check=False)
    print(result.stdout, end="")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    # Publishers switched off in the config are never started: that is their normal state.
    healthy = all(" RUNNING " in line or "Not started" in line for line in lines)
    return 0 if lines and healthy else 3


def stop_main(argv: Sequence[str] | None = None) -> int:
    _parser("meterpipe stop", "Stop a running `meterpipe run`.").parse_args(argv)
    return supervisorctl(runtime_dir(create=False), "shutdown")
